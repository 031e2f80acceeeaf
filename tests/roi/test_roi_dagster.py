"""The video-ROI assets through Dagster on a real instance with the code location's resources:
``roi_videos`` observed, ``roi_crops`` built from the demo site's ``small`` videos and
``roi_classifier`` trained on them under the ``test`` training profile (one epoch at 32 px, in
the real training child). Then each bad input through ``roi_crops``, on tiny videos of its own:
a wrong spec fails the run naming its JSON and publishes nothing; a segment past the end is
clipped with a warning and a video that cannot be opened is counted, and the run goes on."""

from __future__ import annotations

import json
import logging
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml
from roi_synthetic import LABEL_MAP, write_spec, write_video

from hoban_pipelines.assets.classifiers import SCRATCH
from hoban_pipelines.assets.inputs import roi_videos
from hoban_pipelines.assets.roi import roi_classifier, roi_crops
from hoban_pipelines.core.lake import Lake
from hoban_pipelines.definitions import defs
from hoban_pipelines.demo.roi_videos import PLANS, write_roi_videos
from hoban_pipelines.resources import LakeHandleIOManager, LakeResource, YoloRuntime
from hoban_pipelines.roi.crops import CROPS_TABLE, RULES

ASSETS = [roi_videos, roi_crops, roi_classifier]
CLASSES = ["false", "true", "unknown"]
TINY_FRAMES = 40  # at the synthetic videos' 160 x 120, MJPG
TINY_SEGMENTS = [
    {"start_frame": 0, "end_frame": 12, "label": 0},
    {"start_frame": 13, "end_frame": 29, "label": 1},
    {"start_frame": 30, "end_frame": TINY_FRAMES - 1, "label": 2},
]


@dataclass
class Lakeside:
    """One storage root, its Dagster instance, the settings naming a folder of ROI videos."""

    home: Path
    videos: Path
    instance: dg.DagsterInstance
    resources: dict

    def materialize(self, *selection, raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
        return dg.materialize(ASSETS, selection=list(selection), instance=self.instance, resources=self.resources,
                              raise_on_error=raise_on_error)

    def lake_entries(self, asset: str) -> list[str]:
        """Everything in the asset's lake folder, hidden staging folders included."""
        folder = Lake(self.home).asset_dir(asset)
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    def logs(self, run_id: str, level: int | None = None) -> list[str]:
        return [r.user_message or "" for r in self.instance.all_logs(run_id) if level is None or r.level == level]


def _lakeside(stack: ExitStack, patch: pytest.MonkeyPatch, root: Path) -> Lakeside:
    """Settings (the folder of ROI videos, the test training profile), a lake and an instance under ``root``."""
    root = root.resolve()  # the settings resolve their paths: messages name the resolved ones
    home, videos = root / "hoban_home", root / "roi_videos"
    videos.mkdir(parents=True, exist_ok=True)
    config = root / "hoban.yaml"
    config.write_text(yaml.safe_dump({"roi_videos": str(videos), "train_profile": "test"}))
    patch.setenv("HOBAN_HOME", str(home))
    patch.setenv("HOBAN_CONFIG", str(config))
    instance = stack.enter_context(dg.instance_for_test())
    resources = {**defs.resources, "lake": LakeResource(home=str(home)),
                 "io_manager": LakeHandleIOManager(home=str(home)), "yolo": YoloRuntime(device="cpu")}
    return Lakeside(home, videos, instance, resources)


@dataclass
class Trained:
    side: Lakeside
    observation: dg.AssetObservation
    crops: dg.AssetMaterialization
    classifier: dg.AssetMaterialization
    run_id: str


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The small demo videos observed, cropped and classified once."""
    with pytest.MonkeyPatch.context() as patch, ExitStack() as stack:
        side = _lakeside(stack, patch, tmp_path_factory.mktemp("roi_dagster"))
        write_roi_videos(side.videos, seed=7, profile="small")
        observed = side.materialize(roi_videos)
        assert observed.success
        (observation,) = [e.asset_observation_data.asset_observation for e in observed.all_events
                          if e.event_type == dg.DagsterEventType.ASSET_OBSERVATION]
        result = side.materialize(roi_crops, roi_classifier)
        assert result.success
        yield Trained(side, observation, result.asset_materializations_for_node("roi_crops")[0],
                      result.asset_materializations_for_node("roi_classifier")[0], result.run_id)


def test_roi_videos_observation_versions_the_folder_the_crops_are_built_from(trained):
    observation = trained.observation
    assert observation.metadata["path"].value == str(trained.side.videos)
    assert observation.metadata["files"].value == 2 * len(PLANS["small"])
    assert observation.metadata["by_suffix"].value == {".avi": len(PLANS["small"]), ".json": len(PLANS["small"])}
    assert trained.crops.metadata["upstream"].value == {"roi_videos": observation.tags["dagster/data_version"]}


def test_roi_crops_metadata_counts_crops_per_label_and_split_and_each_rule(trained):
    metadata = trained.crops.metadata
    table = pd.read_parquet(trained.side.home / metadata["lake_path"].value / CROPS_TABLE)
    assert metadata["version"].value in Lake(trained.side.home).versions("roi_crops")
    assert metadata["count/videos"].value == len(PLANS["small"]) and metadata["count/videos_unopened"].value == 0
    assert metadata["count/crops"].value == len(table) > 0
    for split in ("train", "test"):
        assert metadata[f"count/crops_{split}"].value == (table["split"] == split).sum() > 0, split
    for label in CLASSES:
        assert metadata[f"count/label_{label}"].value == (table["label"] == label).sum() > 0, label
    for rule in RULES:
        assert isinstance(metadata[f"count/dropped_{rule}"], dg.IntMetadataValue), rule
    assert all(metadata[f"count/dropped_{rule}"].value > 0
               for rule in ("outside_segments", "cooldown", "no_motion", "near_duplicate"))
    per_split = {(r.data["split"], r.data["label"]): r.data["crops"] for r in metadata["crops per split and label"].records}
    assert per_split == table.groupby(["split", "label"]).size().to_dict()
    per_rule = {r.data["rule"]: r.data["crops"] for r in metadata["dropped per rule"].records}
    assert per_rule == {rule: metadata[f"count/dropped_{rule}"].value for rule in RULES}
    per_video = metadata["crops per video"].records
    assert {(r.data["video"], r.data["group"]) for r in per_video} == {(p.name, p.group) for p in PLANS["small"]}
    # the small videos are too short for 100 crops per ROI: every shortfall is named in the warnings
    shorts = [r.data for r in per_video if r.data["short"]]
    assert shorts and all(any(f"{r['video']} roi{r['roi']}: short of {r['short']}" in w
                              for w in metadata["warnings"].value) for r in shorts)
    assert {"contact sheet false", "contact sheet true", "contact sheet unknown"} <= set(metadata)


def test_roi_classifier_metadata_holds_its_scores_as_floats(trained):
    metadata = trained.classifier.metadata
    assert metadata["reused_version"].value is False
    assert metadata["upstream"].value == {"roi_crops": trained.crops.metadata["version"].value}
    assert (metadata["epochs"].value, metadata["imgsz"].value) == (1, 32)  # the test profile
    assert metadata["count/eval_crops"].value == trained.crops.metadata["count/crops_test"].value  # the real crops
    names = ["val/accuracy"] + [f"val/{m}/{c}" for c in CLASSES for m in ("precision", "recall", "f1")]
    for name in names:
        assert isinstance(metadata[name], dg.FloatMetadataValue), name
        assert isinstance(metadata[name].value, float) and 0.0 <= metadata[name].value <= 1.0, name
    per_class = {r.data["class"]: r.data for r in metadata["per_class"].records}
    assert sorted(per_class) == CLASSES
    assert sum(r["support"] for r in per_class.values()) == metadata["count/eval_crops"].value
    for name, row in per_class.items():
        assert row["recall"] == pytest.approx(metadata[f"val/recall/{name}"].value, abs=1e-3), name
    wrong = metadata["misclassified_count"].value
    assert metadata["val/accuracy"].value == pytest.approx(1 - wrong / metadata["count/eval_crops"].value, abs=1e-3)
    assert isinstance(metadata["confusion_matrix"], dg.TableMetadataValue)
    assert len(metadata["confusion_matrix"].records) == len(CLASSES)
    for picture in ("confusion", "misclassified"):
        assert metadata[picture].value.startswith("![") and "data:image/jpeg;base64," in metadata[picture].value
        assert Path(metadata[f"{picture}/file"].value).stat().st_size > 0, picture
    assert Path(metadata["best_pt"].value).is_file()


def test_roi_classifier_confusion_matrix_rows_name_their_true_class(trained):
    metadata = trained.classifier.metadata
    support = {r.data["class"]: r.data["support"] for r in metadata["per_class"].records}
    rows = [r.data for r in metadata["confusion_matrix"].records]
    names = [column.name for column in metadata["confusion_matrix"].schema.columns]
    assert len(names) == len(set(names)) == len(CLASSES) + 1
    row_column = names[0]
    assert [row[row_column] for row in rows] == CLASSES
    assert names[1:] == [f"predicted {c}" for c in CLASSES]
    assert {row[row_column]: sum(row[c] for c in names[1:]) for row in rows} == support


def test_unchanged_inputs_reuse_the_crops_and_the_classifier(trained):
    side = trained.side
    again = side.materialize(roi_crops, roi_classifier)
    assert again.success
    crops = again.asset_materializations_for_node("roi_crops")[0].metadata
    assert crops["version"].value == trained.crops.metadata["version"].value and crops["reused_version"].value is True
    metadata = again.asset_materializations_for_node("roi_classifier")[0].metadata
    first = trained.classifier.metadata
    assert metadata["reused_version"].value is True and metadata["version"].value == first["version"].value
    assert metadata["val/accuracy"].value == first["val/accuracy"].value
    assert any("reusing it" in m for m in side.logs(again.run_id))
    assert not any(m.startswith("training roi_classifier") for m in side.logs(again.run_id))
    assert [p.name for p in (side.home / SCRATCH / "roi_classifier").iterdir()] == [trained.run_id]  # no new training
    assert Lake(side.home).versions("roi_classifier") == [first["version"].value]
    assert Lake(side.home).versions("roi_crops") == [crops["version"].value]


# ---- bad inputs through roi_crops, each on tiny videos of its own


@pytest.fixture
def lakeside(tmp_path):
    with pytest.MonkeyPatch.context() as patch, ExitStack() as stack:
        yield _lakeside(stack, patch, tmp_path)


def _tiny_video(folder: Path, name: str, offset: int = 0, **fields) -> Path:
    """A 40-frame video (a new block pattern every frame) and its spec beside it."""
    write_video(folder / f"{name}.avi", [offset + i for i in range(TINY_FRAMES)])
    return write_spec(folder, name, f"{name}.avi", **{"segments": TINY_SEGMENTS, **fields})


def _spec_error(result: dg.ExecuteInProcessResult):
    """The RoiSpecError that failed roi_crops, from the step failure's chain of causes."""
    (failure,) = result.get_step_failure_events()
    assert failure.step_key == "roi_crops"
    error = failure.step_failure_data.error
    while error is not None and error.cls_name != "RoiSpecError":
        error = error.cause
    assert error is not None, failure.step_failure_data.error.to_string()
    return error


BAD_SPECS = {
    "missing-roi": ({"roi": None}, "roi", "missing"),
    "missing-segments": ({"segments": None}, "segments", "missing"),
    "roi-outside-the-frame": ({"roi": [120, 10, 64, 48]}, "roi", "ROI [120, 10, 64, 48] lies outside the frame of"),
    "label-not-in-label-map": ({"segments": [{"start_frame": 0, "end_frame": 9, "label": 7}]}, "segments[0].label",
                               f"label id '7' is not in label_map {sorted(LABEL_MAP)}"),
}


@pytest.mark.parametrize("fields, field_name, problem", BAD_SPECS.values(), ids=BAD_SPECS.keys())
def test_a_bad_spec_fails_roi_crops_naming_its_json_and_publishes_nothing(lakeside, fields, field_name, problem):
    side = lakeside
    _tiny_video(side.videos / "simulation", "good")
    bad = _tiny_video(side.videos / "real", "bad", offset=1000)
    spec = {**json.loads(bad.read_text()), **fields}
    bad.write_text(json.dumps({key: value for key, value in spec.items() if value is not None}))

    result = side.materialize(roi_videos, roi_crops, raise_on_error=False)
    assert not result.success
    assert result.get_run_failure_event() is not None
    error = _spec_error(result)
    assert error.message.startswith(f"hoban_pipelines.roi.videos.RoiSpecError: {bad}: field '{field_name}': {problem}")
    assert side.lake_entries("roi_crops") == []  # no version, no staging folder left behind
    assert not (side.home / "handles" / "roi_crops.json").exists()
    assert side.instance.get_latest_materialization_event(dg.AssetKey("roi_crops")) is None


def test_a_segment_past_the_end_is_clipped_with_a_warning_and_the_run_succeeds(lakeside):
    side = lakeside
    segments = [*TINY_SEGMENTS[:2], {"start_frame": 30, "end_frame": 99, "label": 2}]
    spec = _tiny_video(side.videos / "simulation", "long", segments=segments)
    _tiny_video(side.videos / "real", "other", offset=1000)

    result = side.materialize(roi_videos, roi_crops)
    assert result.success
    warning = f"{spec}: segment 30-99 (unknown) ends past the video's end ({TINY_FRAMES} frames); clipped to {TINY_FRAMES - 1}"
    metadata = result.asset_materializations_for_node("roi_crops")[0].metadata
    assert warning in metadata["warnings"].value
    assert warning in side.logs(result.run_id, logging.WARNING)
    assert metadata["count/videos"].value == 2
    table = pd.read_parquet(side.home / metadata["lake_path"].value / CROPS_TABLE)
    long = table[table["video"] == "long"]
    assert long["frame"].max() <= TINY_FRAMES - 1 and (long["label"] == "unknown").any()
    assert len(Lake(side.home).versions("roi_crops")) == 1


def test_a_video_that_cannot_be_opened_is_counted_and_the_rest_go_on(lakeside):
    side = lakeside
    folder = side.videos / "simulation"
    _tiny_video(folder, "good")
    (folder / "damaged.avi").write_bytes(b"not a video at all" * 100)
    damaged = write_spec(folder, "damaged", "damaged.avi", segments=TINY_SEGMENTS)
    missing = write_spec(folder, "missing", "nowhere.avi", segments=TINY_SEGMENTS)

    result = side.materialize(roi_videos, roi_crops)
    assert result.success
    metadata = result.asset_materializations_for_node("roi_crops")[0].metadata
    assert metadata["count/videos"].value == 1 and metadata["count/videos_unopened"].value == 2
    unopened = metadata["unopened videos"].value
    assert f"{damaged}: damaged.avi (cannot be opened by OpenCV" in unopened
    assert f"{missing}: nowhere.avi (not found" in unopened
    warnings = side.logs(result.run_id, logging.WARNING)
    for spec in (damaged, missing):  # once each, as the build reports it
        assert sum(m.startswith(f"{spec}: video ") and m.endswith("; skipped") for m in warnings) == 1, warnings
    table = pd.read_parquet(side.home / metadata["lake_path"].value / CROPS_TABLE)
    assert set(table["video"]) == {"good"} and metadata["count/crops"].value == len(table) > 0
    assert len(Lake(side.home).versions("roi_crops")) == 1
