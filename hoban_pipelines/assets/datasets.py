"""Dataset versions: go2k_manual from the team's CVAT exports."""

import dagster as dg
import pandas as pd

from hoban_pipelines import dataset_checks
from hoban_pipelines.assets.common import lake_output
from hoban_pipelines.cleaning import CleaningRule
from hoban_pipelines.cvat_dataset import build_dataset, export_files
from hoban_pipelines.labelmap import LabelMap
from hoban_pipelines.lake import LakeHandle
from hoban_pipelines.reports import markdown_table, png_markdown
from hoban_pipelines.resources import LakeResource, SettingsResource

GO2K_MANUAL_CODE_VERSION = "1"


class Go2kManualConfig(dg.Config):
    """The team's cleaning numbers are the defaults; the rule is the stricter one (see README)."""

    cleaning_rule: str = "recurring_small"  # recurring_small | small_box (the team's rule) | none
    max_w: float = 0.03
    max_h: float = 0.05
    min_frames: int = 3
    min_iou: float = 0.5
    min_gap_s: float = 600.0
    sample_images: int = 6


@dg.asset(
    group_name="datasets",
    kinds={"parquet", "yolo"},
    code_version=GO2K_MANUAL_CODE_VERSION,
    deps=["cvat_exports", "snapshots"],
)
def go2k_manual(
    context: dg.AssetExecutionContext, config: Go2kManualConfig, lake: LakeResource, settings: SettingsResource
) -> dg.Output[LakeHandle]:
    """The manually labelled CCTV ground truth: every CVAT part merged, mapped, cleaned,
    as YOLO labels + Parquet manifests, unlabelled images kept as negatives."""
    site = settings.get()
    files = export_files(site.require("cvat_exports", "folder of CVAT exports"))
    image_root = site.require("snapshots", "folder of labelled snapshots")
    label_map = LabelMap.for_settings(site)
    rule = CleaningRule(
        config.cleaning_rule, config.max_w, config.max_h, config.min_frames, config.min_iou, config.min_gap_s
    )
    store = lake.get()
    meta = {"code_version": GO2K_MANUAL_CODE_VERSION, "config": config.model_dump(), "exports": [str(f) for f in files]}
    with store.new_version("go2k_manual", meta=meta) as version:
        images, boxes, report = build_dataset(
            files, version.path, label_map=label_map, rule=rule, image_root=image_root, samples=config.sample_images
        )
    for conflict in report.conflicts:
        context.log.warning(f"conflicting labels for {conflict['image']} in parts {conflict['parts']}; kept {conflict['kept']}")
    per_class = boxes["cls"].value_counts().reindex(range(len(label_map.classes)), fill_value=0)
    counts = {
        "images": len(images),
        "negatives": int((~images["image"].isin(boxes["image"])).sum()),
        "boxes": len(boxes),
        "removed_by_cleaning": report.removed,
        **{f"boxes_{name}": int(per_class.iloc[i]) for i, name in enumerate(label_map.classes)},
    }
    part_rows = [
        {"part": part, "images": info["images"], "with boxes": info["images_with_boxes"], **info["boxes_by_class"]}
        for part, info in report.parts.items()
    ]
    handle = store.handle_for(version.final_path, asset="go2k_manual", version=version.version, counts=counts,
                              extra={"classes": label_map.classes})
    plots = version.final_path / "plots"
    return lake_output(handle, {
        "parts": dg.MetadataValue.md(markdown_table(part_rows, ["part", "images", "with boxes", *label_map.classes])),
        "classes": dg.MetadataValue.json(dict(enumerate(label_map.classes))),
        "cleaning": dg.MetadataValue.json({"rule": config.cleaning_rule, "removed": report.removed,
                                           "would_remove_by_rule": report.would_remove}),
        "conflicts": dg.MetadataValue.json(report.conflicts),
        "images_linked": report.linked,
        "images_copied": report.copied,
        "box_sizes": dg.MetadataValue.md(png_markdown(plots / "box_sizes.png", "box sizes")),
        "samples": dg.MetadataValue.md(png_markdown(plots / "samples.png", "samples")),
        "reused_version": version.reused,
    })


def _manifests(handle: LakeHandle, lake: LakeResource):
    root = handle.resolve(lake.get().home)
    return root, pd.read_parquet(root / "manifests" / "images.parquet"), pd.read_parquet(root / "manifests" / "boxes.parquet")


def _result(problems: list[str], what: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or f"all {what}")},
    )


@dg.asset_check(asset=go2k_manual, blocking=True, description="Every box inside its image with positive area.")
def go2k_manual_boxes_inside_images(go2k_manual: LakeHandle, lake: LakeResource) -> dg.AssetCheckResult:
    _, images, boxes = _manifests(go2k_manual, lake)
    return _result(dataset_checks.boxes_inside_images(boxes, images), "boxes inside their images")


@dg.asset_check(asset=go2k_manual, blocking=True, description="Every class index names a project class.")
def go2k_manual_classes_valid(go2k_manual: LakeHandle, lake: LakeResource) -> dg.AssetCheckResult:
    _, _, boxes = _manifests(go2k_manual, lake)
    return _result(dataset_checks.classes_valid(boxes, go2k_manual.extra["classes"]), "classes valid")


@dg.asset_check(asset=go2k_manual, blocking=True, description="No image content under two names.")
def go2k_manual_no_duplicate_content(go2k_manual: LakeHandle, lake: LakeResource) -> dg.AssetCheckResult:
    _, images, _ = _manifests(go2k_manual, lake)
    return _result(dataset_checks.duplicate_content(images), "images distinct")


@dg.asset_check(asset=go2k_manual, blocking=True, description="Every referenced image and label file is present.")
def go2k_manual_files_present(go2k_manual: LakeHandle, lake: LakeResource) -> dg.AssetCheckResult:
    root, images, _ = _manifests(go2k_manual, lake)
    return _result(dataset_checks.files_present(root, images), "files present")
