"""One dataset asset per recipe file (``recipes/*.yaml``): ``dataset_<recipe name>``.

A recipe source is either a lake dataset asset (``go2k_manual``, another ``dataset_*``), which
arrives as the exact version Dagster recorded, or a settings key naming a YOLO folder
(``base_dataset``). Recipes are read when the code location loads: reload it in the UI after
adding or editing one.
"""

from pathlib import Path

import dagster as dg

from hoban_pipelines.assets.publishing import lake_output
from hoban_pipelines.assets.datasets import split_dataset_checks
from hoban_pipelines.core.fingerprints import fingerprint_folder
from hoban_pipelines.core.lake import LakeHandle
from hoban_pipelines.datasets.recipes import Recipe, SourceData, build_recipe
from hoban_pipelines.core.pictures import markdown_table, png_markdown
from hoban_pipelines.resources import LakeResource, SettingsResource
from hoban_pipelines.core.settings import load_settings
from hoban_pipelines.core.yolo_format import read_yolo_dataset

FOLDER_SOURCES = ("base_dataset",)  # settings keys of YOLO folders; every other source is a lake asset


def _source(name: str, handles: dict[str, LakeHandle], lake: LakeResource, settings: SettingsResource) -> tuple[SourceData, str]:
    if name in handles:
        handle = handles[name]
        return SourceData.from_published(name, handle.resolve(lake.get().home)), handle.version
    root = settings.get().require(name, "YOLO dataset folder (with data.yaml)")
    data = read_yolo_dataset(root)
    return SourceData(name, data.classes, data.images, data.boxes), fingerprint_folder(root, content=True).version


def recipe_asset(recipe: Recipe, recipe_file: Path) -> tuple[dg.AssetsDefinition, dg.AssetChecksDefinition]:
    asset_name = f"dataset_{recipe.name}"
    lake_sources = [s.name for s in recipe.sources if s.name not in FOLDER_SOURCES]

    @dg.asset(
        name=asset_name,
        group_name="datasets",
        kinds={"yolo", "parquet"},
        code_version=f"1-{fingerprint_folder(recipe_file.parent, (recipe_file.name,), content=True).version[:8]}",
        ins={name: dg.AssetIn(key=name) for name in lake_sources},
        deps=[s.name for s in recipe.sources if s.name in FOLDER_SOURCES],
        description=f"Built by the recipe {recipe_file.name}: remap, area filters, box quotas, backgrounds, "
        "dedup, quick-experiment cap, grouped 7:2:1 split.",
    )
    def _build(context: dg.AssetExecutionContext, lake: LakeResource, settings: SettingsResource, **handles: LakeHandle):
        sources, upstream = [], {}
        for spec in recipe.sources:
            data, version = _source(spec.name, handles, lake, settings)
            sources.append(data)
            upstream[spec.name] = version
        store = lake.get()
        meta = {"recipe": str(recipe_file), "upstream": upstream}
        with store.new_version(asset_name, meta=meta) as version:
            report = build_recipe(sources, recipe, version.path)
        for warning in report.warnings:
            context.log.warning(warning)
        handle = store.handle_for(
            version.final_path, asset=asset_name, version=version.version,
            counts={f"{split}_images": values["images"] for split, values in report.per_split.items()},
            extra={"classes": recipe.classes, "upstream": upstream},
        )
        rows = [{"split": split, **values} for split, values in report.per_split.items()]
        columns = ["split", *sorted({k for row in rows for k in row} - {"split"})]
        plots = version.final_path / "plots"
        return lake_output(handle, {
            "splits": dg.MetadataValue.md(markdown_table(rows, columns)),
            "steps": dg.MetadataValue.json(report.counts),
            "warnings": dg.MetadataValue.json(report.warnings),
            "upstream": dg.MetadataValue.json(upstream),
            "samples": dg.MetadataValue.md(png_markdown(plots / "samples.png", "samples")),
        })

    return _build, split_dataset_checks(asset_name, "images.parquet")


def load_recipe_assets() -> tuple[list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]:
    """An asset (and its check) per recipe in the folder the ``recipes`` setting names."""
    folder = load_settings().path("recipes")
    built = [recipe_asset(Recipe.load(path), path) for path in sorted(folder.glob("*.yaml"))] if folder.is_dir() else []
    return [asset for asset, _ in built], [check for _, check in built]
