"""The full-image pass that labels a hybrid recipe source: each image at its own scale (never
enlarged, at most the checkpoint's whole-frame size), images of one size sharing a pass, and a
broken file reported without stopping the rest. A real firing yolov8n on demo frames."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pandas as pd
import pytest

from hoban_pipelines.bench.models import firing_checkpoint
from hoban_pipelines.evaluation.builds import full_image_labels
from hoban_pipelines.evaluation.engine import InferenceSettings, load_torch_detector, run_pass
from hoban_pipelines.training.job import BEST_WEIGHTS, SUMMARY_FILE

CLASSES = ["person_with_helmet", "person_without_helmet"]
WHOLE = 1024  # the checkpoint's whole-frame size: a 1920 frame is seen at it, smaller images at their own


@pytest.fixture(scope="module")
def model_version(tmp_path_factory) -> Path:
    version = tmp_path_factory.mktemp("hybrid_model")
    (version / BEST_WEIGHTS).parent.mkdir(parents=True)
    firing_checkpoint(version / BEST_WEIGHTS, CLASSES, imgsz=256)
    (version / SUMMARY_FILE).write_text(json.dumps({"imgsz": 256, "recipe": {"tile": 256}, "eval_imgsz": WHOLE}))
    return version


@pytest.fixture(scope="module")
def images(small_site, tmp_path_factory) -> list[tuple[str, Path]]:
    folder = tmp_path_factory.mktemp("hybrid_images")
    frame_path = sorted((small_site / "snapshots" / "cam1").glob("*.jpg"))[0]
    frame = cv2.imread(str(frame_path))
    cv2.imwrite(str(folder / "small.jpg"), cv2.resize(frame, (640, 480)))
    cv2.imwrite(str(folder / "odd.jpg"), frame[100:300, 200:500])  # 300 x 200: rounded up to 320
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return [("frame.jpg", frame_path), ("small.jpg", folder / "small.jpg"), ("odd.jpg", folder / "odd.jpg"),
            ("broken.jpg", folder / "broken.jpg")]


@pytest.fixture(scope="module")
def labelled(model_version, images):
    return full_image_labels(model_version, images, conf_floor=0.1, threads=1)


def test_each_image_is_seen_at_its_own_size_up_to_the_whole_frame_size(labelled):
    result, classes, about = labelled
    assert classes == CLASSES
    assert about["images_by_imgsz"] == {"320": 1, "640": 1, str(WHOLE): 2}  # the broken file: the largest size
    assert about["max_imgsz"] == WHOLE and about["images"] == 3 and about["ms_per_image"] > 0
    frames = result.frames.set_index("image")
    assert sorted(frames.index) == sorted(["frame.jpg", "small.jpg", "odd.jpg", "broken.jpg"])
    assert frames.loc["broken.jpg", "width"] == 0 and frames.loc["broken.jpg", "status"].startswith("unreadable")
    assert any("broken.jpg" in warning for warning in result.warnings)
    assert frames.loc["frame.jpg", ["width", "height"]].tolist() == [1920, 1080]


def test_a_size_group_gives_the_same_boxes_as_a_pass_of_its_own(model_version, images, labelled):
    result, _, _ = labelled
    alone = run_pass(load_torch_detector(model_version / BEST_WEIGHTS, threads=1), [images[1]],
                     InferenceSettings(slice_size=256, imgsz=256, full_imgsz=640, conf_floor=0.1), full_image=True)
    assert len(alone.detections) > 0  # the firing model finds something, so the comparison means something
    mine = result.detections[result.detections["image"] == "small.jpg"].reset_index(drop=True)
    pd.testing.assert_frame_equal(mine, alone.detections.reset_index(drop=True), check_exact=False, atol=1e-4)


def test_boxes_lie_within_their_own_image(labelled):
    result, _, _ = labelled
    sizes = result.frames.set_index("image")[["width", "height"]]
    joined = result.detections.join(sizes, on="image")
    assert len(joined) and (joined["x2"] <= joined["width"]).all() and (joined["y2"] <= joined["height"]).all()
    assert (joined[["x1", "y1"]] >= 0).all().all()
