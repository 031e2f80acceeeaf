"""Tiles cut exactly as sahi 0.12 cuts them, and settings that describe no tiling refused by name."""

from __future__ import annotations

import numpy as np
import pytest
from sahi.slicing import get_slice_bboxes

from hoban_pipelines.evaluation.engine import EvaluationError, InferenceSettings
from hoban_pipelines.evaluation.slicing import Slicing, SlicingError

# frame sizes around the interesting cases: site frames, odd sizes, exact multiples of a step,
# and frames smaller than a tile on one side or both
FRAMES = [(1920, 1080), (1280, 720), (640, 640), (641, 639), (1000, 300), (300, 1000), (200, 150), (1, 1),
          (512, 512), (1023, 767)]
SIZES = [128, 256, 320, 512, 640]
RATIOS = [0.0, 0.1, 0.2, 0.25, 0.3, 0.5, 0.75, 0.9]


@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize("size", SIZES)
def test_tiles_equal_sahis_slice_bboxes(size, ratio):
    """Tile for tile and in the same order, so tile ids mean the same as in the team's sahi runs."""
    slicing = Slicing(size, ratio)
    for width, height in FRAMES:
        expected = np.array(get_slice_bboxes(height, width, size, size, False, ratio, ratio)).reshape(-1, 4)
        np.testing.assert_array_equal(slicing.tiles(width, height), expected, err_msg=f"{width}x{height}")


@pytest.mark.parametrize("width, height", [(200, 150), (639, 100), (1, 1)])
def test_a_frame_smaller_than_a_tile_is_one_tile_the_whole_frame(width, height):
    np.testing.assert_array_equal(Slicing(640, 0.2).tiles(width, height), [[0, 0, width, height]])


def test_site_frame_at_640_is_the_teams_eight_tiles():
    tiles = Slicing(640, 0.2).tiles(1920, 1080)
    assert len(tiles) == 8
    assert sorted(set(tiles[:, 0].tolist())) == [0, 512, 1024, 1280]
    assert sorted(set(tiles[:, 1].tolist())) == [0, 440]
    assert (tiles[:, 2] - tiles[:, 0] == 640).all() and (tiles[:, 3] - tiles[:, 1] == 640).all()  # never padded
    assert tiles[:, 2].max() == 1920 and tiles[:, 3].max() == 1080  # the last ones end at the edge


def test_site_frame_at_256_is_sixty_tiles():
    tiles = Slicing(256, 0.2).tiles(1920, 1080)
    assert tiles.shape == (60, 4)
    assert Slicing(256).overlap_pixels == 51  # int(0.2 * 256), as sahi truncates


@pytest.mark.parametrize("overlap", [1.0, 1.5, -0.1])
def test_bad_overlap_is_refused_naming_it(overlap):
    with pytest.raises(SlicingError, match=rf"overlap ratio {overlap!r} must be in \[0, 1\)"):
        Slicing(640, overlap)


@pytest.mark.parametrize("size", [0, -5, 2.5, True, "640"])
def test_bad_size_is_refused_naming_it(size):
    with pytest.raises(SlicingError, match=rf"slice size {size!r} must be a whole number"):
        Slicing(size)


def test_numpy_integer_size_is_accepted():
    """Sizes read from a numpy table are still whole numbers."""
    assert len(Slicing(np.int64(640)).tiles(1920, 1080)) == 8


def test_slicing_error_is_a_value_error():
    """Callers that catch ValueError (the CLI) catch it too."""
    assert issubclass(SlicingError, ValueError)


@pytest.mark.parametrize("field, value", [("imgsz", 0), ("imgsz", -256), ("imgsz", 256.0), ("full_imgsz", -1),
                                          ("conf_floor", 0.0), ("conf_floor", 1.0), ("conf_floor", -0.05)])
def test_bad_inference_settings_raise_evaluation_error(field, value):
    with pytest.raises(EvaluationError, match=rf"{field} {value!r} must"):
        InferenceSettings(**{"slice_size": 256, "imgsz": 256, field: value})


def test_inference_settings_validate_their_slicing():
    with pytest.raises(SlicingError, match="overlap ratio 1.0"):
        InferenceSettings(slice_size=256, imgsz=256, overlap=1.0)
    settings = InferenceSettings(slice_size=256, imgsz=320, full_imgsz=0)  # 0: no full-image pass, allowed
    assert settings.slicing == Slicing(256, 0.2)
    assert settings.as_dict()["imgsz"] == 320
