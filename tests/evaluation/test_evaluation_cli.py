"""`hoban predict-sliced` and `hoban evaluate` as a user runs them, outside Dagster: a real firing
yolov8n on two 1920x1080 frames of the small demo site, labelled from the site's ground truth.
Output is JSON; bad input is one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from hoban_pipelines.bench.models import firing_checkpoint
from hoban_pipelines.cli import main
from hoban_pipelines.core.lake import file_sha256
from hoban_pipelines.evaluation.predictions import load_predictions

CLASSES = ["person_with_helmet", "person_without_helmet"]
IMGSZ = 256
FRAMES = 2


@dataclass
class Workspace:
    root: Path
    dataset: Path
    truth_boxes: int
    model: Path
    predictions: Path  # written by the torch run
    torch_run: Result


def _dataset(folder: Path, site: Path) -> tuple[Path, int]:
    """A YOLO dataset of the first FRAMES labelled frames with people (val: images), labels from
    the site's ground truth (pixel xyxy to normalised cx cy w h); and how many boxes it has."""
    truth = json.loads((site / "ground_truth" / "go2k_labels.json").read_text())
    chosen = [image for image in truth["images"] if image["boxes"]][:FRAMES]
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    for image in chosen:
        name = Path(image["name"]).name
        shutil.copy(site / "snapshots" / image["name"], folder / "images" / name)
        width, height = image["width"], image["height"]
        lines = []
        for box in image["boxes"]:
            x1, y1, x2, y2 = box["xyxy"]
            lines.append(f"{box['cls']} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} "
                         f"{(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}")
        (folder / "labels" / name).with_suffix(".txt").write_text("\n".join(lines) + "\n")
    (folder / "data.yaml").write_text(yaml.safe_dump({"path": ".", "val": "images", "names": dict(enumerate(CLASSES))}))
    return folder, sum(len(image["boxes"]) for image in chosen)


def hoban(*args) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args])


def _printed(result: Result) -> dict:
    """The JSON a command printed (predict-sliced prints one line, evaluate an indented object)."""
    assert result.exit_code == 0, result.output
    text = result.stdout.strip()
    return json.loads(text if text.startswith("{\n") else text.splitlines()[-1])


def _one_line_error(result: Result, *fragments: str) -> str:
    """A refusal as click prints a user error: exit 1, 'Error: ...' as the last line, no traceback."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), f"unhandled {result.exception!r}"
    assert "Traceback" not in result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in last, last
    return last


@pytest.fixture(scope="module")
def workspace(small_site, tmp_path_factory) -> Workspace:
    """The dataset, the firing model and its torch predictions, made once for the module."""
    root = tmp_path_factory.mktemp("cli")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOBAN_HOME", str(root / "hoban_home"))
        config = root / "hoban.yaml"
        config.write_text("{}\n")
        patch.setenv("HOBAN_CONFIG", str(config))
        dataset, boxes = _dataset(root / "dataset", small_site)
        model = firing_checkpoint(root / "firing.pt", CLASSES, imgsz=IMGSZ)
        predictions = root / "preds.parquet"
        run = hoban("predict-sliced", "--model", model, "--images", dataset, "--out", predictions)
        yield Workspace(root, dataset, boxes, model, predictions, run)


def test_predict_sliced_with_torch_writes_every_raw_detection(workspace):
    printed = _printed(workspace.torch_run)
    assert printed["out"] == str(workspace.predictions)
    assert printed["frames"] == FRAMES and printed["unreadable"] == 0 and printed["sliced_detections"] > 0
    cache = load_predictions(workspace.predictions)
    assert cache.record["speed"]["backend"] == "torch" and cache.classes == CLASSES
    assert cache.record["settings"]["slice_size"] == IMGSZ  # the size the checkpoint trained at
    assert len(cache.sliced) == printed["sliced_detections"]
    assert sorted(cache.frames["image"]) == sorted(f"images/{p.name}" for p in (workspace.dataset / "images").iterdir())


def test_predict_sliced_on_onnx_exports_the_checkpoint_on_the_fly(workspace):
    out = workspace.root / "preds_onnx.parquet"
    result = hoban("predict-sliced", "--model", workspace.model, "--images", workspace.dataset, "--out", out,
                   "--backend", "onnx")
    printed = _printed(result)
    assert "exporting" in result.stderr and "onnx on" in result.stderr
    assert printed["frames"] == FRAMES and printed["sliced_detections"] > 0
    assert load_predictions(out).record["speed"]["backend"] == "onnx"
    # the same network on another runtime: the same detections, up to float noise at the floor
    torch_count = _printed(workspace.torch_run)["sliced_detections"]
    assert abs(printed["sliced_detections"] - torch_count) <= 0.01 * torch_count


def test_predict_sliced_refuses_to_overwrite_its_output(workspace):
    before = file_sha256(workspace.predictions)
    result = hoban("predict-sliced", "--model", workspace.model, "--images", workspace.dataset,
                   "--out", workspace.predictions)
    _one_line_error(result, str(workspace.predictions), "--replace")
    assert file_sha256(workspace.predictions) == before


def test_evaluate_scores_the_cache_against_the_labels(workspace):
    printed = _printed(hoban("evaluate", "--predictions", workspace.predictions, "--labels", workspace.dataset,
                             "--conf", "0.1"))
    assert {"tp", "fp", "fn", "precision", "recall", "map50", "fp_kinds"} <= set(printed)
    assert printed["frames"] == FRAMES and printed["unreadable"] == []
    assert printed["tp"] + printed["fn"] == workspace.truth_boxes  # every labelled box is matched or missed
    assert sum(printed["fp_kinds"].values()) == printed["fp"] > 0  # the firing model fires everywhere
    assert 0 <= printed["precision"] <= 1 and 0 <= printed["recall"] <= 1


def test_evaluate_reports_the_confidence_it_scored_at(workspace):
    """The JSON says which threshold its numbers are at: the one asked for."""
    printed = _printed(hoban("evaluate", "--predictions", workspace.predictions, "--labels", workspace.dataset,
                             "--conf", "0.1"))
    assert printed["conf"] == 0.1


def test_evaluate_sweep_adds_the_adopted_setting(workspace):
    printed = _printed(hoban("evaluate", "--predictions", workspace.predictions, "--labels", workspace.dataset,
                             "--conf", "0.1", "--sweep"))
    assert printed["settings_scored"] >= 88
    adopted = printed["adopted"]
    assert {"conf", "postprocess", "gate", "policy", "scores", "slicing"} <= set(adopted)
    assert set(adopted["scores"]) == {"with_gate", "without_gate"}
    assert adopted["slicing"]["slice_size"] == IMGSZ


@pytest.mark.parametrize("args, fragments", [
    (["--postprocess", "NMX/IOS/0.4"], ["NMX/IOS/0.4", "'NMX'"]),
    (["--gate", "abc"], ["--gate 'abc'"]),
], ids=["unknown-merge", "malformed-gate"])
def test_evaluate_refuses_a_malformed_setting(workspace, args, fragments):
    result = hoban("evaluate", "--predictions", workspace.predictions, "--labels", workspace.dataset, *args)
    _one_line_error(result, *fragments)


def test_predict_sliced_refuses_a_folder_without_images(workspace, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = hoban("predict-sliced", "--model", workspace.model, "--images", empty, "--out", tmp_path / "p.parquet")
    _one_line_error(result, str(empty), "names no images")
    assert not (tmp_path / "p.parquet").exists()


@pytest.mark.parametrize("args, fragments", [
    (["--overlap", "1.0"], ["overlap ratio 1.0"]),
    (["--device", "gpu0"], ["device 'gpu0'"]),
], ids=["overlap-1", "unknown-device"])
def test_predict_sliced_refuses_bad_settings_in_one_line(workspace, tmp_path, args, fragments):
    """Settings the engine rejects are user errors like any other, not a traceback."""
    result = hoban("predict-sliced", "--model", workspace.model, "--images", workspace.dataset,
                   "--out", tmp_path / "p.parquet", *args)
    _one_line_error(result, *fragments)
    assert not (tmp_path / "p.parquet").exists()


def test_evaluate_refuses_predictions_of_a_model_with_other_classes(workspace, tmp_path):
    other = firing_checkpoint(tmp_path / "other.pt", ["a", "b"], imgsz=IMGSZ)
    out = tmp_path / "other.parquet"
    # 640-px tiles (8 a frame) keep this pass short: only its classes matter here
    _printed(hoban("predict-sliced", "--model", other, "--images", workspace.dataset, "--out", out, "--slice", 640))
    result = hoban("evaluate", "--predictions", out, "--labels", workspace.dataset)
    _one_line_error(result, "['a', 'b']", str(CLASSES))
