"""The labels stage as assets: go2k_manual from the team's CVAT exports, and its blocking checks."""

import dagster as dg
import pandas as pd

from hoban_pipelines.assets.publishing import lake_output, publish
from hoban_pipelines.assets.run_config import config_class, parameters_of
from hoban_pipelines.core.lake import LakeHandle
from hoban_pipelines.datasets import checks as dataset_checks
from hoban_pipelines.labels.cleaning import CleaningRule
from hoban_pipelines.labels.cvat_import import build_labelled_set, export_files
from hoban_pipelines.labels.label_map import LabelMap
from hoban_pipelines.resources import LakeResource, SettingsResource


CLEANING_CONFIG = {"rule": "cleaning_rule"}
# the team's cleaning numbers are the defaults; the rule is the stricter one (see README)
Go2kManualConfig = config_class(
    "Go2kManualConfig", "How go2k_manual cleans pre-annotation false boxes (cleaning_rule: recurring_small, "
    "small_box: the team's rule, or none) and how many sample images it draws.",
    CleaningRule, rename=CLEANING_CONFIG, extra={"sample_images": (int, 6)},
)


@dg.asset(group_name="datasets", kinds={"parquet", "yolo"}, code_version="1", deps=["cvat_exports", "snapshots"])
def go2k_manual(
    context: dg.AssetExecutionContext, config: Go2kManualConfig, lake: LakeResource, settings: SettingsResource
) -> dg.Output[LakeHandle]:
    """The manually labelled CCTV ground truth: every CVAT part merged, mapped, cleaned,
    as YOLO labels + Parquet manifests, unlabelled images kept as negatives."""
    configured = settings.get()
    files = export_files(configured.require("cvat_exports", "folder of CVAT exports"))
    image_root = configured.require("snapshots", "folder of labelled snapshots")
    label_map = LabelMap.for_settings(configured)
    rule = parameters_of(config, CleaningRule, rename=CLEANING_CONFIG)
    published = publish(
        context, lake,
        lambda out: build_labelled_set(files, out, label_map=label_map, rule=rule, image_root=image_root,
                                       samples=config.sample_images),
        params={**config.model_dump(), "exports": [str(f) for f in files]}, classes=label_map.classes,
    )
    return lake_output(published)


def _manifests(handle: LakeHandle, lake: LakeResource):
    root = handle.resolve(lake.get().home)
    return root, pd.read_parquet(root / "manifests" / "images.parquet"), pd.read_parquet(root / "manifests" / "boxes.parquet")


def result_of(problems: list[str], what: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or f"all {what}")},
    )


@dg.asset_check(asset=go2k_manual, blocking=True, description="Every box inside its image with positive area.")
def go2k_manual_boxes_inside_images(go2k_manual: LakeHandle, lake: LakeResource) -> dg.AssetCheckResult:
    _, images, boxes = _manifests(go2k_manual, lake)
    return result_of(dataset_checks.boxes_inside_images(boxes, images), "boxes inside their images")


@dg.asset_check(asset=go2k_manual, blocking=True, description="Every class index names a project class.")
def go2k_manual_classes_valid(go2k_manual: LakeHandle, lake: LakeResource) -> dg.AssetCheckResult:
    _, _, boxes = _manifests(go2k_manual, lake)
    return result_of(dataset_checks.classes_valid(boxes, go2k_manual.classes), "classes valid")


@dg.asset_check(asset=go2k_manual, blocking=True, description="No image content under two names.")
def go2k_manual_no_duplicate_content(go2k_manual: LakeHandle, lake: LakeResource) -> dg.AssetCheckResult:
    _, images, _ = _manifests(go2k_manual, lake)
    return result_of(dataset_checks.duplicate_content(images), "images distinct")


@dg.asset_check(asset=go2k_manual, blocking=True, description="Every referenced image and label file is present.")
def go2k_manual_files_present(go2k_manual: LakeHandle, lake: LakeResource) -> dg.AssetCheckResult:
    root, images, _ = _manifests(go2k_manual, lake)
    return result_of(dataset_checks.files_present(root, images), "files present")
