"""The `hoban` command as a user runs it: JSON shapes, exit codes, one-line errors."""

from __future__ import annotations

import json

import pandas as pd
from click.testing import CliRunner
from conftest import SAMPLES

from hoban_pipelines.cli import main

SHAPE_KEYS = ["box", "polygon", "polyline", "points", "mask", "ellipse", "cuboid", "skeleton", "tag"]


def test_cvat_inspect_json_has_exactly_the_documented_keys():
    files = sorted(str(p) for p in (SAMPLES / "cvat").glob("*.xml"))
    result = CliRunner().invoke(main, ["cvat", "inspect", *files, "--json"])
    assert result.exit_code == 0, result.output
    summaries = json.loads(result.output)
    assert [s["file"] for s in summaries] == files
    for summary in summaries:
        assert list(summary) == ["file", "images", "tracks", "shapes", "boxes_by_label"]
        assert list(summary["shapes"]) == SHAPE_KEYS
    concrete = next(s for s in summaries if s["file"].endswith("concretenet_annotations.xml"))
    assert concrete["images"] == 48 and concrete["boxes_by_label"] == {"rebar": 1030}
    video = next(s for s in summaries if s["file"].endswith("dm_video_annotations.xml"))
    assert video["images"] == 0 and video["tracks"] == 3


def test_cvat_inspect_boxes_lists_pixel_boxes():
    path = str(SAMPLES / "cvat" / "dm_video_annotations.xml")
    result = CliRunner().invoke(main, ["cvat", "inspect", path, "--json", "--boxes"])
    boxes = json.loads(result.output)[0]["boxes"]
    assert boxes == [{"image": 10, "label": "II", "xyxy": [3.0, 4.0, 10.0, 5.0]}]


def test_cvat_errors_are_one_line_naming_the_file(tmp_path):
    bad = tmp_path / "part9.xml"
    bad.write_text("<annotations><image id='0' name='a.jpg' width='10' height='10'>")
    result = CliRunner().invoke(main, ["cvat", "inspect", str(bad)])
    assert result.exit_code == 1 and "part9.xml" in result.output and "Traceback" not in result.output


def test_to_yolo_writes_a_dataset_and_refuses_to_overwrite(small_site, tmp_path):
    exports = sorted(str(p) for p in (small_site / "cvat_exports").glob("*.xml"))
    out = tmp_path / "yolo"
    args = ["cvat", "to-yolo", *exports, "--out", str(out), "--images", str(small_site / "snapshots"),
            "--clean", "recurring_small"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert (out / "data.yaml").is_file() and len(pd.read_parquet(out / "manifests" / "images.parquet")) == 16
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "already exists" in again.output


def test_config_check_names_every_missing_path_and_its_setting(hoban_home):
    result = CliRunner().invoke(main, ["config", "--check"])
    assert result.exit_code == 1
    for key in ("cvat_exports", "snapshots", "base_dataset", "captures.cam1", "captures.cam2"):
        assert f"(setting '{key}'" in result.output
    assert str(hoban_home) in result.output


def test_dedup_frozen_reports_the_planted_frozen_frames_of_one_camera(small_site):
    truth = json.loads((small_site / "ground_truth" / "captures.json").read_text())["frames"]
    planted = sorted(frame["file"].split("/", 1)[1] for frame in truth if frame["camera"] == "cam1" and frame["frozen_of"])
    result = CliRunner().invoke(main, ["dedup", "frozen", str(small_site / "captures" / "cam1")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["frames"] == sum(frame["camera"] == "cam1" for frame in truth)
    assert sorted(frame["file"] for frame in report["frozen_frames"]) == planted and report["frozen"] == len(planted)
    assert report["bytes_in_frozen_frames"] > 0 and report["undecodable"] == []
    assert all((small_site / "captures" / "cam1" / frame["file"]).is_file() for frame in report["frozen_frames"])


def test_dedup_near_pairs_a_reencoded_copy_and_nothing_else(small_site, tmp_path):
    import cv2

    images = sorted((small_site / "base_dataset").rglob("*.jpg"))[:3]
    for image in images:
        (tmp_path / image.name).write_bytes(image.read_bytes())
    cv2.imwrite(str(tmp_path / "copy.png"), cv2.imread(str(images[0])))
    result = CliRunner().invoke(main, ["dedup", "near", str(tmp_path)])
    assert result.exit_code == 0, result.output
    pairs = [json.loads(line) for line in result.output.splitlines()]
    assert [{pair["a"], pair["b"]} for pair in pairs] == [{images[0].name, "copy.png"}]
    refused = CliRunner().invoke(main, ["dedup", "near", str(tmp_path), "--backend", "fastdup"])
    assert refused.exit_code != 0 and "needs --threshold" in refused.output
    empty = CliRunner().invoke(main, ["dedup", "frozen", str(tmp_path / "nothing")])
    assert empty.exit_code != 0
