"""What reviewers changed (domain only, no Dagster): each change kind on hand-made boxes with exact counts and rates,
and build_reviewed_labels on real review packages with a CVAT export whose edits are known."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from hoban_pipelines.cvat.reader import CvatFormatError, read_export
from hoban_pipelines.cvat.writer import BoxShape, ImageEntry, LabelSpec, write_images_export
from hoban_pipelines.review.changes import (
    BOXES,
    CHANGE_COLUMNS,
    CHANGES_FILE,
    IMAGES,
    LABEL_COLUMNS,
    build_reviewed_labels,
    compare_review,
)
from hoban_pipelines.review.packages import SCORE_ATTRIBUTE, PackageFiles, ReviewBox, ReviewImage, build_review_packages

H, N = CLASSES = ["person_with_helmet", "person_without_helmet"]
WIDTH, HEIGHT = 64, 48


def _before(*rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["image", "label", "x1", "y1", "x2", "y2", "score"])


def _after(*rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["image", "label", "x1", "y1", "x2", "y2"])


def _images(*rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["image", "camera", "source"])


def _values(column: pd.Series) -> list:
    """The column's values with a missing one as None."""
    return [None if pd.isna(value) else value for value in column]


def _changes(result) -> list[str]:
    return result.boxes["change"].tolist()


def _totals(row: dict) -> dict:
    return {key: row[key] for key in ("boxes_before", "boxes_after", "kept", "relabelled", "moved", "deleted", "added")}


@pytest.fixture
def every_kind():
    """a.jpg holds one box of each change, b.jpg no box on either side, g.jpg a person's box (no score) kept."""
    before = _before(
        ("a.jpg", H, 0, 0, 10, 10, 0.9),  # kept
        ("a.jpg", H, 20, 0, 30, 10, 0.8),  # relabelled: the reviewer made it N
        ("a.jpg", H, 40, 0, 50, 10, 0.7),  # moved: IoU 1/3 with its reviewed box
        ("a.jpg", H, 60, 0, 70, 10, 0.6),  # deleted: on nothing (background)
        ("a.jpg", H, 0, 0, 10, 9, 0.5),  # deleted: a second box on the kept person (duplicate)
        ("g.jpg", H, 0, 0, 10, 10, None),
    )
    after = _after(
        ("a.jpg", H, 0, 0, 10, 10),
        ("a.jpg", N, 20, 0, 30, 10),
        ("a.jpg", H, 45, 0, 55, 10),
        ("a.jpg", N, 80, 0, 90, 10),  # added
        ("g.jpg", H, 0, 0, 10, 10),
    )
    images = _images(("a.jpg", "cam1", "captures"), ("b.jpg", "cam2", "captures"), ("g.jpg", None, "go2k_manual"))
    return compare_review(before, after, images, CLASSES)


def test_each_change_kind_is_found_with_its_labels_and_iou(every_kind):
    table = every_kind.boxes
    assert list(table.columns) == CHANGE_COLUMNS
    assert _changes(every_kind) == ["kept", "relabelled", "moved", "deleted", "deleted", "kept", "added"]
    assert _values(table["label_after"]) == [H, N, H, None, None, H, N]
    assert _values(table["label_before"]) == [H, H, H, H, H, H, None]
    assert table["iou"].tolist()[:3] == [1.0, 1.0, pytest.approx(1 / 3)]
    assert table["iou"].iloc[3:5].isna().all() and math.isnan(table["iou"].iloc[6])
    assert table["score"].iloc[:5].tolist() == [0.9, 0.8, 0.7, 0.6, 0.5]
    assert table["score"].iloc[5:].isna().all()  # a person's box and an added one have no score
    assert _values(table["camera"]) == ["cam1"] * 5 + [None, "cam1"]
    assert table["source"].tolist() == ["captures"] * 5 + ["go2k_manual", "captures"]


def test_overall_counts_and_rates(every_kind):
    overall = every_kind.overall
    assert overall["images"] == 3  # b.jpg has no box on either side and still counts
    assert _totals(overall) == {"boxes_before": 6, "boxes_after": 5, "kept": 2, "relabelled": 1, "moved": 1,
                                "deleted": 2, "added": 1}
    assert overall["precision"] == pytest.approx(2 / 6)
    assert overall["recall"] == pytest.approx(2 / 5)
    assert overall["f1"] == pytest.approx(4 / 11)


def test_per_class_counts_a_change_under_the_label_before_and_an_addition_under_the_label_after(every_kind):
    helmet, bare = every_kind.per_class
    assert helmet["class"] == H and bare["class"] == N
    assert _totals(helmet) == {"boxes_before": 6, "boxes_after": 3, "kept": 2, "relabelled": 1, "moved": 1,
                               "deleted": 2, "added": 0}
    assert _totals(bare) == {"boxes_before": 0, "boxes_after": 2, "kept": 0, "relabelled": 0, "moved": 0,
                             "deleted": 0, "added": 1}
    assert (helmet["relabelled_to"], bare["relabelled_to"]) == (0, 1)
    assert (helmet["precision"], helmet["recall"]) == (pytest.approx(2 / 6), pytest.approx(2 / 3))
    assert (bare["precision"], bare["recall"], bare["f1"]) == (0.0, 0.0, 0.0)


def test_per_camera_and_per_source_count_every_image(every_kind):
    cameras = {row["camera"]: row for row in every_kind.per_camera}
    assert [row["camera"] for row in every_kind.per_camera] == ["cam1", "cam2", None]
    assert _totals(cameras["cam1"]) == {"boxes_before": 5, "boxes_after": 4, "kept": 1, "relabelled": 1, "moved": 1,
                                        "deleted": 2, "added": 1}
    assert cameras["cam2"]["images"] == 1 and _totals(cameras["cam2"]) == dict.fromkeys(_totals(cameras["cam2"]), 0)
    assert (cameras[None]["images"], cameras[None]["kept"], cameras[None]["precision"]) == (1, 1, 1.0)
    sources = {row["source"]: row for row in every_kind.per_source}
    assert (sources["captures"]["images"], sources["go2k_manual"]["images"]) == (2, 1)
    assert (sources["captures"]["precision"], sources["captures"]["recall"]) == (pytest.approx(1 / 5),
                                                                                 pytest.approx(1 / 4))


def test_before_and_after_are_each_the_sum_of_their_changes(every_kind):
    for row in [every_kind.overall, *every_kind.per_camera, *every_kind.per_source]:
        assert row["boxes_before"] == row["kept"] + row["relabelled"] + row["moved"] + row["deleted"]
        assert row["boxes_after"] == row["kept"] + row["relabelled"] + row["moved"] + row["added"]


def test_a_wrong_class_box_whose_reviewed_box_another_pre_box_kept_was_deleted():
    result = compare_review(_before(("a.jpg", N, 0, 0, 10, 10, 0.9), ("a.jpg", H, 0, 0, 10, 10, 0.5)),
                            _after(("a.jpg", N, 0, 0, 10, 10)), _images(("a.jpg", "cam1", "captures")), CLASSES)
    assert _changes(result) == ["kept", "deleted"]
    assert _totals(result.overall) == {"boxes_before": 2, "boxes_after": 1, "kept": 1, "relabelled": 0, "moved": 0,
                                       "deleted": 1, "added": 0}


def test_two_misplaced_boxes_on_one_person_move_the_higher_scored_one_and_delete_the_other():
    before = _before(("a.jpg", H, 0, 0, 10, 10, 0.5), ("a.jpg", H, 2, 0, 12, 10, 0.9))
    result = compare_review(before, _after(("a.jpg", H, 6, 0, 16, 10)), _images(("a.jpg", "cam1", "captures")),
                            CLASSES)
    assert _changes(result) == ["deleted", "moved"]
    assert result.boxes["iou"].iloc[1] == pytest.approx(6 / 14)


def test_a_box_of_the_wrong_class_is_relabelled_before_it_could_be_moved():
    """Kinds go duplicate, wrong_class, localisation, as the evaluation stage orders them."""
    result = compare_review(_before(("a.jpg", H, 0, 0, 10, 10, 0.9)),
                            _after(("a.jpg", N, 0, 0, 10, 10), ("a.jpg", H, 5, 0, 15, 10)),
                            _images(("a.jpg", "cam1", "captures")), CLASSES)
    assert _changes(result) == ["relabelled", "added"]
    assert result.boxes["label_after"].tolist() == [N, H]


def test_no_boxes_at_all_gives_zero_rates():
    result = compare_review(_before(), _after(), _images(("a.jpg", "cam1", "captures")), CLASSES)
    assert result.boxes.empty and list(result.boxes.columns) == CHANGE_COLUMNS
    assert result.overall == {"images": 1, "boxes_before": 0, "boxes_after": 0, "kept": 0, "relabelled": 0,
                              "moved": 0, "deleted": 0, "added": 0, "precision": 0.0, "recall": 0.0, "f1": 0.0}


@pytest.mark.parametrize("before,after,images,message", [
    (_before(("a.jpg", "helmet", 0, 0, 1, 1, 0.5)), _after(), _images(("a.jpg", "c", "captures")), "'helmet'"),
    (_before(), _after(("z.jpg", H, 0, 0, 1, 1)), _images(("a.jpg", "c", "captures")), "z.jpg"),
    (_before(), _after(), _images(("a.jpg", "c", "captures"), ("a.jpg", "c", "captures")), "a.jpg"),
    (_before(), _after().drop(columns="x1"), _images(("a.jpg", "c", "captures")), "x1"),
])
def test_bad_inputs_are_refused_by_name(before, after, images, message):
    with pytest.raises(ValueError, match=message):
        compare_review(before, after, images, CLASSES)


# ------------------------------------------------------------------ build_reviewed_labels on real packages

A, B, C = (2, 2, 14, 20), (30, 2, 44, 20), (2, 26, 14, 44)
MOVED_A = (8, 2, 20, 20)  # IoU 1/3 with A


def _jpeg(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8))
    return path


def _capture(root: Path, n: int, boxes: tuple[ReviewBox, ...]) -> ReviewImage:
    name = f"cam1_20260211_0705{n:02d}.jpg"
    return ReviewImage(_jpeg(root / "cam1" / name, n), f"captures/cam1/{name}", "captures", WIDTH, HEIGHT, boxes,
                       camera="cam1")


@pytest.fixture
def packages(tmp_path) -> Path:
    """Task review_part1: go2k/cam2_0.jpg (one person's box), c0 and c1 (two model boxes each); review_part2: c2."""
    source, out = tmp_path / "source", tmp_path / "packages"
    out.mkdir()
    go2k = ReviewImage(_jpeg(source / "go2k" / "cam2_0.jpg", 9), "go2k/cam2_0.jpg", "go2k_manual", WIDTH, HEIGHT,
                       (ReviewBox(N, *A, score=None),))
    captures = [_capture(source, 0, (ReviewBox(H, *A, score=0.9), ReviewBox(H, *B, score=0.8))),
                _capture(source, 1, (ReviewBox(N, *A, score=0.7), ReviewBox(H, *B, score=0.6))),
                _capture(source, 2, (ReviewBox(H, *C, score=0.5),))]
    build_review_packages([*captures, go2k], CLASSES, out, max_images=3)
    return out


def _drawn(label: str, xyxy) -> BoxShape:
    return BoxShape(label, *map(float, xyxy), attributes={"score": SCORE_ATTRIBUTE.default})


# what the reviewer did to review_part1, image by image: c0 keeps A and relabels B; c1 moves A, deletes B, adds C
EDITS = {
    "go2k/cam2_0.jpg": lambda boxes: boxes,
    "captures/cam1/cam1_20260211_070500.jpg": lambda boxes: [boxes[0], _drawn(N, B)],
    "captures/cam1/cam1_20260211_070501.jpg": lambda boxes: [_drawn(N, MOVED_A), _drawn(H, C)],
}


def _write_export(path: Path, package_dir: Path, task: str = "review_part1", edits=EDITS, extra=(),
                  labels=CLASSES) -> Path:
    """A CVAT task export zip (annotations.xml at its root) of ``task`` after ``edits``; ``extra`` adds images."""
    pre = read_export(PackageFiles.of(package_dir, task).annotations)
    images = [ImageEntry(frame, image.name, image.width, image.height, edits[image.name](
        [BoxShape(box.label, *box.xyxy, attributes=box.attributes, source=box.source) for box in image.boxes]))
        for frame, image in enumerate(pre.images) if image.name in edits]
    images += [ImageEntry(len(images) + n, name, WIDTH, HEIGHT) for n, name in enumerate(extra)]
    xml = path.with_suffix(".xml")
    write_images_export(xml, task_name=task, labels=[LabelSpec(label, [SCORE_ATTRIBUTE]) for label in labels],
                        images=images)
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(xml, "annotations.xml")
    return path


def test_counts_equal_the_reviewers_edits(packages, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    report = build_reviewed_labels(_write_export(tmp_path / "export.zip", packages), packages, out, CLASSES)
    assert report.counts == {"images": 3, "boxes_before": 5, "boxes_after": 5, "kept": 2, "moved": 1,
                             "relabelled": 1, "deleted": 1, "added": 1}
    # the headline is the pseudo-labeller's, on the captures: 1 of their 4 boxes kept (the go2k box is a person's)
    assert (report.details["precision"], report.details["recall"]) == (pytest.approx(0.25), pytest.approx(0.25))
    assert report.details["f1"] == pytest.approx(0.25)
    sources = {row["source"]: row for row in report.details["sources"].rows}
    assert sources["go2k_manual"]["precision"] == 1.0
    assert [row["class"] for row in report.details["classes"].rows] == CLASSES
    assert {row["camera"]: row["images"] for row in report.details["cameras"].rows} == {"cam1": 2, None: 1}
    assert report.warnings == []
    changes = pd.read_parquet(out / CHANGES_FILE)
    assert list(changes.columns) == CHANGE_COLUMNS
    assert changes["change"].value_counts().to_dict() == {"kept": 2, "relabelled": 1, "moved": 1, "deleted": 1,
                                                          "added": 1}
    kept = changes.loc[changes["change"] == "kept"]
    assert kept["image"].tolist() == ["go2k/cam2_0.jpg", "captures/cam1/cam1_20260211_070500.jpg"]
    assert math.isnan(kept["score"].iloc[0]) and kept["score"].iloc[1] == pytest.approx(0.9)  # a person's: no score


def test_the_reviewed_boxes_become_the_labels_with_their_files(packages, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    build_reviewed_labels(_write_export(tmp_path / "export.zip", packages), packages, out, CLASSES)
    labels = pd.read_parquet(out / BOXES)
    assert list(labels.columns) == LABEL_COLUMNS
    c0, c1 = (f"captures/cam1/cam1_20260211_07050{n}.jpg" for n in (0, 1))
    assert [(row.image, row.label, row.cls, (row.x1, row.y1, row.x2, row.y2)) for row in labels.itertuples()] == [
        ("go2k/cam2_0.jpg", N, 1, A), (c0, H, 0, A), (c0, N, 1, B), (c1, N, 1, MOVED_A), (c1, H, 0, C)]
    manifest = pd.read_parquet(packages / "manifest.parquet").set_index("name")
    assert labels["path"].tolist() == [manifest.loc[name, "path"] for name in labels["image"]]
    assert labels["source"].tolist() == ["go2k_manual"] + ["captures"] * 4
    images = pd.read_parquet(out / IMAGES)
    assert images[["image", "boxes"]].values.tolist() == [["go2k/cam2_0.jpg", 1], [c0, 2], [c1, 2]]
    assert images["sha256"].tolist() == [manifest.loc[name, "sha256"] for name in images["image"]]


def test_a_plain_xml_export_of_another_task_is_compared_with_that_tasks_pre_annotations(packages, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    zipped = _write_export(tmp_path / "export.zip", packages, task="review_part2",
                           edits={"captures/cam1/cam1_20260211_070502.jpg": lambda boxes: boxes})
    report = build_reviewed_labels(zipped.with_suffix(".xml"), packages, out, CLASSES)
    assert report.counts == {"images": 1, "boxes_before": 1, "boxes_after": 1, "kept": 1, "moved": 0,
                             "relabelled": 0, "deleted": 0, "added": 0}
    assert report.details["precision"] == 1.0 and report.warnings == []


def test_an_image_emptied_by_review_stays_a_reviewed_image(packages, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    edits = {**EDITS, "captures/cam1/cam1_20260211_070501.jpg": lambda boxes: []}
    report = build_reviewed_labels(_write_export(tmp_path / "export.zip", packages, edits=edits), packages, out,
                                   CLASSES)
    assert (report.counts["images"], report.counts["deleted"], report.counts["added"]) == (3, 2, 0)
    images = pd.read_parquet(out / IMAGES)
    assert images.loc[images["image"] == "captures/cam1/cam1_20260211_070501.jpg", "boxes"].tolist() == [0]


def test_a_task_image_missing_from_the_export_is_warned_about_not_counted(packages, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    edits = {name: edit for name, edit in EDITS.items() if name != "go2k/cam2_0.jpg"}
    report = build_reviewed_labels(_write_export(tmp_path / "export.zip", packages, edits=edits), packages, out,
                                   CLASSES)
    assert report.counts["images"] == 2 and report.counts["boxes_before"] == 4
    assert len(report.warnings) == 1 and "'go2k/cam2_0.jpg'" in report.warnings[0]
    assert "review_part1" in report.warnings[0]


def test_an_export_naming_an_image_in_no_package_is_refused_by_name(packages, tmp_path):
    strangers = [f"captures/cam9/cam9_20260211_0800{n:02d}.jpg" for n in range(12)]
    export = _write_export(tmp_path / "export.zip", packages, extra=strangers)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError) as raised:
        build_reviewed_labels(export, packages, out, CLASSES)
    message = str(raised.value)
    assert str(export) in message and str(packages) in message and "and 2 more" in message
    assert all(name in message for name in strangers[:10]) and strangers[10] not in message
    assert list(out.iterdir()) == []


def test_a_label_outside_the_classes_is_refused_naming_it_and_the_export(packages, tmp_path):
    edits = {**EDITS, "go2k/cam2_0.jpg": lambda boxes: [_drawn("helmet", A)]}
    export = _write_export(tmp_path / "export.zip", packages, edits=edits, labels=[*CLASSES, "helmet"])
    with pytest.raises(ValueError, match="'helmet'") as raised:
        build_reviewed_labels(export, packages, tmp_path, CLASSES)
    assert str(export) in str(raised.value)


def test_a_corrupt_export_raises_the_readers_error_naming_the_file(packages, tmp_path):
    export = tmp_path / "export.zip"
    export.write_bytes(b"PK\x03\x04 cut off")
    with pytest.raises(CvatFormatError) as raised:
        build_reviewed_labels(export, packages, tmp_path, CLASSES)
    assert raised.value.file == export and str(export) in str(raised.value)


def test_a_folder_without_a_manifest_is_not_a_package_folder(packages, tmp_path):
    export = _write_export(tmp_path / "export.zip", packages)
    with pytest.raises(FileNotFoundError, match="manifest.parquet"):
        build_reviewed_labels(export, tmp_path / "elsewhere", tmp_path, CLASSES)
