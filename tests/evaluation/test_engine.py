"""The sliced inference engine on real demo frames with a real yolov8n that fires everywhere
(``bench.models.firing_checkpoint``): detections in frame pixels, batching that changes nothing,
frames that are not what a pass expects reported and survived, and the ONNX backend and export.

Passes are few and shared (module fixtures): the CPU is the cost of this file."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from hoban_pipelines.bench.models import firing_checkpoint
from hoban_pipelines.bench.sahi_reference import match_rate
from hoban_pipelines.core.lake import file_sha256
from hoban_pipelines.evaluation.engine import (
    DETECTION_COLUMNS, FRAME_COLUMNS, ONNX_SOURCE_KEY, EvaluationError, InferenceSettings, load_onnx_detector,
    load_torch_detector, run_pass,
)
from hoban_pipelines.evaluation.export import EXPORT_FILE, ONNX_FILE, SCORE_TOLERANCE, export_onnx
from hoban_pipelines.evaluation.postprocess import Postprocess, postprocess_frames
from hoban_pipelines.evaluation.slicing import Slicing

CLASSES = ["person_with_helmet", "person_without_helmet"]
TILE = 256
# The firing model crowds its tiles: at the assets' floor (0.05) most reach ultralytics' 300-box cap, and which
# box is the 300th is float noise that differs between batch sizes. Uncapped, a pass is exactly reproducible.
SETTINGS = InferenceSettings(slice_size=TILE, imgsz=TILE, conf_floor=0.1, max_det=1000)
BOX = ["x1", "y1", "x2", "y2"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return firing_checkpoint(tmp_path_factory.mktemp("engine") / "firing.pt", CLASSES, imgsz=TILE)


@pytest.fixture(scope="module")
def detector(checkpoint):
    return load_torch_detector(checkpoint, threads=1)


@pytest.fixture(scope="module")
def site_frames(small_site) -> list[Path]:
    frames = sorted((small_site / "snapshots" / "cam1").glob("*.jpg"))[:2]
    assert len(frames) == 2 and cv2.imread(str(frames[0])).shape == (1080, 1920, 3)
    return frames


@pytest.fixture(scope="module")
def batched(detector, site_frames):
    """Two frames, 16 tiles a batch: the fourth batch holds tiles of both frames."""
    return run_pass(detector, [(f.name, f) for f in site_frames], SETTINGS, batch=16)


def assert_same_detections(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """The same rows up to float noise, paired one to one per (image, tile, cls): scores within 1e-4; boxes
    within 1e-4 px plus one float32 step at 2048 px (the frame-pixel coordinates are float32)."""
    assert len(got) == len(want)
    tolerance = np.array([1e-4] + [1e-4 + float(np.spacing(np.float32(2048)))] * 4)
    columns = ["score", *BOX]
    others = {key: group for key, group in want.groupby(["image", "tile", "cls"])}
    for key, mine in got.groupby(["image", "tile", "cls"]):
        theirs = others.pop(key, None)
        assert theirs is not None, f"{key}: only on one side"
        assert len(mine) == len(theirs), key
        diff = np.abs(mine[columns].to_numpy(float)[:, None, :] - theirs[columns].to_numpy(float)[None, :, :])
        close = (diff <= tolerance).all(axis=2)
        nearest = np.where(close.any(axis=1), diff.max(axis=2).argmin(axis=1), -1)
        assert (nearest >= 0).all(), f"{key}: {(nearest < 0).sum()} detections without a counterpart"
        assert len(set(nearest.tolist())) == len(nearest), f"{key}: not one to one"
    assert not others, f"groups only on one side: {list(others)[:3]}"


def test_sliced_pass_on_site_frames_is_in_frame_pixels_tile_by_tile(batched, site_frames):
    frames, detections = batched.frames, batched.detections
    assert list(frames.columns) == FRAME_COLUMNS and list(detections.columns) == DETECTION_COLUMNS
    assert frames["image"].tolist() == [f.name for f in site_frames]
    assert frames[["width", "height", "channels", "tiles"]].values.tolist() == [[1920, 1080, 3, 60]] * 2
    assert (frames["status"] == "ok").all() and batched.warnings == []
    assert (detections["pass"] == "sliced").all()
    assert detections.groupby("image").size().min() > 1000  # the model fires on every frame
    assert detections["score"].min() >= SETTINGS.conf_floor
    assert set(detections["cls"].unique()) <= {0, 1}
    assert detections.groupby(["image", "tile"]).size().max() > 300  # the cap would have bitten
    assert detections["tile"].between(0, 59).all() and detections["tile"].nunique() > 50
    # every box lies within its own tile, so tiles were shifted by their own origin
    tiles = Slicing(TILE).tiles(1920, 1080)[detections["tile"].to_numpy()]
    boxes = detections[BOX].to_numpy(np.float64)
    assert (boxes[:, :2] >= tiles[:, :2]).all() and (boxes[:, 2:] <= tiles[:, 2:]).all()
    assert (boxes[:, 0] < boxes[:, 2]).all() and (boxes[:, 1] < boxes[:, 3]).all()
    assert boxes[:, 2].max() > 1900 and boxes[:, 3].max() > 1060  # the far edges are covered


def test_batching_across_frames_changes_nothing(detector, site_frames, batched):
    one_by_one = run_pass(detector, [(f.name, f) for f in site_frames], SETTINGS, batch=1)
    pd.testing.assert_frame_equal(one_by_one.frames, batched.frames)

    # a box scoring within float noise of the floor is kept by one batch size and not the other (seen
    # once in about ten runs on 2 CPU threads): only boxes clearly above it must agree
    def clear(detections: pd.DataFrame) -> pd.DataFrame:
        return detections[detections["score"] >= SETTINGS.conf_floor + 1e-3]

    assert_same_detections(clear(one_by_one.detections), clear(batched.detections))


def test_the_detection_comparison_can_tell_passes_apart(batched):
    """The check above is not vacuous: one moved box or one lost box is caught."""
    moved = batched.detections.copy()
    moved.loc[moved.index[5], "x1"] += 0.01
    with pytest.raises(AssertionError):
        assert_same_detections(moved, batched.detections)
    with pytest.raises(AssertionError):
        assert_same_detections(batched.detections.iloc[1:], batched.detections)


@pytest.fixture(scope="module")
def messy(detector, site_frames, tmp_path_factory):
    """One pass over a folder of everything a site folder can hold besides good frames."""
    folder = tmp_path_factory.mktemp("messy")
    frame = cv2.imread(str(site_frames[0]))
    crop = frame[150:300, 200:400]  # 200 x 150, where the firing model fires
    cv2.imwrite(str(folder / "resized.jpg"), cv2.resize(frame, (1280, 720)))
    cv2.imwrite(str(folder / "small.jpg"), crop)
    gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(folder / "gray.jpg"), gray)
    cv2.imwrite(str(folder / "gray.png"), gray)
    cv2.imwrite(str(folder / "gray_as_bgr.png"), cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    rgba = cv2.cvtColor(crop, cv2.COLOR_BGR2BGRA)
    rgba[..., 3] = 128  # a real alpha channel, which the conversion drops
    cv2.imwrite(str(folder / "rgba.png"), rgba)
    cv2.imwrite(str(folder / "crop.png"), crop)
    (folder / "text.jpg").write_bytes(b"this is not a JPEG\n" * 10)
    names = ["text.jpg", "site.jpg", "resized.jpg", "missing.jpg", "small.jpg", "gray.jpg", "gray.png",
             "gray_as_bgr.png", "rgba.png", "crop.png"]
    paths = {"site.jpg": site_frames[0]}
    images = [(name, paths.get(name, folder / name)) for name in names]
    result = run_pass(detector, images, SETTINGS, batch=16)
    return result, {row.image: row for row in result.frames.itertuples()}


def test_unreadable_frames_are_reported_and_the_pass_goes_on(messy, batched):
    result, frames = messy
    assert frames["text.jpg"].status == "unreadable: not a readable image (empty, truncated or not an image)"
    assert frames["missing.jpg"].status == "unreadable: no such file"
    for name in ("text.jpg", "missing.jpg"):
        assert (frames[name].width, frames[name].height, frames[name].tiles) == (0, 0, 0)
    assert not result.detections["image"].isin(["text.jpg", "missing.jpg"]).any()
    warning = next(w for w in result.warnings if "could not be read" in w)
    assert warning.startswith("2 of 10 frames could not be read and were skipped: ")
    assert "text.jpg (unreadable: not a readable image" in warning
    assert "missing.jpg (unreadable: no such file)" in warning
    # the frames after them are inferred as if they were not there (and tiles of two sizes of frame shared batches)
    assert len(result.frames) == 10 and (result.frames["width"] > 0).sum() == 8
    site = result.detections[result.detections["image"] == "site.jpg"]
    first = batched.detections[batched.detections["image"] == batched.frames["image"].iloc[0]]
    assert_same_detections(site, first.assign(image="site.jpg"))


def test_frames_of_several_sizes_are_each_cut_by_their_own_size(messy):
    result, frames = messy
    assert (frames["site.jpg"].width, frames["site.jpg"].height, frames["site.jpg"].tiles) == (1920, 1080, 60)
    assert (frames["resized.jpg"].width, frames["resized.jpg"].height, frames["resized.jpg"].tiles) == (1280, 720, 24)
    assert len(Slicing(TILE).tiles(1280, 720)) == 24
    resized = result.detections[result.detections["image"] == "resized.jpg"]
    assert len(resized) and resized["tile"].between(0, 23).all()
    assert resized["x2"].max() <= 1280 and resized["y2"].max() <= 720
    warning = next(w for w in result.warnings if "several sizes" in w)
    assert warning.startswith("frames come in several sizes: ")
    assert "1920x1080 (1)" in warning and "1280x720 (1)" in warning and "200x150 (6)" in warning


def test_a_frame_smaller_than_a_tile_is_one_tile_the_whole_frame(messy):
    result, frames = messy
    assert (frames["small.jpg"].width, frames["small.jpg"].height, frames["small.jpg"].tiles) == (200, 150, 1)
    small = result.detections[result.detections["image"] == "small.jpg"]
    assert len(small) and (small["tile"] == 0).all()
    assert small["x2"].max() <= 200 and small["y2"].max() <= 150 and small[["x1", "y1"]].min().min() >= 0
    warning = next(w for w in result.warnings if "smaller than" in w)
    assert warning.startswith("6 frames are smaller than a 256-px tile on a side")
    assert "e.g. small.jpg (200x150)" in warning


def test_grayscale_and_four_channel_frames_are_converted_and_said_so(messy):
    result, frames = messy
    for name in ("gray.jpg", "gray.png"):
        assert (frames[name].status, frames[name].channels, frames[name].tiles) == ("converted from grayscale", 1, 1)
    assert (frames["rgba.png"].status, frames["rgba.png"].channels) == ("converted from 4 channels", 4)
    assert (frames["gray_as_bgr.png"].status, frames["gray_as_bgr.png"].channels) == ("ok", 3)
    assert "2 frames converted from grayscale to 3-channel colour" in result.warnings
    assert "1 frames converted from 4 channels to 3-channel colour" in result.warnings
    # converted, they are the 3-channel images they stand for: the same detections
    detections = result.detections
    for converted, plain in (("gray.png", "gray_as_bgr.png"), ("rgba.png", "crop.png")):
        got = detections[detections["image"] == converted]
        assert len(got)
        assert_same_detections(got.assign(image=plain), detections[detections["image"] == plain])


def test_full_image_pass_is_one_tile_a_frame(detector, site_frames):
    settings = InferenceSettings(slice_size=TILE, imgsz=TILE, full_imgsz=TILE)
    full = run_pass(detector, [(site_frames[0].name, site_frames[0])], settings, full_image=True)
    assert full.frames["tiles"].tolist() == [1] and full.warnings == []
    assert len(full.detections) and (full.detections["pass"] == "full").all() and (full.detections["tile"] == -1).all()
    assert full.detections["x2"].max() > 1000  # boxes scaled back to the frame, not left at 256 px
    with pytest.raises(EvaluationError, match="full-image pass needs full_imgsz > 0"):
        run_pass(detector, [], SETTINGS, full_image=True)


def test_an_unloadable_checkpoint_names_its_file(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(EvaluationError, match=re.escape(f"checkpoint {bad} cannot be loaded")):
        load_torch_detector(bad, threads=1)


# ONNX


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export")
    export_onnx(checkpoint, out, imgsz=TILE)
    return out


def test_export_records_its_checkpoint_and_agrees_with_it(exported, checkpoint):
    assert sorted(p.name for p in exported.iterdir()) == [EXPORT_FILE, ONNX_FILE]  # the scratch copy is gone
    record = json.loads((exported / EXPORT_FILE).read_text())
    assert record["source_sha256"] == file_sha256(checkpoint)
    assert record["onnx_sha256"] == file_sha256(exported / ONNX_FILE)
    assert record["imgsz"] == TILE and record["dynamic"] is True
    assert 0 <= record["max_score_diff"] <= SCORE_TOLERANCE and 0 <= record["max_box_diff_px"] <= 0.05
    import onnx

    recorded = {prop.key: prop.value for prop in onnx.load(str(exported / ONNX_FILE)).metadata_props}
    assert recorded[ONNX_SOURCE_KEY] == record["source_sha256"]


def test_onnx_detections_match_torch(exported, checkpoint, batched, site_frames):
    onnx = load_onnx_detector(exported / ONNX_FILE, source_sha256=file_sha256(checkpoint), threads=1)
    assert (onnx.backend, onnx.names, onnx.stride, onnx.trained_imgsz) == ("onnx", CLASSES, 32, TILE)
    frame = site_frames[0]
    ours = run_pass(onnx, [(frame.name, frame)], SETTINGS, batch=16)
    assert ours.frames["tiles"].tolist() == [60]
    torch_one = batched.detections[batched.detections["image"] == frame.name]
    merge = Postprocess("NMS", "IOS", 0.4)
    onnx_final, torch_final = postprocess_frames(ours.detections, merge), postprocess_frames(torch_one, merge)
    assert len(torch_final) > 100
    assert match_rate(onnx_final, torch_final) >= 0.98


def test_onnx_from_another_checkpoint_is_refused(exported, checkpoint, tmp_path):
    other = firing_checkpoint(tmp_path / "other.pt", CLASSES, imgsz=TILE, seed=1)
    assert file_sha256(other) != file_sha256(checkpoint)
    with pytest.raises(EvaluationError, match="does not match its checkpoint") as error:
        load_onnx_detector(exported / ONNX_FILE, source_sha256=file_sha256(other), threads=1)
    assert file_sha256(checkpoint) in str(error.value) and file_sha256(other) in str(error.value)


def test_onnx_without_a_recorded_source_is_refused_when_one_is_asked_for(exported, checkpoint, tmp_path):
    import onnx

    model = onnx.load(str(exported / ONNX_FILE))
    kept = [entry for entry in model.metadata_props if entry.key != ONNX_SOURCE_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    plain = tmp_path / "plain.onnx"
    onnx.save(model, str(plain))
    with pytest.raises(EvaluationError, match="exported from no recorded checkpoint"):
        load_onnx_detector(plain, source_sha256=file_sha256(checkpoint), threads=1)
    assert load_onnx_detector(plain, threads=1).names == CLASSES  # without a checkpoint to match, it loads


@pytest.mark.parametrize("content", ["truncated", "text"])
def test_a_broken_onnx_file_is_not_a_loadable_model(exported, tmp_path, content):
    broken = tmp_path / "model.onnx"
    if content == "truncated":
        broken.write_bytes((exported / ONNX_FILE).read_bytes()[:5000])
    else:
        broken.write_text("not a model")
    with pytest.raises(EvaluationError, match=re.escape(f"{broken} is not a loadable ONNX model")):
        load_onnx_detector(broken, threads=1)


def test_yolo_autoinstall_is_off_once_hoban_pipelines_is_imported(tmp_path):
    """ultralytics reads YOLO_AUTOINSTALL once, on import: our package must set it first, in any process."""
    env = {key: value for key, value in os.environ.items() if key != "YOLO_AUTOINSTALL"}

    def autoinstall(code: str) -> str:
        done = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=120, check=True)
        return done.stdout.strip().splitlines()[-1]

    assert autoinstall("import hoban_pipelines, ultralytics.utils.checks as c; print(c.AUTOINSTALL)") == "False"
    # what the line above guards against: ultralytics on its own would install
    assert autoinstall("import ultralytics.utils.checks as c; print(c.AUTOINSTALL)") == "True"


def test_the_pass_slices_by_its_settings(detector, tmp_path, site_frames):
    """640-px tiles without overlap cut a 1280 x 640 frame in two, inferred at 256: the settings reach the pass."""
    frame = cv2.imread(str(site_frames[0]))[:640, :1280]
    cv2.imwrite(str(tmp_path / "part.png"), frame)
    settings = InferenceSettings(slice_size=640, imgsz=TILE, overlap=0.0)
    result = run_pass(detector, [("part.png", tmp_path / "part.png")], settings)
    assert result.frames["tiles"].tolist() == [2]
    assert set(result.detections["tile"]) == {0, 1}
    right = result.detections[result.detections["tile"] == 1]
    assert right["x1"].min() >= 640 and right["x2"].max() > 1200
