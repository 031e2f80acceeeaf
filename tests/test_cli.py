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
