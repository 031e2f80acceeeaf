"""CVAT review packages (domain only, no Dagster): review order and task split, the zip, frame order
and XML of each task read back, the manifest, bad inputs, and task creation through cvat-sdk."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pandas as pd
import pytest

from hoban_pipelines.cvat.reader import read_export
from hoban_pipelines.review.packages import (
    ANNOTATION_FORMAT,
    MANIFEST,
    MANIFEST_COLUMNS,
    TASK_COLUMNS,
    PackageFiles,
    ReviewBox,
    ReviewImage,
    build_review_packages,
    upload_review_packages,
)

LABELS = ["person_with_helmet", "person_without_helmet"]
WIDTH, HEIGHT = 64, 48


def _jpeg(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), pixels)
    return path


def _images(root: Path) -> list[ReviewImage]:
    """4 captures (scored model boxes) and 3 go2k_manual images (a person's boxes, no score), interleaved;
    by name, captures/ would sort before go2k/."""
    captures = [
        ReviewImage(_jpeg(root / "cam1" / f"cam1_20260211_0705{n:02d}.jpg", seed=n),
                    f"captures/cam1/cam1_20260211_0705{n:02d}.jpg", "captures", WIDTH, HEIGHT,
                    (ReviewBox(LABELS[n % 2], 1.5 + n, 2.25, 30.125, 40.0, score=0.5 + n / 10),
                     ReviewBox(LABELS[0], 10, 10, 20.004, 20.006, score=0.98765)), camera="cam1")
        for n in range(4)
    ]
    go2k = [
        ReviewImage(_jpeg(root / "go2k" / f"go2k_{n}.jpg", seed=10 + n), f"go2k/cam2_go2k_{n}.jpg",
                    "go2k_manual", WIDTH, HEIGHT, (ReviewBox(LABELS[1], 0, 0, 12.5, 9.75, score=None),))
        for n in range(3)
    ]
    return captures[:2] + go2k[:1] + captures[2:] + go2k[1:]


@pytest.fixture
def images(tmp_path) -> list[ReviewImage]:
    return _images(tmp_path / "source")


@pytest.fixture
def built(images, tmp_path):
    out = tmp_path / "packages"
    out.mkdir()
    return out, build_review_packages(images, LABELS, out, max_images=3)


def _review_order(images: list[ReviewImage]) -> list[ReviewImage]:
    return [image for image in images if image.source == "go2k_manual"] + [
        image for image in images if image.source == "captures"]


def test_go2k_first_in_tasks_of_at_most_max_images(images, built):
    out, report = built
    expected = _review_order(images)
    assert report.counts == {"tasks": 3, "images": 7, "images_go2k_manual": 3, "images_captures": 4, "boxes": 11}
    table = report.details["tasks"]
    assert table.columns == TASK_COLUMNS
    assert [(row["task"], row["images"], row["go2k_manual"], row["captures"], row["boxes"]) for row in table.rows] == [
        ("review_part1", 3, 3, 0, 3), ("review_part2", 3, 0, 3, 6), ("review_part3", 1, 0, 1, 2)]
    assert [row["bytes"] for row in table.rows] == [
        PackageFiles.of(out, row["task"]).images.stat().st_size for row in table.rows]
    names = [image.name for image in expected]
    assert [[image.name for image in read_export(PackageFiles.of(out, row["task"]).annotations).images]
            for row in table.rows] == [names[:3], names[3:6], names[6:]]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MANIFEST] + [f"review_part{n}{suffix}" for n in (1, 2, 3) for suffix in (".jsonl", ".xml", ".zip")])


def test_each_task_reads_back_with_the_same_boxes_scores_and_images(images, built):
    out, _ = built
    by_name = {image.name: image for image in images}
    for task in ("review_part1", "review_part2", "review_part3"):
        files = PackageFiles.of(out, task)
        export = read_export(files.annotations)
        xml_names = [image.name for image in export.images]
        with zipfile.ZipFile(files.images) as archive:
            # CVAT matches annotations to frames by name: the zip holds exactly the XML's images
            assert archive.namelist() == xml_names
            for member in archive.infolist():
                assert member.compress_type == zipfile.ZIP_STORED
                assert archive.read(member) == by_name[member.filename].path.read_bytes()
        for frame, read in enumerate(export.images):
            given = by_name[read.name]
            assert (read.frame, read.width, read.height) == (frame, given.width, given.height)
            assert [(box.label, box.xyxy, box.attributes.get("score"), box.source) for box in read.boxes] == [
                (box.label, tuple(round(v, 2) for v in (box.x1, box.y1, box.x2, box.y2)),
                 None if box.score is None else f"{box.score:.3f}", "manual" if box.score is None else "auto")
                for box in given.boxes]


def test_frame_order_is_cvats_upload_manifest_in_review_order(images, built):
    out, _ = built
    lines = [json.loads(line) for line in PackageFiles.of(out, "review_part1").frame_order.read_text().splitlines()]
    assert lines[:2] == [{"version": "1.1"}, {"type": "images"}]
    assert lines[2:] == [{"name": image.name.removesuffix(".jpg"), "extension": ".jpg", "width": WIDTH,
                          "height": HEIGHT} for image in _review_order(images)[:3]]


def test_labels_and_the_score_attribute_are_declared(built):
    out, _ = built
    declared = read_export(out / "review_part2.xml").labels
    score = {"input_type": "number", "mutable": False, "default_value": "1", "values": ["0", "1", "0.001"]}
    assert declared == {label: {"score": score} for label in LABELS}


def test_manifest_has_a_row_per_image_with_its_sha256(images, built):
    out, _ = built
    manifest = pd.read_parquet(out / MANIFEST)
    assert list(manifest.columns) == MANIFEST_COLUMNS
    expected = _review_order(images)
    assert manifest["name"].tolist() == [image.name for image in expected]
    assert manifest["task"].tolist() == ["review_part1"] * 3 + ["review_part2"] * 3 + ["review_part3"]
    assert manifest["frame"].tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert manifest["sha256"].tolist() == [hashlib.sha256(image.path.read_bytes()).hexdigest() for image in expected]
    assert manifest["path"].tolist() == [str(image.path) for image in expected]
    assert manifest["camera"].isna().tolist() == [True] * 3 + [False] * 4  # go2k images come without a camera
    assert manifest["camera"].dropna().tolist() == ["cam1"] * 4
    assert manifest["boxes"].tolist() == [len(image.boxes) for image in expected]


def test_the_same_images_give_the_same_files(images, built, tmp_path):
    out, _ = built
    again = tmp_path / "again"
    again.mkdir()
    build_review_packages(images, LABELS, again, max_images=3)
    for path in out.iterdir():
        assert (again / path.name).read_bytes() == path.read_bytes(), path.name


def _with(image: ReviewImage, **changes) -> ReviewImage:
    return dataclasses.replace(image, **changes)


def _box(label: str, score: float | None) -> ReviewBox:
    return ReviewBox(label, 0, 0, 1, 1, score=score)


# each case: (the images given, the error, what its message must name), from two valid images
BAD_INPUTS = {
    "same name": lambda a, b, gone: ([a, _with(b, name=a.name)], ValueError, [str(a.path), str(b.path)]),
    "unknown label": lambda a, b, gone: ([_with(a, boxes=(_box("helmet", 0.5),))], ValueError, [a.name, "'helmet'"]),
    "missing file": lambda a, b, gone: ([_with(a, path=gone)], FileNotFoundError, [str(gone)]),
    "score above 1": lambda a, b, gone: ([_with(a, boxes=(_box(LABELS[0], 1.5),))], ValueError, [a.name, "1.5"]),
    "size not the file's": lambda a, b, gone: ([_with(a, width=WIDTH + 1)], ValueError, [str(a.path), "64x48"]),
    "unknown source": lambda a, b, gone: ([_with(a, source="go2k")], ValueError, [str(a.path), "'go2k'"]),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_named_and_nothing_is_written(images, tmp_path, case):
    given, error, named = BAD_INPUTS[case](images[0], images[1], tmp_path / "gone.jpg")
    out = tmp_path / "packages"
    out.mkdir()
    with pytest.raises(error) as raised:
        build_review_packages(given, LABELS, out)
    assert all(part in str(raised.value) for part in named), str(raised.value)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("name", ["/abs/x.jpg", "a/../x.jpg", "./x.jpg", "a//x.jpg", "cam1\\x.jpg", "cam1/x.txt",
                                  "__MACOSX/x.jpg", "cam1/related_images/x.jpg"])
def test_a_name_cvat_would_not_keep_is_refused(images, tmp_path, name):
    with pytest.raises(ValueError, match="cannot name a CVAT frame") as raised:
        build_review_packages([_with(images[0], name=name)], LABELS, tmp_path)
    assert repr(name) in str(raised.value)


def test_max_images_below_one_is_refused(images, tmp_path):
    with pytest.raises(ValueError, match="max_images"):
        build_review_packages(images, LABELS, tmp_path, max_images=0)


class _RecordingTasks:
    def __init__(self, fail_on_call: int | None = None) -> None:
        self.calls: list[dict] = []
        self._fail_on_call = fail_on_call

    def create_from_data(self, **arguments):
        self.calls.append(arguments)
        if len(self.calls) == self._fail_on_call:
            raise OSError("connection reset")
        return SimpleNamespace(id=40 + len(self.calls))


class _RecordingClient:
    """Stands in for a logged-in cvat-sdk Client: a live CVAT server cannot run here, so this fake
    records what would be sent, and the test checks it against the real SDK's request models."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.tasks = _RecordingTasks(fail_on_call)


def test_upload_creates_one_task_per_package_with_its_files_and_labels(built):
    from cvat_sdk.api_client import models
    from cvat_sdk.core.proxies.tasks import ResourceType

    out, _ = built
    client = _RecordingClient()
    assert upload_review_packages(out, client) == [
        {"name": "review_part1", "task_id": 41, "images": 3},
        {"name": "review_part2", "task_id": 42, "images": 3},
        {"name": "review_part3", "task_id": 43, "images": 1},
    ]
    assert len(client.tasks.calls) == 3
    for n, call in enumerate(client.tasks.calls, start=1):
        files = PackageFiles.of(out, f"review_part{n}")
        assert call["resources"] == [files.images, files.frame_order]
        assert call["resource_type"] is ResourceType.LOCAL
        assert call["data_params"] == {"sorting_method": "predefined"}
        assert call["annotation_path"] == str(files.annotations)
        assert call["annotation_format"] == ANNOTATION_FORMAT == "CVAT 1.1"
        spec = call["spec"]
        assert isinstance(spec, models.TaskWriteRequest) and spec.name == files.task
        assert all(isinstance(label, models.PatchedLabelRequest) for label in spec.labels)
        assert all(isinstance(attribute, models.AttributeRequest)
                   for label in spec.labels for attribute in label.attributes)
        assert spec.to_dict()["labels"] == [
            {"name": label, "attributes": [{"name": "score", "mutable": False, "input_type": "number",
                                            "values": ["0", "1", "0.001"], "default_value": "1"}]}
            for label in LABELS]


def test_upload_into_a_project_leaves_the_labels_to_the_project(built):
    out, _ = built
    client = _RecordingClient()
    upload_review_packages(out, client, project_id=7)
    assert [call["spec"].to_dict() for call in client.tasks.calls] == [
        {"name": f"review_part{n}", "project_id": 7} for n in (1, 2, 3)]
    with pytest.raises(ValueError, match="not both"):
        upload_review_packages(out, _RecordingClient(), project_id=7, labels=LABELS)


def test_upload_refuses_labels_missing_a_package_label_before_creating_anything(built):
    out, _ = built
    client = _RecordingClient()
    with pytest.raises(ValueError, match="person_without_helmet"):
        upload_review_packages(out, client, labels=LABELS[:1])
    assert client.tasks.calls == []


def test_a_failed_upload_names_the_tasks_already_created(built):
    out, _ = built
    with pytest.raises(RuntimeError, match=r"review_part2 failed .*review_part1 \(id 41\)"):
        upload_review_packages(out, _RecordingClient(fail_on_call=2))


def test_upload_without_cvat_sdk_says_which_extra_to_install(built, monkeypatch):
    out, _ = built
    monkeypatch.setitem(sys.modules, "cvat_sdk", None)
    with pytest.raises(ImportError, match=r"hoban_pipelines\[cvat\]"):
        upload_review_packages(out, _RecordingClient())
