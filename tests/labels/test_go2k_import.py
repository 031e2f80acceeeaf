"""The demo's CVAT parts import to exactly the generator's ground truth."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from hoban_pipelines.labels.cleaning import CleaningRule
from hoban_pipelines.cvat.reader import CvatFormatError
from hoban_pipelines.labels.cvat_import import DatasetError, build_dataset, export_files
from hoban_pipelines.labels.label_map import LabelMap, LabelMapError
from hoban_pipelines.core.lake import publish_directory

CLASSES = ["person_with_helmet", "person_without_helmet"]


def _build(site: Path, out: Path, rule: CleaningRule = CleaningRule(), files=None):
    with publish_directory(out) as staging:
        result = build_dataset(
            files or export_files(site / "cvat_exports"), staging,
            label_map=LabelMap.identity(CLASSES), rule=rule, image_root=site / "snapshots",
        )
    return result


@pytest.fixture(scope="module", params=["small_site", "demo_profile_site"])
def imported(request, tmp_path_factory):
    site = request.getfixturevalue(request.param)
    out = tmp_path_factory.mktemp("go2k") / "dataset"
    images, boxes, report = _build(site, out)
    truth = json.loads((site / "ground_truth" / "go2k_labels.json").read_text())
    return out, images, boxes, report, truth


def _rounded(rows):
    return sorted((int(c), *(round(float(v)) for v in xyxy)) for c, xyxy in rows)


def test_boxes_equal_ground_truth_box_for_box(imported):
    _, images, boxes, _, truth = imported
    labelled = {im["name"]: im for im in truth["images"] if im["parts"]}
    assert set(images["image"]) == set(labelled)
    conflict_truth = {c["name"]: c for c in truth["conflicts"]}
    for name, image in labelled.items():
        got = boxes[boxes["image"] == name]
        expected = _rounded((b["cls"], b["xyxy"]) for b in image["boxes"])
        actual = _rounded(zip(got["cls"], got[["x1", "y1", "x2", "y2"]].to_numpy()))
        assert len(actual) == len(expected), name
        for a, e in zip(actual, expected):
            assert a[0] == e[0] or name in conflict_truth, name
            assert max(abs(x - y) for x, y in zip(a[1:], e[1:])) <= 1, (name, a, e)


def test_cleaning_removes_exactly_the_planted_boxes(imported):
    out, _, _, report, truth = imported
    removed = pd.read_parquet(out / "manifests" / "removed_boxes.parquet")
    planted = sorted(
        (im["name"], f"go2k_part{p['part']}", *(round(v) for v in p["xyxy"]))
        for im in truth["images"] for p in im["planted_false"]
    )
    got = sorted(
        (r.image, r.part, round(r.x1), round(r.y1), round(r.x2), round(r.y2)) for r in removed.itertuples()
    )
    assert got == planted
    assert report.would_remove["small_box"] > report.would_remove["recurring_small"]  # the team's rule eats workers


def test_negatives_conflicts_and_files(imported):
    out, images, boxes, report, truth = imported
    negatives = {im["name"] for im in truth["images"] if im["parts"] and not im["boxes"]}
    assert negatives and negatives <= set(images["image"]) and not negatives & set(boxes["image"])
    for name in negatives:
        assert (out / "labels" / Path(name).with_suffix(".txt")).read_text() == ""
    assert [c["image"] for c in report.conflicts] == [c["name"] for c in truth["conflicts"]]
    assert report.linked == len(images)  # same filesystem: hard links, no copies
    data = (out / "data.yaml").read_text()
    assert "person_without_helmet" in data
    assert (out / "plots" / "samples.png").stat().st_size > 10_000
    first = images.iloc[0]
    assert len(first["sha256"]) == 64 and first["camera"] in ("cam1", "cam2") and first["timestamp"] is not pd.NaT


def test_yolo_labels_match_the_manifest(imported):
    out, images, boxes, _, _ = imported
    name = boxes["image"].iloc[0]
    lines = (out / "labels" / Path(name).with_suffix(".txt")).read_text().splitlines()
    rows = boxes[boxes["image"] == name]
    assert len(lines) == len(rows)
    cls, cx, cy, w, h = lines[0].split()
    first = rows.iloc[0]
    assert int(cls) == first["cls"] and abs(float(cx) - first["cx"]) < 1e-6 and abs(float(h) - first["h"]) < 1e-6


# --- bad inputs: a clear error naming the file, and nothing written ---------------------------

def _copy_exports(site: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "exports"
    folder.mkdir()
    for path in export_files(site / "cvat_exports"):
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


def _assert_nothing_written(out: Path):
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".tmp-")]


def test_missing_image_names_the_image_and_setting(small_site, tmp_path):
    folder = _copy_exports(small_site, tmp_path)
    part = folder / "go2k_part1.xml"
    text = part.read_text()
    first_name = text.split('name="', 1)[1].split('"', 1)[0]
    part.write_text(text.replace(f'name="{first_name}"', 'name="cam9/cam9_20260211_000000.jpg"', 1))
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match=r"image 'cam9/cam9_20260211_000000.jpg' of part 'go2k_part1' is not under .*snapshots"):
        _build(small_site, out, files=export_files(folder))
    _assert_nothing_written(out)


def test_unknown_label_lists_the_labels_found(small_site, tmp_path):
    folder = _copy_exports(small_site, tmp_path)
    part = folder / "go2k_part3.xml"
    part.write_text(part.read_text().replace('label="person_without_helmet"', 'label="dog"', 1)
                    .replace("<name>person_without_helmet</name>", "<name>person_without_helmet</name></label><label><name>dog</name>", 1))
    out = tmp_path / "out"
    with pytest.raises(LabelMapError, match=r"go2k_part3.xml: label\(s\) \['dog'\] are not in the label map"):
        _build(small_site, out, files=export_files(folder))
    _assert_nothing_written(out)


def test_malformed_export_in_one_part_stops_everything(small_site, tmp_path):
    folder = _copy_exports(small_site, tmp_path)
    (folder / "go2k_part4.xml").write_text("<annotations><image id='0'")
    out = tmp_path / "out"
    with pytest.raises(CvatFormatError, match="go2k_part4.xml"):
        _build(small_site, out, files=export_files(folder))
    _assert_nothing_written(out)


def test_empty_drop_folder(tmp_path):
    with pytest.raises(DatasetError, match="holds no CVAT export"):
        export_files(tmp_path)


def test_image_name_escaping_the_dataset(small_site, tmp_path):
    folder = _copy_exports(small_site, tmp_path)
    part = folder / "go2k_part1.xml"
    text = part.read_text()
    first_name = text.split('name="', 1)[1].split('"', 1)[0]
    part.write_text(text.replace(f'name="{first_name}"', 'name="../../etc/passwd"', 1))
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match="climbs out"):
        _build(small_site, out, files=export_files(folder))
    _assert_nothing_written(out)


def test_zip_export_with_images_needs_no_image_folder(small_site, tmp_path):
    export = small_site / "cvat_exports" / "go2k_part2.xml"
    archive = tmp_path / "go2k_part2.zip"
    import defusedxml.ElementTree as ET

    names = [im.get("name") for im in ET.parse(export).getroot().iter("image")]
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(export, "annotations.xml")
        for name in names:
            zf.write(small_site / "snapshots" / name, f"images/{name}")
    out = tmp_path / "out"
    with publish_directory(out) as staging:
        images, boxes, report = build_dataset([archive], staging, label_map=LabelMap.identity(CLASSES),
                                              rule=CleaningRule(), image_root=None)
    assert len(images) == len(names) and report.copied == len(names) and report.linked == 0
    assert all((out / "images" / n).is_file() for n in names)


def test_a_project_export_keeps_one_name_in_several_subsets_apart(tmp_path):
    """A "CVAT for images 1.1" project export repeats a name in Train, Test and Validation under
    one task and zips each under images/<subset>/: three images, each with its own size and boxes."""
    import cv2
    import numpy as np

    from hoban_pipelines.cvat.reader import read_export

    fixture = Path(__file__).parents[1] / "cvat" / "fixtures" / "images_project_subsets.xml"
    export = tmp_path / "project.zip"
    with zipfile.ZipFile(export, "w") as archive:
        archive.write(fixture, "annotations.xml")
        for image in read_export(fixture).images:
            pixels = np.full((image.height, image.width, 3), 90, np.uint8)
            archive.writestr(f"images/{image.subset}/{image.name}", cv2.imencode(".jpg", pixels)[1].tobytes())
    out = tmp_path / "dataset"
    with publish_directory(out) as staging:
        label_map = LabelMap.from_dict({"labels": {"person": CLASSES[0], "head": CLASSES[1]}, "ignore": ["helmet"]},
                                       "test map", CLASSES)
        images, boxes, _ = build_dataset([export], staging, label_map=label_map, rule=CleaningRule("none"), image_root=None)
    same = images[images["image"].str.endswith("cam1_20260211_101500.jpg")].set_index("image")
    assert sorted(same.index) == ["Test/cam1_20260211_101500.jpg", "Train/cam1_20260211_101500.jpg",
                                  "Validation/cam1_20260211_101500.jpg"]
    assert (same.loc["Test/cam1_20260211_101500.jpg", "width"], same.loc["Test/cam1_20260211_101500.jpg", "height"]) == (1280, 720)
    assert set(images["camera"]) <= {"cam1", "cam2"} and images["timestamp"].notna().all()
    assert all((out / path).is_file() for path in images["label_path"])
    assert len(images) == 5 and boxes["image"].isin(images["image"]).all()
