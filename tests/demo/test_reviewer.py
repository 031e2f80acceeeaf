"""The demo's simulated reviewer on a package written here from the small site's exact truth: correct, wrong-class,
displaced, spurious and missing boxes, a frozen capture and a go2k image; its export read back, and compare_review
reporting what it did."""

from __future__ import annotations

import json
import zipfile
from datetime import datetime
from pathlib import PurePosixPath

import numpy as np
import pandas as pd
import pytest

from hoban_pipelines.cvat.reader import ANNOTATIONS_MEMBER, read_export
from hoban_pipelines.cvat.writer import BoxShape, ImageEntry, LabelSpec, write_images_export
from hoban_pipelines.demo.captures import capture_file
from hoban_pipelines.demo.crew import SITE_EPOCH
from hoban_pipelines.demo.render import CLASSES, SiteWorld
from hoban_pipelines.demo.reviewer import CHANGES, review_package
from hoban_pipelines.demo.scene import FRAME_HEIGHT, FRAME_WIDTH
from hoban_pipelines.evaluation.metrics import box_iou
from hoban_pipelines.review.changes import compare_review
from hoban_pipelines.review.packages import SCORE_ATTRIBUTE

SEED = 7
GO2K = "go2k/cam1/cam1_20260211_093000.jpg"
GO2K_BOX = BoxShape(CLASSES[1], 100.0, 200.0, 140.0, 300.0)  # a person's box: no score


def _truth(world: SiteWorld, camera: str, t: int) -> list[tuple[str, tuple[float, ...]]]:
    return [(CLASSES[worker.cls], tuple(map(float, worker.box))) for worker in world.layout(camera, t)]


def _iou(a, b) -> float:
    return float(box_iou(np.asarray(a), np.asarray(b))[0, 0])


def _far_from_all(box, truth) -> bool:
    return all(_iou(box, xyxy) == 0.0 for _, xyxy in truth)


def _model_box(label: str, xyxy, score: float) -> BoxShape:
    return BoxShape(label, *xyxy, source="auto", attributes={"score": f"{score:.3f}"})


@pytest.fixture(scope="module")
def world() -> SiteWorld:
    return SiteWorld(SEED)


@pytest.fixture(scope="module")
def captures(small_site, world) -> list[dict]:
    """The site's capture frames, each with its package name, site time and the truth its pixels show."""
    frames = json.loads((small_site / "ground_truth" / "captures.json").read_text())["frames"]
    taken = {}
    for frame in frames:
        t = int((datetime.fromisoformat(frame["timestamp"]) - SITE_EPOCH).total_seconds())
        assert capture_file(frame["camera"], t) == frame["file"]  # the site clock the generator named files by
        taken[frame["file"]] = t
    return [{**frame, "name": f"captures/{frame['camera']}/{PurePosixPath(frame['file']).name}",
             "t": taken[frame["file"]],
             "truth": _truth(world, frame["camera"], taken[frame["frozen_of"] or frame["file"]])}
            for frame in frames]


def _busy_capture(captures: list[dict]) -> tuple[dict, int]:
    """A live capture with at least four workers, and one of them (not the first two) whose box shifted by half its
    width stays in the frame, overlaps its own at 0.1 <= IoU < 0.5 and touches no other worker: it can only be
    moved, not taken for a neighbour."""
    for frame in captures:
        truth = frame["truth"]
        if frame["frozen_of"] or len(truth) < 4:
            continue
        for index in range(2, len(truth)):
            shifted = _shifted(truth[index][1])
            if (shifted[2] <= FRAME_WIDTH and 0.1 <= _iou(shifted, truth[index][1]) < 0.5
                    and _far_from_all(shifted, truth[:index] + truth[index + 1:])):
                return frame, index
    raise AssertionError("the small site has no capture with four workers")


def _shifted(xyxy):
    half = (xyxy[2] - xyxy[0]) // 2
    return (xyxy[0] + half, xyxy[1], xyxy[2] + half, xyxy[3])


def _free_spot(truth) -> tuple[float, ...]:
    for x in range(0, FRAME_WIDTH - 60, 60):
        for y in range(0, FRAME_HEIGHT - 120, 120):
            spot = (float(x), float(y), x + 40.0, y + 100.0)
            if _far_from_all(spot, truth):
                return spot
    raise AssertionError("no free spot")


@pytest.fixture(scope="module")
def package(captures, world, tmp_path_factory):
    """A task XML (as review packages write it) and what the reviewer must do to each of its images."""
    busy, displaced = _busy_capture(captures)
    truth = busy["truth"]
    others = [w for i, w in enumerate(truth) if i not in (0, 1, displaced)]
    busy_boxes = [_model_box(truth[0][0], truth[0][1], 0.9),  # kept
                  _model_box(CLASSES[1 - CLASSES.index(truth[1][0])], truth[1][1], 0.8),  # relabelled
                  _model_box(truth[displaced][0], _shifted(truth[displaced][1]), 0.7),  # moved
                  _model_box(CLASSES[0], _free_spot(truth), 0.6),  # deleted
                  *[_model_box(label, xyxy, 0.5) for label, xyxy in others[:-1]]]  # kept; the last one is added
    second = next(f for f in captures if not f["frozen_of"] and len(f["truth"]) >= 2 and f["camera"] != busy["camera"])
    # a frozen capture whose own moment shows another scene: only the frame it repeats tells what it shows
    frozen = next(f for f in captures
                  if f["frozen_of"] and f["truth"] and _truth(world, f["camera"], f["t"]) != f["truth"])
    images = [
        (GO2K, [GO2K_BOX]),
        (busy["name"], busy_boxes),
        (second["name"], [_model_box(label, xyxy, 0.8) for label, xyxy in second["truth"][1:]]),  # first one missing
        (frozen["name"], [_model_box(label, xyxy, 0.8) for label, xyxy in frozen["truth"]]),  # what its pixels show
    ]
    xml = tmp_path_factory.mktemp("package") / "review_part1.xml"
    write_images_export(xml, task_name="review_part1", labels=[LabelSpec(c, [SCORE_ATTRIBUTE]) for c in CLASSES],
                        images=[ImageEntry(frame, name, FRAME_WIDTH, FRAME_HEIGHT, shapes)
                                for frame, (name, shapes) in enumerate(images)])
    zero = dict.fromkeys(CHANGES, 0)
    expected = {
        GO2K: {**zero, "kept": 1},
        busy["name"]: {**zero, "kept": 1 + len(others) - 1, "relabelled": 1, "moved": 1, "deleted": 1, "added": 1},
        second["name"]: {**zero, "kept": len(second["truth"]) - 1, "added": 1},
        frozen["name"]: {**zero, "kept": len(frozen["truth"])},
    }
    truth_of = {frame["name"]: frame["truth"] for frame in (busy, second, frozen)}
    return xml, expected, truth_of


@pytest.fixture(scope="module")
def reviewed(package, small_site, tmp_path_factory):
    xml, _, _ = package
    out = tmp_path_factory.mktemp("review") / "review_part1_export.zip"
    return out, review_package(xml, out, small_site, seed=SEED)


def test_the_summary_says_what_the_reviewer_did_image_by_image(package, reviewed):
    _, expected, _ = package
    _, summary = reviewed
    assert summary["per_image"] == expected
    assert summary["task"] == "review_part1" and summary["images"] == 4
    assert {change: summary[change] for change in CHANGES} == {
        change: sum(counts[change] for counts in expected.values()) for change in CHANGES}


def test_the_export_holds_exactly_the_true_boxes_of_every_capture(package, reviewed):
    _, _, truth_of = package
    out, _ = reviewed
    with zipfile.ZipFile(out) as archive:
        assert archive.namelist() == [ANNOTATIONS_MEMBER]  # CVAT's task export without images
    export = read_export(out)
    assert [image.name for image in export.images] == [GO2K, *truth_of]
    for image in export.images[1:]:
        assert sorted((box.label, box.xyxy) for box in image.boxes) == sorted(truth_of[image.name]), image.name


def test_go2k_keeps_its_hand_labels_and_drawn_boxes_carry_the_default_score(reviewed):
    out, _ = reviewed
    go2k, busy = read_export(out).images[:2]
    assert [(box.label, box.xyxy, box.attributes, box.source) for box in go2k.boxes] == [
        (GO2K_BOX.label, (GO2K_BOX.xtl, GO2K_BOX.ytl, GO2K_BOX.xbr, GO2K_BOX.ybr), {}, "manual")]
    kept_score = {box.attributes["score"] for box in busy.boxes if box.source == "auto"}
    drawn_score = {box.attributes["score"] for box in busy.boxes if box.source == "manual"}
    assert "0.900" in kept_score and kept_score <= {"0.900", "0.500"}  # as the package scored them
    assert drawn_score == {SCORE_ATTRIBUTE.default}


def test_compare_review_reports_what_the_reviewer_did(package, reviewed):
    xml, expected, _ = package
    out, summary = reviewed

    def boxes(path, scored):
        rows = [(image.name, box.label, *box.xyxy, float(box.attributes.get("score", "nan")))
                for image in read_export(path).images for box in image.boxes]
        frame = pd.DataFrame(rows, columns=["image", "label", "x1", "y1", "x2", "y2", "score"])
        return frame if scored else frame.drop(columns="score")

    images = pd.DataFrame({"image": list(expected), "camera": [name.split("/")[1] for name in expected],
                           "source": ["go2k_manual" if name == GO2K else "captures" for name in expected]})
    changes = compare_review(boxes(xml, True), boxes(out, False), images, list(CLASSES))
    assert {change: changes.overall[change] for change in CHANGES} == {change: summary[change] for change in CHANGES}
    per_image = changes.boxes.groupby("image")["change"].value_counts().unstack(fill_value=0)
    assert {name: {change: int(per_image.loc[name].get(change, 0)) for change in CHANGES}
            for name in expected} == expected


def test_the_same_review_gives_the_same_bytes(package, reviewed, small_site, tmp_path):
    xml, _, _ = package
    out, _ = reviewed
    again = tmp_path / "again.zip"
    review_package(xml, again, small_site, seed=SEED)
    assert again.read_bytes() == out.read_bytes()


def test_a_site_of_another_seed_is_refused(package, small_site, tmp_path):
    xml, _, _ = package
    with pytest.raises(ValueError, match="seed 7, not 8"):
        review_package(xml, tmp_path / "export.zip", small_site, seed=8)
    assert not (tmp_path / "export.zip").exists()


def test_an_image_that_is_no_capture_of_the_site_is_refused(small_site, tmp_path):
    xml = tmp_path / "stranger.xml"
    write_images_export(xml, task_name="stranger", labels=[LabelSpec(c, [SCORE_ATTRIBUTE]) for c in CLASSES],
                        images=[ImageEntry(0, "captures/cam1/cam1_20300101_000000.jpg", FRAME_WIDTH, FRAME_HEIGHT)])
    with pytest.raises(ValueError, match="cam1_20300101_000000"):
        review_package(xml, tmp_path / "export.zip", small_site, seed=SEED)
