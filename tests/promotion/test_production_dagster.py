"""production_model through Dagster on a real instance, on lake versions of two models and their
report cards (written here as the evaluation writes them, so no training runs): the first model
is promoted, a worse candidate is not and the check says by how much, a better one is, and a
candidate without a card is refused with what to run."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from hoban_pipelines.assets.promotion import CHECK, production_model
from hoban_pipelines.core.lake import Lake, write_text_atomic
from hoban_pipelines.evaluation.builds import REPORT_CARD_FILE
from hoban_pipelines.promotion.decide import PromotionError, read_promotion
from hoban_pipelines.resources import LakeHandleIOManager, LakeResource

SPLIT = "20261201T000000Z-split0000000"


def _model(home: Path, name: str, f1: float, seed: str) -> str:
    """A model version (its record as the IO manager keeps it) and a report card of that version."""
    lake = Lake(home)
    with lake.new_version(name, meta={"params": {}, "upstream": {}, "classes": []}) as model:
        (model.path / "weights").mkdir()
        (model.path / "weights" / "best.pt").write_text(seed)
    handle = lake.handle(name, model.version)
    write_text_atomic(home / "handles" / f"{name}.json", handle.to_json())
    card = {"adopted": {"precision": f1, "recall": f1, "f1": f1, "map50": 0.5}, "speed": [],
            "setting_name": "conf 0.5, NMS/IOS/0.4, no gate"}
    with lake.new_version("model_report_card", partition=name,
                          meta={"params": {}, "upstream": {name: model.version, "go2k_split": SPLIT}}) as written:
        (written.path / REPORT_CARD_FILE).write_text(json.dumps(card))
    return model.version


def _decide(home: Path, instance, **config):
    return dg.materialize([production_model], instance=instance, raise_on_error=False,
                          resources={"lake": LakeResource(home=str(home)), "io_manager": LakeHandleIOManager(home=str(home))},
                          run_config={"ops": {"production_model": {"config": config}}})


def _check(instance):
    history = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("production_model"), CHECK), limit=1)
    evaluation = history[0].event.dagster_event.event_specific_data
    return evaluation.passed, evaluation.severity, {k: v.value for k, v in evaluation.metadata.items()}


def test_promotion_decisions_on_a_real_instance(hoban_home):
    v2 = _model(hoban_home, "model_go2k_v2", 0.80, "v2")
    _model(hoban_home, "model_go2k_v4", 0.75, "worse")
    with dg.instance_for_test() as instance:
        assert _decide(hoban_home, instance, candidate="model_go2k_v2").success
        first = instance.get_latest_materialization_event(dg.AssetKey("production_model")).asset_materialization
        assert first.metadata["model"].value == "model_go2k_v2" and "first model" in first.metadata["reason"].value
        assert read_promotion(hoban_home / first.metadata["lake_path"].value)["production"]["version"] == v2

        worse = _decide(hoban_home, instance, candidate="model_go2k_v4")
        assert worse.success  # a rejection is a decision, not a failed run
        passed, severity, figures = _check(instance)
        assert not passed and severity == dg.AssetCheckSeverity.WARN
        assert figures["gain"] == pytest.approx(-0.05) and figures["production_f1"] == pytest.approx(0.80)
        assert "0.050 below production's 0.800" in figures["decision"]
        assert instance.get_latest_materialization_event(dg.AssetKey("production_model")).asset_materialization \
            .metadata["version"].value == first.metadata["version"].value  # production stays as it was
        assert _decide(hoban_home, instance, candidate="model_go2k_v4", tolerance=0.06).success
        assert _check(instance)[0]  # within the tolerance: promoted
        promoted = instance.get_latest_materialization_event(dg.AssetKey("production_model")).asset_materialization
        assert promoted.metadata["model"].value == "model_go2k_v4"


def test_a_candidate_without_a_report_card_is_refused_with_what_to_run(hoban_home):
    lake = Lake(hoban_home)
    with lake.new_version("model_go2k_v4", meta={"params": {}, "upstream": {}, "classes": []}) as model:
        (model.path / "weights").mkdir()
    write_text_atomic(hoban_home / "handles" / "model_go2k_v4.json",
                      lake.handle("model_go2k_v4", model.version).to_json())
    with dg.instance_for_test() as instance:
        with pytest.raises(PromotionError, match="run evaluation_job for model_go2k_v4"):
            dg.materialize([production_model], instance=instance,
                           resources={"lake": LakeResource(home=str(hoban_home)),
                                      "io_manager": LakeHandleIOManager(home=str(hoban_home))})
