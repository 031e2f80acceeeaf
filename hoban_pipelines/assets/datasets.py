"""The datasets stage as assets: go2k_split, the go2k_v2 mix, one dataset per recipe file, and
the blocking checks every split dataset gets.

A recipe source is either a lake dataset asset (``go2k_manual``, another ``dataset_*``), which
arrives as the exact version Dagster recorded, or a settings key naming a YOLO folder
(``base_dataset``). Recipes are read when the code location loads: reload it in the UI after
adding or editing one.

A ``labels: hybrid`` source makes its model asset an input: the model's full-image pass labels
the source's images (in the ``gpu`` pool), and the version is reused while the recipe, the
sources and the model version are unchanged.
"""

from pathlib import Path

import dagster as dg

from hoban_pipelines.assets.labels import result_of
from hoban_pipelines.assets.publishing import lake_output, publish, reused_version
from hoban_pipelines.assets.run_config import config_class, parameters_of
from hoban_pipelines.core.fingerprints import fingerprint_folder
from hoban_pipelines.core.lake import LakeError, LakeHandle
from hoban_pipelines.core.settings import load_settings
from hoban_pipelines.core.yolo_format import read_yolo_dataset
from hoban_pipelines.datasets import checks as dataset_checks
from hoban_pipelines.datasets.grouping import Grouping
from hoban_pipelines.datasets.mix import MIX_MANIFEST, MixParameters, build_mix
from hoban_pipelines.datasets.recipes import (
    RECIPE_MANIFEST, DatasetRecipe, ModelLabels, SourceData, SourceSpec, build_recipe,
)
from hoban_pipelines.datasets.split import SPLIT_MANIFEST, SplitParameters, build_split
from hoban_pipelines.evaluation.builds import full_image_labels
from hoban_pipelines.resources import LakeResource, SettingsResource, YoloRuntime
from hoban_pipelines.training.job import resolve_device

class Go2kSplitConfig(dg.Config):
    val_fraction: float = SplitParameters.val_fraction
    seed: int = SplitParameters.seed
    burst_seconds: float = Grouping.burst_seconds  # frames of one camera this close never straddle the split
    similarity: float = Grouping.similarity  # nor do thumbnails this similar


@dg.asset(group_name="datasets", kinds={"parquet", "yolo"}, code_version="2")
def go2k_split(
    context: dg.AssetExecutionContext, config: Go2kSplitConfig, lake: LakeResource, go2k_manual: LakeHandle
) -> dg.Output[LakeHandle]:
    """go2k_manual split 80/20 into train and val, seeded, stratified by class, with
    near-duplicate and same-burst frames kept on one side."""
    params = SplitParameters(config.val_fraction, config.seed, Grouping(config.burst_seconds, config.similarity))
    labelled = go2k_manual.resolve(lake.get().home)
    published = publish(
        context, lake, lambda out: build_split(labelled, go2k_manual.classes, params, out),
        params=params.as_params(), upstream={"go2k_manual": go2k_manual.version}, classes=go2k_manual.classes,
    )
    return lake_output(published)


MixConfig = config_class(
    "MixConfig", "The team's go2k_v2 numbers; clamped with a warning when the data has fewer images.", MixParameters,
)


@dg.asset(group_name="datasets", kinds={"yolo"}, code_version="2", deps=["base_dataset"])
def go2k_v2_mix(
    context: dg.AssetExecutionContext, config: MixConfig, lake: LakeResource, settings: SettingsResource,
    go2k_split: LakeHandle,
) -> dg.Output[LakeHandle]:
    """The go2k_v2 training mix: a base ("v13") subsample plus go2k train oversampled, as list
    files (no image bytes copied) with the exact upstream versions recorded."""
    base_root = settings.get().require("base_dataset", "YOLO dataset folder (with data.yaml)")
    upstream = {"go2k_split": go2k_split.version, **go2k_split.upstream,
                "base_dataset": fingerprint_folder(base_root, content=True).version}
    split_root = go2k_split.resolve(lake.get().home)
    published = publish(
        context, lake, lambda out: build_mix(base_root, split_root, go2k_split.classes, parameters_of(config, MixParameters), out),
        # the go2k part keeps the split's grouping: the mix is checked with it
        params={**config.model_dump(), "grouping": grouping_of(go2k_split, lake).as_params()},
        upstream=upstream, classes=go2k_split.classes,
    )
    return lake_output(published)


FOLDER_SOURCES = ("base_dataset",)  # settings keys of YOLO folders; every other source is a lake asset


def _source(name: str, handles: dict[str, LakeHandle], lake: LakeResource, settings: SettingsResource) -> tuple[SourceData, str]:
    if name in handles:
        handle = handles[name]
        return SourceData.from_published(name, handle.resolve(lake.get().home)), handle.version
    root = settings.get().require(name, "YOLO dataset folder (with data.yaml)")
    data = read_yolo_dataset(root)
    return SourceData(name, data.classes, data.images, data.boxes), fingerprint_folder(root, content=True).version


def _model_labels(context: dg.AssetExecutionContext, spec: SourceSpec, source: SourceData, model: LakeHandle,
                  lake: LakeResource, yolo: YoloRuntime) -> ModelLabels:
    """The hybrid source's images labelled by its model's full-image pass."""
    images = list(zip(source.images["image"].astype(str), source.images["path"].astype(str)))
    context.log.info(f"{spec.name}: labelling {len(images)} images with {spec.model} {model.version}")
    labelled, classes, about = full_image_labels(model.resolve(lake.get().home), images, conf_floor=spec.conf,
                                                 device=resolve_device(yolo.device), threads=yolo.threads)
    for warning in labelled.warnings:
        context.log.warning(f"{spec.name}: {warning}")
    return ModelLabels(classes, labelled.detections, {"model_version": model.version, **about})


def recipe_asset(recipe: DatasetRecipe, recipe_file: Path) -> tuple[dg.AssetsDefinition, dg.AssetChecksDefinition]:
    asset_name = f"dataset_{recipe.name}"
    lake_sources = [s.name for s in recipe.sources if s.name not in FOLDER_SOURCES]
    models = sorted({spec.model for spec in recipe.hybrid_sources})

    @dg.asset(
        name=asset_name,
        group_name="datasets",
        kinds={"yolo", "parquet", *(("pytorch",) if models else ())},
        code_version=f"3-{fingerprint_folder(recipe_file.parent, (recipe_file.name,), content=True).version[:8]}",
        ins={name: dg.AssetIn(key=name) for name in [*lake_sources, *models]},
        deps=[s.name for s in recipe.sources if s.name in FOLDER_SOURCES],
        pool="gpu" if models else None,  # a hybrid source runs its model
        description=f"Built by the recipe {recipe_file.name}: remap, area filters, box quotas, backgrounds, "
        "dedup, quick-experiment cap, grouped 7:2:1 split"
        + (f"; hybrid labels by {', '.join(models)} where the model finds boxes." if models else "."),
    )
    def _build(context: dg.AssetExecutionContext, lake: LakeResource, settings: SettingsResource, yolo: YoloRuntime,
               **handles: LakeHandle):
        sources, upstream = [], {}
        for spec in recipe.sources:
            data, version = _source(spec.name, handles, lake, settings)
            sources.append(data)
            upstream[spec.name] = version
        upstream.update({model: handles[model].version for model in models})
        params = {"recipe_file": str(recipe_file), "grouping": recipe.grouping.as_params()}
        labels = {}
        if models:  # labelling is the cost: an unchanged recipe on unchanged inputs is not labelled again
            key = {"code_version": context.assets_def.code_versions_by_key[context.asset_key], **upstream}
            reused = reused_version(context, lake, key)
            if reused:
                return lake_output(reused)
            params["reuse_key"] = key
            by_name = {data.name: data for data in sources}
            labels = {spec.name: _model_labels(context, spec, by_name[spec.name], handles[spec.model], lake, yolo)
                      for spec in recipe.hybrid_sources}
        published = publish(
            context, lake, lambda out: build_recipe(sources, recipe, out, labels),
            params=params, upstream=upstream, classes=recipe.classes,
        )
        return lake_output(published)

    return _build, split_dataset_checks(asset_name, RECIPE_MANIFEST)


def load_recipe_assets() -> tuple[list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]:
    """An asset (and its checks) per recipe in the folder the ``recipes`` setting names."""
    folder = load_settings().path("recipes")
    built = [recipe_asset(DatasetRecipe.load(path), path) for path in sorted(folder.glob("*.yaml"))] if folder.is_dir() else []
    return [asset for asset, _ in built], [check for _, check in built]


def grouping_of(handle: LakeHandle, lake: LakeResource) -> Grouping:
    """The leakage grouping a split dataset's version was built with, from its own record."""
    params = lake.get().version_info(handle.asset, handle.version, handle.partition).get("params") or {}
    if "grouping" not in params:
        raise LakeError(
            f"{handle.asset} version {handle.version} records no leakage grouping (written before "
            f"hoban_pipelines recorded it): rematerialize {handle.asset}"
        )
    return Grouping(**params["grouping"])


SPLIT_CHECKS = {
    "lists_resolve": "Every list-file entry is an existing image.",
    "no_leakage": "No image content, near-duplicate or same-burst pair in two splits (the version's own grouping).",
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
        ins={"dataset": dg.AssetIn(asset_name)},
    )
    def _checks(lake: LakeResource, dataset: LakeHandle):
        root = dataset.resolve(lake.get().home)
        results = {
            "lists_resolve": result_of(dataset_checks.list_files_resolve(root), "list entries resolve"),
            "no_leakage": result_of(dataset_checks.leakage_problems(root, manifest, grouping_of(dataset, lake)),
                                    "splits disjoint by content, near-duplicates and bursts"),
            "classes_in_every_split": result_of(dataset_checks.class_split_problems(root, manifest),
                                                "classes present in every split"),
        }
        for check, result in results.items():
            yield dg.AssetCheckResult(
                check_name=f"{asset_name}_{check}", asset_key=asset_name, passed=result.passed,
                severity=result.severity, metadata=result.metadata,
            )

    return _checks


go2k_split_checks = split_dataset_checks("go2k_split", SPLIT_MANIFEST)
go2k_v2_mix_checks = split_dataset_checks("go2k_v2_mix", MIX_MANIFEST)
