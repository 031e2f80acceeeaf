"""Dataset versions: go2k_manual from the team's CVAT exports."""

from pathlib import Path

import dagster as dg
import pandas as pd

from hoban_pipelines.datasets import checks as dataset_checks
from hoban_pipelines.datasets import near_duplicates as dedup
from hoban_pipelines.assets.publishing import lake_output
from hoban_pipelines.labels.cleaning import CleaningRule
from hoban_pipelines.labels.cvat_import import build_dataset, export_files
from hoban_pipelines.labels.label_map import LabelMap
from hoban_pipelines.core.fingerprints import fingerprint_folder
from hoban_pipelines.core.lake import LakeHandle, file_sha256
from hoban_pipelines.datasets.mix import MixRecipe, SplitRecipe, assemble_mix, split_manual, with_box_counts, write_lists, write_mix
from hoban_pipelines.core.pictures import markdown_table, png_markdown
from hoban_pipelines.resources import LakeResource, SettingsResource
from hoban_pipelines.datasets.split import time_groups
from hoban_pipelines.core.yolo_format import YoloFormatError, list_yolo_dataset, read_class_names

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
    return result_of(dataset_checks.classes_valid(boxes, go2k_manual.extra["classes"]), "classes valid")


@dg.asset_check(asset=go2k_manual, blocking=True, description="No image content under two names.")
def go2k_manual_no_duplicate_content(go2k_manual: LakeHandle, lake: LakeResource) -> dg.AssetCheckResult:
    _, images, _ = _manifests(go2k_manual, lake)
    return result_of(dataset_checks.duplicate_content(images), "images distinct")


@dg.asset_check(asset=go2k_manual, blocking=True, description="Every referenced image and label file is present.")
def go2k_manual_files_present(go2k_manual: LakeHandle, lake: LakeResource) -> dg.AssetCheckResult:
    root, images, _ = _manifests(go2k_manual, lake)
    return result_of(dataset_checks.files_present(root, images), "files present")


BURST_SECONDS = SplitRecipe.burst_seconds


class Go2kSplitConfig(dg.Config):
    valid_fraction: float = 0.2
    seed: int = 0
    burst_seconds: float = BURST_SECONDS  # frames of one camera this close never straddle the split
    similarity: float = dedup.DEFAULT_THRESHOLD  # nor do thumbnails this similar


@dg.asset(group_name="datasets", kinds={"parquet", "yolo"}, code_version="1")
def go2k_split(
    context: dg.AssetExecutionContext, config: Go2kSplitConfig, lake: LakeResource, go2k_manual: LakeHandle
) -> dg.Output[LakeHandle]:
    """go2k_manual split 80/20 into train and valid, seeded, stratified by class, with
    near-duplicate and same-burst frames kept on one side."""
    store = lake.get()
    root, images, boxes = _manifests(go2k_manual, lake)
    classes = go2k_manual.extra["classes"]
    recipe = SplitRecipe(config.valid_fraction, config.seed, config.burst_seconds, config.similarity)
    split = with_box_counts(split_manual(images, boxes, root, len(classes), recipe), boxes, classes)
    entries = split.assign(path=[str(root / p) for p in split["path"]], label_path=[str(root / p) for p in split["label_path"]])
    meta = {"code_version": "1", "config": config.model_dump(), "upstream": {"go2k_manual": go2k_manual.version}}
    with store.new_version("go2k_split", meta=meta) as version:
        write_lists(entries, version.path, classes)
        (version.path / "manifests").mkdir()
        entries.to_parquet(version.path / "manifests" / "split.parquet", index=False)
    per_split = _split_table(entries, classes)
    counts = {f"{row['split']}_images": row["images"] for row in per_split}
    handle = store.handle_for(version.final_path, asset="go2k_split", version=version.version, counts=counts,
                              extra={"classes": classes, "upstream": meta["upstream"]})
    return lake_output(handle, {
        "splits": dg.MetadataValue.md(markdown_table(per_split, ["split", "images", "groups", *classes])),
        "groups": int(split["group"].nunique()),
        "upstream/go2k_manual": go2k_manual.version,
    })


def _split_table(entries: pd.DataFrame, classes: list[str]) -> list[dict]:
    return [
        {"split": split, "images": len(group), "groups": group["group"].nunique(),
         **{name: int(group[f"boxes_{name}"].sum()) for name in classes}}
        for split, group in entries.groupby("split")
    ]


class MixConfig(dg.Config):
    """The team's go2k_v2 numbers; clamped with a warning when the data has fewer images."""

    base_train: int = 8000
    base_valid: int = 1000
    domain_oversample: int = 8
    seed: int = 0


@dg.asset(group_name="datasets", kinds={"yolo"}, code_version="1", deps=["base_dataset"])
def go2k_v2_mix(
    context: dg.AssetExecutionContext, config: MixConfig, lake: LakeResource, settings: SettingsResource,
    go2k_split: LakeHandle,
) -> dg.Output[LakeHandle]:
    """The go2k_v2 training mix: a base ("v13") subsample plus go2k train oversampled, as list
    files (no image bytes copied) with the exact upstream versions recorded."""
    site = settings.get()
    base_root = site.require("base_dataset", "YOLO dataset folder (with data.yaml)")
    base = list_yolo_dataset(base_root)
    classes = go2k_split.extra["classes"]
    if base.classes != classes:
        raise YoloFormatError(
            f"{base_root / 'data.yaml'} names {base.classes} but the project's classes are {classes}; "
            "remap the base dataset with a recipe (recipes/) or fix 'classes' in the settings"
        )
    domain = pd.read_parquet(go2k_split.resolve(lake.get().home) / "manifests" / "split.parquet")
    recipe = MixRecipe(config.base_train, config.base_valid, config.domain_oversample, config.seed)
    result = assemble_mix(base, domain, recipe)
    for warning in result.warnings:
        context.log.warning(warning)
    base_version = fingerprint_folder(base_root, content=True).version
    upstream = {"go2k_split": go2k_split.version, **go2k_split.extra["upstream"], "base_dataset": base_version}
    store = lake.get()
    with store.new_version("go2k_v2_mix", meta={"code_version": "1", "config": config.model_dump(), "upstream": upstream}) as version:
        counts = write_mix(result, classes, version.path)
    handle = store.handle_for(
        version.final_path, asset="go2k_v2_mix", version=version.version,
        counts={"train_entries": counts["train_entries"], "valid_entries": counts["valid_entries"]},
        extra={"classes": classes, "upstream": upstream},
    )
    rows = [{"split/source": key, **values} for key, values in counts["per_split_source"].items()]
    return lake_output(handle, {
        "mix": dg.MetadataValue.md(markdown_table(rows, ["split/source", "entries", *[f"boxes_{c}" for c in classes]])),
        "domain_share_of_training": dg.MetadataValue.float(counts["domain_share_of_training"]),
        "warnings": dg.MetadataValue.json(result.warnings),
        "unreadable_images_skipped": len(result.unreadable),
        "upstream": dg.MetadataValue.json(upstream),
    })


def leakage_check(root: Path, manifest: str) -> dg.AssetCheckResult:
    """No image content, near-duplicate or same-burst pair in two splits of the version at ``root``."""
    entries = pd.read_parquet(root / "manifests" / manifest)
    entries = entries.assign(path=[p if Path(p).is_absolute() else str(root / p) for p in entries["path"]])
    entries = entries.drop_duplicates(["split", "path"]).reset_index(drop=True)
    if "sha256" not in entries:
        entries["sha256"] = [file_sha256(Path(p)) for p in entries["path"]]
    cameras = entries["camera"].where(entries["camera"].notna(), None).tolist()
    pairs = dedup.near_duplicate_pairs(dedup.thumbnails([Path(p) for p in entries["path"]]), dedup.DEFAULT_THRESHOLD, cameras=cameras)
    bursts = time_groups(entries["camera"], entries["timestamp"], BURST_SECONDS)
    problems = (
        dataset_checks.content_in_two_splits(entries)
        + dataset_checks.linked_across_splits(entries, pairs, "near-duplicates")
        + dataset_checks.linked_across_splits(entries, bursts, f"same camera within {BURST_SECONDS:.0f} s")
    )
    return result_of(problems, "splits disjoint by content and near-duplicates")


def classes_check(root: Path, manifest: str) -> dg.AssetCheckResult:
    """Every class of the version's data.yaml has boxes in every split."""
    classes = read_class_names(root / "data.yaml")
    entries = pd.read_parquet(root / "manifests" / manifest)
    table = entries.groupby("split")[[f"boxes_{name}" for name in classes]].sum()
    return result_of(dataset_checks.classes_in_every_split(table, classes), "classes present in every split")


SPLIT_CHECKS = {
    "lists_resolve": "Every list-file entry is an existing image.",
    "no_leakage": "No image content, near-duplicate or same-burst pair in two splits.",
    "classes_in_every_split": "Every class has boxes in every split.",
}


def split_dataset_checks(asset_name: str, manifest: str) -> dg.AssetChecksDefinition:
    """The blocking checks every split dataset gets (go2k_split, go2k_v2_mix, each recipe)."""

    @dg.multi_asset_check(
        name=f"{asset_name}_split_checks",
        specs=[
            dg.AssetCheckSpec(f"{asset_name}_{check}", asset=asset_name, blocking=True, description=text)
            for check, text in SPLIT_CHECKS.items()
        ],
    )
    def _checks(context: dg.AssetCheckExecutionContext, lake: LakeResource):
        event = context.instance.get_latest_materialization_event(dg.AssetKey(asset_name))
        root = lake.get().home / event.asset_materialization.metadata["lake_path"].value
        results = {
            "lists_resolve": result_of(dataset_checks.list_files_resolve(root), "list entries resolve"),
            "no_leakage": leakage_check(root, manifest),
            "classes_in_every_split": classes_check(root, manifest),
        }
        for check, result in results.items():
            yield dg.AssetCheckResult(
                check_name=f"{asset_name}_{check}", asset_key=asset_name, passed=result.passed,
                severity=result.severity, metadata=result.metadata,
            )

    return _checks


go2k_split_checks = split_dataset_checks("go2k_split", "split.parquet")
go2k_v2_mix_checks = split_dataset_checks("go2k_v2_mix", "entries.parquet")
