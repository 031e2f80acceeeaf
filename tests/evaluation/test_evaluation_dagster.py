"""The evaluation stage through Dagster on a real instance, with real models: a firing (untrained
but busy) yolov8n configured as the base checkpoint, go2k_split of the small demo site, and the
evaluation assets materialized for the ``base_model`` partition. Bad inputs must fail the
materialization with a clear message and leave no version behind."""

from __future__ import annotations

import json
import re
import shutil
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import yaml

from hoban_pipelines.assets import evaluation
from hoban_pipelines.assets.datasets import go2k_split
from hoban_pipelines.assets.labels import go2k_manual
from hoban_pipelines.assets.training import base_model
from hoban_pipelines.bench.models import firing_checkpoint
from hoban_pipelines.core.lake import Lake
from hoban_pipelines.definitions import defs
from hoban_pipelines.evaluation.engine import EvaluationError
from hoban_pipelines.evaluation.export import ONNX_FILE, export_onnx
from hoban_pipelines.evaluation.slicing import SlicingError
from hoban_pipelines.resources import LakeHandleIOManager, LakeResource, YoloRuntime

CLASSES = ["person_with_helmet", "person_without_helmet"]
PARTITION = "base_model"
IMGSZ = 256
# 2 of the small site's 16 labelled frames in val (the default 0.2 gives 3): every pass a third shorter
SPLIT = {"ops": {"go2k_split": {"config": {"val_fraction": 0.15}}}}
EVALUATION_ASSETS = [evaluation.model_export, evaluation.sliced_predictions, evaluation.conf_sweep,
                     evaluation.postprocess_sweep, evaluation.verifier_crops, evaluation.crop_verifier,
                     evaluation.gate_sweep, evaluation.inference_config,
                     evaluation.model_report_card]
EVALUATION_NAMES = [a.key.to_user_string() for a in EVALUATION_ASSETS]
ALL_ASSETS = list(defs.assets)  # materialize selects from the whole graph, so upstream inputs load from records


@dataclass
class Lakeside:
    """One storage root with its Dagster instance and the resources that point at it."""

    home: Path
    instance: dg.DagsterInstance
    resources: dict

    @property
    def lake(self) -> Lake:
        return Lake(self.home)

    def materialize(self, assets, *, partition: str | None = None, config: dict | None = None, **kwargs):
        run_config = {"ops": {"sliced_predictions": {"config": config}}} if config else None
        if partition is None:
            return dg.materialize(assets, instance=self.instance, resources=self.resources, **kwargs)
        return dg.materialize(ALL_ASSETS, selection=[a.key for a in assets], partition_key=partition,
                              instance=self.instance, resources=self.resources, run_config=run_config, **kwargs)

    def partition_entries(self, asset: str) -> list[str]:
        """Everything in an asset's partition folder, hidden staging folders included."""
        folder = self.lake.asset_dir(asset, PARTITION)
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _settings(root: Path, site: Path, checkpoint: Path) -> Path:
    config = root / "hoban.yaml"
    config.write_text(yaml.safe_dump({
        "demo_profile": "small", "train_profile": "test", "base_checkpoint": str(checkpoint),
        "cvat_exports": str(site / "cvat_exports"), "snapshots": str(site / "snapshots"),
        "base_dataset": str(site / "base_dataset"),
    }))
    return config


def _lakeside(stack: ExitStack, patch: pytest.MonkeyPatch, root: Path, site: Path, classes: list[str]) -> Lakeside:
    """A lake with go2k_manual, go2k_split and base_model (from a configured firing checkpoint of
    ``classes``: no training) materialized through the code location's own resources."""
    home = root / "hoban_home"
    checkpoint = firing_checkpoint(root / "firing.pt", classes, imgsz=IMGSZ)
    patch.setenv("HOBAN_HOME", str(home))
    patch.setenv("HOBAN_CONFIG", str(_settings(root, site, checkpoint)))
    instance = stack.enter_context(dg.instance_for_test())
    # the CPU, where the cached pass's default backend (auto) is onnx, on any test machine
    resources = {**defs.resources, "lake": LakeResource(home=str(home)),
                 "io_manager": LakeHandleIOManager(home=str(home)), "yolo": YoloRuntime(device="cpu")}
    side = Lakeside(home, instance, resources)
    assert side.materialize([go2k_manual, go2k_split, base_model], run_config=SPLIT).success
    return side


@pytest.fixture(scope="module")
def evaluated(small_site, tmp_path_factory):
    """The evaluation group materialized once for base_model, and its materializations by asset."""
    with pytest.MonkeyPatch.context() as patch, ExitStack() as stack:
        side = _lakeside(stack, patch, tmp_path_factory.mktemp("evaluation"), small_site, CLASSES)
        result = side.materialize(EVALUATION_ASSETS, partition=PARTITION)
        assert result.success
        yield side, {name: result.asset_materializations_for_node(name)[0] for name in EVALUATION_NAMES}


@pytest.fixture
def other_classes(small_site, tmp_path):
    """A lake whose base checkpoint predicts classes go2k is not labelled with."""
    with pytest.MonkeyPatch.context() as patch, ExitStack() as stack:
        yield _lakeside(stack, patch, tmp_path, small_site, ["a", "b"])


def _version_of(side: Lakeside, asset: str) -> str:
    event = side.instance.get_latest_materialization_event(dg.AssetKey(asset))
    return event.asset_materialization.metadata["version"].value


def _messages(side: Lakeside, run_id: str) -> list[str]:
    return [record.user_message or "" for record in side.instance.all_logs(run_id)]


def test_every_evaluation_asset_is_partitioned_by_model_and_inference_sits_in_the_gpu_pool():
    """A partition is a model to evaluate; the steps that run or train a model take the gpu pool's slot."""
    keys = evaluation.MODEL_PARTITIONS.get_partition_keys()
    assert keys[0] == "model_go2k_v2" and "base_model" in keys
    for name in EVALUATION_NAMES:
        assert defs.resolve_assets_def(name).partitions_def == evaluation.MODEL_PARTITIONS, name
    gpu = {name for name in EVALUATION_NAMES if defs.resolve_assets_def(name).op.pool == "gpu"}
    assert gpu == {"sliced_predictions", "crop_verifier", "model_report_card"}


def test_the_evaluation_of_a_partition_publishes_every_asset_from_its_models_version(evaluated):
    """Each asset gets a version; the cache names the model version it was computed from."""
    side, mats = evaluated
    assert set(mats) == set(EVALUATION_NAMES)
    for name, mat in mats.items():
        assert mat.partition == PARTITION, name
        version = mat.metadata["version"].value
        assert version and mat.metadata["reused_version"].value is False, name
        assert version in side.lake.versions(name, PARTITION), name

    cache = mats["sliced_predictions"].metadata
    assert cache["backend"].value == "onnx" and cache["slice_size"].value == IMGSZ
    assert cache["count/frames"].value > 0 and cache["count/sliced_detections"].value > 0
    upstream = cache["upstream"].value
    assert upstream["base_model"] == _version_of(side, "base_model")
    assert upstream["go2k_split"] == _version_of(side, "go2k_split")
    assert upstream["model_export"] == mats["model_export"].metadata["version"].value


def test_inference_config_records_the_adopted_setting_and_its_scores(evaluated):
    side, mats = evaluated
    config = json.loads(Path(mats["inference_config"].metadata["config"].value).read_text())
    assert Path(mats["inference_config"].metadata["config"].value).parent.name == \
        mats["inference_config"].metadata["version"].value  # the file lies in the version folder
    assert {"conf", "postprocess", "gate", "policy", "scores", "slicing"} <= set(config)
    assert config["model"] == PARTITION and config["model_version"] == _version_of(side, "base_model")
    assert config["slicing"]["slice_size"] == IMGSZ
    assert set(config["scores"]) == {"with_gate", "without_gate"}
    for scores in config["scores"].values():
        assert {"precision", "recall", "f1", "tp", "fp", "fn"} <= set(scores)


def test_the_report_card_times_both_backends_and_draws_its_pictures(evaluated):
    """onnx is timed by the cached pass itself, torch by the card's side run."""
    side, mats = evaluated
    folder = side.home / mats["model_report_card"].metadata["lake_path"].value
    card = json.loads((folder / "report_card.json").read_text())
    speeds = {entry["backend"]: entry for entry in card["speed"]}
    assert set(speeds) == {"onnx", "torch"}
    for backend, entry in speeds.items():
        assert isinstance(entry["device"], str) and entry["device"], backend
        assert entry["ms_per_frame"] > 0, backend
    assert card["model"] == PARTITION and card["model_version"] == _version_of(side, "base_model")
    for rows in card["per_class"].values():
        assert [row["class"] for row in rows] == CLASSES
    for picture in ("confusion.png", "worst_false_positives.png", "worst_misses.png"):
        assert (folder / picture).stat().st_size > 0, picture


def test_the_cached_pass_is_reused_and_reinfer_runs_it_again(evaluated):
    side, mats = evaluated
    first = mats["sliced_predictions"].metadata["version"].value

    again = side.materialize([evaluation.sliced_predictions], partition=PARTITION)
    metadata = again.asset_materializations_for_node("sliced_predictions")[0].metadata
    assert metadata["reused_version"].value is True and metadata["version"].value == first
    assert not any("sliced inference of" in m for m in _messages(side, again.run_id))

    fresh = side.materialize([evaluation.sliced_predictions], partition=PARTITION, config={"reinfer": True})
    assert fresh.success
    assert any(m.startswith(f"sliced inference of {PARTITION}") for m in _messages(side, fresh.run_id))
    metadata = fresh.asset_materializations_for_node("sliced_predictions")[0].metadata
    assert metadata["backend"].value == "onnx" and metadata["count/sliced_detections"].value > 0


@pytest.mark.parametrize("config, error, message", [
    ({"backend": "tensorrt"}, EvaluationError, "backend 'tensorrt' is not one of"),
    ({"overlap": 1.0}, SlicingError, "overlap ratio 1.0 must be in [0, 1)"),
], ids=["unknown-backend", "overlap-1"])
def test_bad_run_config_fails_the_materialization_and_publishes_nothing(evaluated, config, error, message):
    side, _ = evaluated
    before = side.partition_entries("sliced_predictions")
    with pytest.raises(error, match=re.escape(message)):
        side.materialize([evaluation.sliced_predictions], partition=PARTITION, config=config)
    assert side.partition_entries("sliced_predictions") == before


def test_an_export_of_another_checkpoint_is_refused(evaluated, tmp_path):
    """Tampering with the lake is how the guard is reached: model_export versions by its checkpoint."""
    side, mats = evaluated
    onnx = side.home / mats["model_export"].metadata["lake_path"].value / ONNX_FILE
    other = firing_checkpoint(tmp_path / "other.pt", CLASSES, imgsz=IMGSZ, seed=1)
    (tmp_path / "other").mkdir()
    export_onnx(other, tmp_path / "other", imgsz=IMGSZ)
    original = tmp_path / "original.onnx"
    shutil.copy2(onnx, original)
    before = side.partition_entries("sliced_predictions")
    try:
        shutil.copy2(tmp_path / "other" / ONNX_FILE, onnx)
        with pytest.raises(EvaluationError, match="does not match its checkpoint"):
            side.materialize([evaluation.sliced_predictions], partition=PARTITION,
                             config={"backend": "onnx", "reinfer": True})
    finally:
        shutil.copy2(original, onnx)
    assert side.partition_entries("sliced_predictions") == before


def test_a_model_of_other_classes_fails_naming_both_class_lists(other_classes):
    """base_model accepts any detector; the evaluation refuses to score it against go2k's labels."""
    side = other_classes
    assert side.materialize([evaluation.model_export], partition=PARTITION).success
    with pytest.raises(EvaluationError) as failure:
        side.materialize([evaluation.sliced_predictions], partition=PARTITION)
    assert "['a', 'b']" in str(failure.value) and str(CLASSES) in str(failure.value)
    assert side.partition_entries("sliced_predictions") == []
    assert side.lake.versions("sliced_predictions", PARTITION) == []
