"""The demo graph end to end on the `small` profile, through Dagster on a real instance."""

from __future__ import annotations

import shutil
import time

import dagster as dg
import pandas as pd
import pytest

from hoban_pipelines.assets import labels
from hoban_pipelines.assets.labels import go2k_manual
from hoban_pipelines.definitions import defs
from hoban_pipelines.demo.reviewer import review_package
from hoban_pipelines.demo_run import run_demo
from hoban_pipelines.review.packages import last_task_annotations
from hoban_pipelines.resources import LakeHandleIOManager, LakeResource, SettingsResource, TrainingChild, YoloRuntime
from hoban_pipelines.core.settings import ConfigError

EXPECTED_ASSETS = {
    "demo_site", "cvat_exports", "snapshots", "base_dataset", "capture_folders", "go2k_manual", "go2k_split", "go2k_v2_mix",
    "dataset_helmet_quick", "dataset_helmet_hybrid", "roi_videos", "roi_crops", "roi_classifier", "base_model", "model_go2k_finetune_sgd", "model_go2k_finetune_adamw", "model_go2k_v2",
    "model_go2k_v3", "model_comparison",
}
CAPTURE_DAYS = ("2026-02-11", "2026-02-12")  # the demo site's two days
CAPTURE_ASSETS = {"captures", "captures_dedup", "captures_selection", "pseudo_labels", "cvat_review_packages",
                  "reviewed_exports", "reviewed_labels", "go2k_v4_mix", "model_go2k_v4", "production_model"}
EVALUATION_ASSETS = {"model_export", "sliced_predictions", "conf_sweep", "postprocess_sweep", "gate_sweep",
                     "inference_config", "model_report_card", "verifier_crops", "crop_verifier"}
INPUTS = ("cvat_exports", "snapshots", "base_dataset", "capture_folders", "roi_videos")


def test_definitions_load_with_every_asset_and_check():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert EXPECTED_ASSETS | EVALUATION_ASSETS | CAPTURE_ASSETS <= keys
    checks = {key.name for key in graph.asset_check_keys}
    assert {"go2k_manual_boxes_inside_images", "go2k_manual_classes_valid",
            "go2k_manual_no_duplicate_content", "go2k_manual_files_present", "go2k_split_no_leakage",
            "go2k_split_classes_in_every_split", "go2k_split_lists_resolve", "go2k_v2_mix_no_leakage",
            "go2k_v2_mix_classes_in_every_split",
            "go2k_v2_mix_lists_resolve", "dataset_helmet_quick_lists_resolve", "dataset_helmet_quick_no_leakage",
            "dataset_helmet_quick_classes_in_every_split"} <= checks


def test_demo_runs_the_whole_graph_and_a_second_run_reuses_everything(small_config, hoban_home):
    lines: list[str] = []
    with dg.instance_for_test() as instance:
        assert run_demo(instance=instance, echo=lines.append)
        for key in EXPECTED_ASSETS - set(INPUTS):
            assert instance.get_latest_materialization_event(dg.AssetKey(key)) is not None, key
        for key in INPUTS:
            record = instance.fetch_observations(dg.AssetKey(key), limit=1).records
            assert record, key
        mat = instance.get_latest_materialization_event(dg.AssetKey("go2k_manual")).asset_materialization
        assert mat.metadata["count/images"].value > 10
        assert mat.metadata["count/removed_by_cleaning"].value > 0
        assert "data:image/jpeg;base64," in mat.metadata["samples"].value
        version = mat.metadata["version"].value
        lake = hoban_home / "lake" / "go2k_manual"
        assert [p.name for p in lake.iterdir() if not p.name.startswith(".")] == [version]
        for asset, check in [("go2k_manual", "go2k_manual_files_present"), ("go2k_split", "go2k_split_no_leakage"),
                             ("go2k_v2_mix", "go2k_v2_mix_no_leakage"), ("go2k_v2_mix", "go2k_v2_mix_classes_in_every_split"),
                             ("dataset_helmet_quick", "dataset_helmet_quick_lists_resolve"),
                             ("dataset_helmet_quick", "dataset_helmet_quick_no_leakage"),
                             ("dataset_helmet_quick", "dataset_helmet_quick_classes_in_every_split")]:
            history = instance.event_log_storage.get_asset_check_execution_history(
                dg.AssetCheckKey(dg.AssetKey(asset), check), limit=1
            )
            assert history and history[0].status.value == "SUCCEEDED", check
        mix = instance.get_latest_materialization_event(dg.AssetKey("go2k_v2_mix")).asset_materialization
        upstream = mix.metadata["upstream"].value
        split_version = instance.get_latest_materialization_event(dg.AssetKey("go2k_split")).asset_materialization.metadata["version"].value
        assert upstream["go2k_split"] == split_version and upstream["go2k_manual"] == version
        assert 0 < mix.metadata["domain_share_of_training"].value < 1
        assert any("asked for 8000 images" in w for w in mix.metadata["warnings"].value)
        model = instance.get_latest_materialization_event(dg.AssetKey("model_go2k_v2")).asset_materialization
        for key in ("val/mAP50", "val/mAP50-95", "val/precision", "val/recall"):
            assert isinstance(model.metadata[key].value, float), key
        assert model.metadata["upstream"].value["go2k_v2_mix"] == mix.metadata["version"].value
        assert model.metadata["upstream"].value["go2k_split"] == split_version  # scored on go2k valid
        assert model.metadata["eval_data"].value.endswith(f"go2k_split/{split_version}/data.yaml")
        v3 = instance.get_latest_materialization_event(dg.AssetKey("model_go2k_v3")).asset_materialization
        assert v3.metadata["recipe"].value["tile"] == 1280 and v3.metadata["eval_imgsz"].value > v3.metadata["imgsz"].value
        model_dir = hoban_home / model.metadata["lake_path"].value
        scratch = next((hoban_home / "runs" / "model_go2k_v2").iterdir())
        assert (scratch / "weights" / "last.pt").is_file() and not (scratch / "data").exists()
        assert (model_dir / "weights" / "best.pt").is_file() and (model_dir / "curves.png").is_file()
        # the demo evaluates its go2k_v2 (and, after the review round, go2k_v4): one partition of every
        # evaluation asset each, computed from that model
        def evaluated(key: str, model_name: str = "model_go2k_v2"):
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[model_name]), limit=1).records
            assert records, (key, model_name)
            return records[0].asset_materialization

        for key in EVALUATION_ASSETS:
            assert evaluated(key).partition == "model_go2k_v2" and evaluated(key, "model_go2k_v4"), key
        cache = evaluated("sliced_predictions")
        assert cache.metadata["upstream"].value["model_go2k_v2"] == model.metadata["version"].value
        assert cache.metadata["upstream"].value["go2k_split"] == split_version
        adopted = evaluated("inference_config")
        assert adopted.metadata["policy"].value.startswith("precision_at_recall")
        comparison = instance.get_latest_materialization_event(dg.AssetKey("model_comparison")).asset_materialization
        compared = {record.data["model"]: record.data for record in comparison.metadata["models"].records}
        assert {"model_go2k_finetune_adamw", "model_go2k_v3"} <= set(compared)
        assert isinstance(comparison.metadata["per_class"], dg.TableMetadataValue)
        # the sliced columns for the evaluated model only
        assert "sliced_f1" in compared["model_go2k_v2"] and compared["model_go2k_v2"]["onnx_ms_per_frame"] > 0
        assert compared["model_go2k_v3"].get("sliced_f1") is None
        # the crop classifiers: the ROI classifier, each evaluated model's verifier and its rows in gate_sweep
        roi = instance.get_latest_materialization_event(dg.AssetKey("roi_classifier")).asset_materialization
        assert all(isinstance(roi.metadata[k].value, float) for k in ("val/accuracy", "val/f1/true", "val/recall/false"))
        crops = instance.get_latest_materialization_event(dg.AssetKey("roi_crops")).asset_materialization
        assert roi.metadata["upstream"].value["roi_crops"] == crops.metadata["version"].value
        for model_name in ("model_go2k_v2", "model_go2k_v4"):
            verifier = evaluated("crop_verifier", model_name)
            assert isinstance(verifier.metadata["val/accuracy"].value, float), model_name
            assert verifier.metadata["upstream"].value["verifier_crops"] == evaluated(
                "verifier_crops", model_name).metadata["version"].value
        sweep = evaluated("gate_sweep")
        assert all(isinstance(sweep.metadata[f"verifier/{k}"].value, float)
                   for k in ("precision", "recall", "f1", "ms_per_frame"))
        assert "the full-image gate" in sweep.metadata["verifier_verdict"].value
        # the hybrid recipe: labelled by go2k_v2's version, every box with its origin
        hybrid = instance.get_latest_materialization_event(dg.AssetKey("dataset_helmet_hybrid")).asset_materialization
        assert hybrid.metadata["upstream"].value["model_go2k_v2"] == model.metadata["version"].value
        hybrid_boxes = pd.read_parquet(hoban_home / hybrid.metadata["lake_path"].value / "manifests" / "boxes.parquet")
        assert set(hybrid_boxes["origin"]) <= {"model", "source"} and len(hybrid_boxes)
        assert isinstance(hybrid.metadata["boxes_by_origin"], dg.TableMetadataValue)
        # every demo day ingested, one partition each
        for day in CAPTURE_DAYS:
            ingested = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey("captures"), asset_partitions=[day]), limit=1).records
            assert ingested and ingested[0].asset_materialization.metadata["count/frames"].value > 0, day
            deduped = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey("captures_dedup"), asset_partitions=[day]), limit=1).records
            assert deduped and deduped[0].asset_materialization.metadata["count/frozen"].value > 0, day
        # one review round: selection, pseudo-labels by go2k_v2's adopted setting, CVAT packages
        selection = instance.get_latest_materialization_event(dg.AssetKey("captures_selection")).asset_materialization
        assert selection.metadata["count/frames"].value > 0
        assert set(selection.metadata["upstream"].value) == {f"captures_dedup/{day}" for day in CAPTURE_DAYS} | {"go2k_manual"}
        pseudo = instance.get_latest_materialization_event(dg.AssetKey("pseudo_labels")).asset_materialization
        assert pseudo.metadata["count/frames"].value == selection.metadata["count/frames"].value
        assert pseudo.metadata["count/boxes_after_gate"].value <= pseudo.metadata["count/boxes_before_gate"].value
        assert pseudo.metadata["upstream"].value["inference_config"] == adopted.metadata["version"].value
        packages = instance.get_latest_materialization_event(dg.AssetKey("cvat_review_packages")).asset_materialization
        assert packages.metadata["count/images"].value == (
            mat.metadata["count/images"].value + selection.metadata["count/frames"].value)
        # the review loop: go2k_v2 promoted first; the simulated reviewer's export imported once through the
        # sensor's run request; the reviewer-change metrics are what the reviewer did; go2k_v4 retrained and decided
        first = instance.fetch_materializations(dg.AssetKey("production_model"), limit=10,
                                                ascending=True).records[0].asset_materialization
        assert first.metadata["model"].value == "model_go2k_v2"
        imported = instance.get_latest_materialization_event(dg.AssetKey("reviewed_labels")).asset_materialization
        task_xml = last_task_annotations(hoban_home / packages.metadata["lake_path"].value)
        did = review_package(task_xml, hoban_home / "again.zip", hoban_home / "demo_site", seed=7)
        for change in ("kept", "relabelled", "moved", "deleted", "added"):
            assert imported.metadata[f"count/{change}"].value == did[change], change
        retrained = instance.get_latest_materialization_event(dg.AssetKey("model_go2k_v4")).asset_materialization
        assert retrained.metadata["upstream"].value["model_go2k_v2"] == model.metadata["version"].value
        assert retrained.metadata["upstream"].value["go2k_v4_mix"]
        v4_mix = instance.get_latest_materialization_event(dg.AssetKey("go2k_v4_mix")).asset_materialization
        assert v4_mix.metadata["count/reviewed_images"].value == sum(name.startswith("captures/")
                                                                     for name in did["per_image"])
        decision = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey("production_model"), "candidate_beats_production"), limit=1)[0]
        figures = decision.event.dagster_event.event_specific_data.metadata
        assert figures["candidate"].value == "model_go2k_v4" and figures["production"].value == "model_go2k_v2"
        assert isinstance(figures["candidate_f1"].value, float) and isinstance(figures["production_f1"].value, float)
        # rolling back is one materialization naming an earlier production version
        rolled = defs.resolve_job_def("promotion_job").execute_in_process(
            instance=instance, run_config={"ops": {"production_model": {"config": {
                "rollback_to": first.metadata["version"].value}}}})
        assert rolled.success
        restored = instance.get_latest_materialization_event(dg.AssetKey("production_model")).asset_materialization
        assert restored.metadata["model"].value == "model_go2k_v2" and "rollback" in restored.metadata["reason"].value
        # the review-value policy values every candidate with the detector; pseudo_labels then reads that cache
        half = selection.metadata["count/candidates"].value // 2
        valued = defs.resolve_job_def("review_round_job").execute_in_process(
            instance=instance, run_config={"ops": {"captures_selection": {"config": {"policy": "review_value",
                                                                                     "target": half}}}})
        assert valued.success
        by_value = instance.get_latest_materialization_event(dg.AssetKey("captures_selection")).asset_materialization
        assert by_value.metadata["count/frames"].value == half
        assert (by_value.metadata["review_value_mean_review_value"].value
                >= by_value.metadata["time_uniform_mean_review_value"].value)
        relabelled = instance.get_latest_materialization_event(dg.AssetKey("pseudo_labels")).asset_materialization
        assert relabelled.metadata["inferred"].value is False and relabelled.metadata["count/frames"].value == half
        recipe = instance.get_latest_materialization_event(dg.AssetKey("dataset_helmet_quick")).asset_materialization
        assert recipe.metadata["upstream"].value["go2k_manual"] == version
        assert any("quota 400" in w for w in recipe.metadata["warnings"].value)

        second_run = time.time()
        assert run_demo(instance=instance, echo=lines.append)
        again = instance.get_latest_materialization_event(dg.AssetKey("go2k_manual")).asset_materialization
        assert again.metadata["version"].value == version and again.metadata["reused_version"].value is True
        site = instance.get_latest_materialization_event(dg.AssetKey("demo_site")).asset_materialization
        assert site.metadata["status"].value == "up to date"
        # the same jobs on the same upstream versions are not trained again
        for asset in ("base_model", "model_go2k_v2", "model_export", "sliced_predictions", "model_report_card",
                      "pseudo_labels", "roi_classifier", "crop_verifier", "dataset_helmet_hybrid"):
            rerun = instance.get_latest_materialization_event(dg.AssetKey(asset)).asset_materialization
            assert rerun.metadata["reused_version"].value is True, asset
            key = "count/frames" if asset in ("sliced_predictions", "model_report_card", "pseudo_labels") else "version"
            assert rerun.metadata[key].value, asset
        # nothing publishes a new version the second time (a timing inside a version would make one)
        for key in instance.get_asset_keys():
            event = instance.get_latest_materialization_event(key)
            if event and event.timestamp >= second_run and "reused_version" in event.asset_materialization.metadata:
                assert event.asset_materialization.metadata["reused_version"].value is True, key.to_user_string()
        assert len(list((hoban_home / "runs" / "model_go2k_v2").iterdir())) == 1
        # the export was imported once: the second run's sensor ticks asked for the same run key
        imports = instance.get_run_records(dg.RunsFilter(job_name="review_import_job"))
        assert len(imports) == 1 and imports[0].dagster_run.is_success
    assert any("done." in line for line in lines)


def _resources(home):
    return {
        "lake": LakeResource(home=str(home)),
        "io_manager": LakeHandleIOManager(home=str(home)),
        "settings": SettingsResource(),
    }


def test_go2k_manual_with_a_missing_export_folder_names_path_and_setting(hoban_home):
    with dg.instance_for_test() as instance:
        with pytest.raises(ConfigError, match=r"demo_site/cvat_exports does not exist \(setting 'cvat_exports'"):
            dg.materialize([go2k_manual], instance=instance, resources=_resources(hoban_home))
    assert not (hoban_home / "lake" / "go2k_manual").exists() or not any(
        p for p in (hoban_home / "lake" / "go2k_manual").iterdir() if not p.name.startswith(".tmp")
    )


def test_duplicate_content_fails_the_blocking_check(small_site, hoban_home, tmp_path, monkeypatch):
    snapshots = tmp_path / "snapshots"
    shutil.copytree(small_site / "snapshots", snapshots)
    exports = tmp_path / "exports"
    exports.mkdir()
    part = (small_site / "cvat_exports" / "go2k_part1.xml").read_text()
    first = part.split('name="', 1)[1].split('"', 1)[0]
    copy = first.replace(".jpg", "_copy.jpg")
    shutil.copy(snapshots / first, snapshots / copy)
    image_element = part[part.index("<image "):part.index("</image>") + len("</image>")]
    twin = image_element.replace(f'name="{first}"', f'name="{copy}"').replace('id="', 'id="9', 1)
    (exports / "go2k_part1.xml").write_text(part.replace("</annotations>", twin + "\n</annotations>"))
    config = tmp_path / "hoban.yaml"
    config.write_text(f"cvat_exports: {exports}\nsnapshots: {snapshots}\n")
    monkeypatch.setenv("HOBAN_CONFIG", str(config))
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [go2k_manual, *dg.load_asset_checks_from_modules([labels])],
            instance=instance, resources=_resources(hoban_home), raise_on_error=False,
        )
        evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
        assert evaluations["go2k_manual_no_duplicate_content"].passed is False
        assert copy in evaluations["go2k_manual_no_duplicate_content"].metadata["problems"].value
        assert evaluations["go2k_manual_boxes_inside_images"].passed
        assert not result.success  # a failed blocking check fails the run, so nothing downstream trains on it
    images = pd.read_parquet(next((hoban_home / "lake" / "go2k_manual").glob("2*")) / "manifests" / "images.parquet")
    assert images["sha256"].duplicated().sum() == 1


def test_base_model_from_a_configured_checkpoint_is_versioned_by_sha256(hoban_home, tmp_path, monkeypatch):
    from hoban_pipelines.assets.training import base_model
    from hoban_pipelines.core.lake import file_sha256
    from hoban_pipelines.training.recipes import TrainingError

    checkpoint = tmp_path / "v13 stage2 best.pt"
    config = tmp_path / "hoban.yaml"
    config.write_text(f"base_checkpoint: '{checkpoint}'\n")
    monkeypatch.setenv("HOBAN_CONFIG", str(config))
    resources = {**_resources(hoban_home), "yolo": YoloRuntime(), "training_child": TrainingChild()}
    with dg.instance_for_test() as instance:
        with pytest.raises(TrainingError, match="v13 stage2 best.pt"):
            dg.materialize([base_model], instance=instance, resources=resources)
        from ultralytics import YOLO

        YOLO("yolov8n.yaml").save(checkpoint)  # an untrained checkpoint is still a checkpoint
        result = dg.materialize([base_model], instance=instance, resources=resources)
        handle = result.output_for_node("base_model")
        mat = instance.get_latest_materialization_event(dg.AssetKey("base_model")).asset_materialization
        assert mat.metadata["sha256"].value == file_sha256(checkpoint)
        assert file_sha256(hoban_home / handle.path / "weights" / "best.pt") == file_sha256(checkpoint)


def test_recipes_are_run_config_with_the_teams_numbers_as_defaults():
    from dataclasses import asdict

    from hoban_pipelines.assets.training import MODELS, configured_recipe, recipe_config
    from hoban_pipelines.training.recipes import RECIPES

    for asset, (recipe_name, _) in MODELS.items():
        recipe = RECIPES[recipe_name]
        config = recipe_config(recipe)()
        assert configured_recipe(recipe, config) == recipe, asset
        schema = defs.resolve_assets_def(asset).op.config_schema.config_type
        assert schema.fields["lr0"].default_value == recipe.lr0, asset
    changed = configured_recipe(RECIPES["go2k_v2"], recipe_config(RECIPES["go2k_v2"])(epochs=3, lr0=0.01))
    assert asdict(changed) == {**asdict(RECIPES["go2k_v2"]), "epochs": 3, "lr0": 0.01}
