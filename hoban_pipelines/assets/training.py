"""Model checkpoints as assets: YOLO training in a child process through Dagster Pipes.

Each model trains on the exact dataset version upstream, from the base checkpoint, in the
``gpu`` pool (one training at a time). The child streams every epoch's metrics into the run
log and reports the materialization; this side publishes the checkpoint, its metrics, plots
and recipe as an immutable lake version. A retried or re-executed run keeps its scratch folder
(keyed by the root run id), so training resumes from its last checkpoint instead of starting over.
"""

import json
import shutil
import sys
from dataclasses import fields, replace
from pathlib import Path
from typing import get_type_hints

import dagster as dg

from hoban_pipelines.assets.publishing import lake_output
from hoban_pipelines.core.fingerprints import fingerprint_folder
from hoban_pipelines.core.lake import LakeHandle, file_sha256
from hoban_pipelines.training.comparison import comparison_plot, comparison_table
from hoban_pipelines.core.pictures import markdown_table, png_markdown
from hoban_pipelines.resources import LakeResource, SettingsResource, YoloRuntime
from hoban_pipelines.training.child import EVAL_DIR, VIEW_DIR
from hoban_pipelines.training.child import SUMMARY_FILE as SUMMARY
from hoban_pipelines.training.job import RECIPES, TrainJob, TrainRecipe, load_checkpoint, resolve_device

SCRATCH = "runs"  # under HOBAN_HOME: ultralytics' working folders, kept for resuming
SCAFFOLD = "yolov8n.yaml"  # what the demo's base model is built from (no pretrained weights offline)
ARTIFACTS = ("weights/best.pt", "weights/last.pt", "results.csv", "curves.png", "confusion.png", SUMMARY)

# model asset -> (recipe, training data asset); every go2k model is scored on go2k_split's valid
MODELS = {
    "model_go2k_finetune_sgd": ("finetune_sgd", "go2k_split"),
    "model_go2k_finetune_adamw": ("finetune_adamw", "go2k_split"),
    "model_go2k_v2": ("go2k_v2", "go2k_v2_mix"),
    "model_go2k_v3": ("go2k_v3", "go2k_v2_mix"),
}
EVALUATION_DATA = "go2k_split"
# recipe fields the launchpad does not offer: the name is the asset's, the rest is code
_FIXED_FIELDS = ("name", "extra", "demo_tiles", "demo_weight")


def recipe_config(recipe: TrainRecipe) -> type[dg.Config]:
    """A run config class whose defaults are the recipe's numbers (the team's), editable in the launchpad."""
    types = get_type_hints(TrainRecipe)
    annotations = {f.name: types[f.name] for f in fields(TrainRecipe) if f.name not in _FIXED_FIELDS}
    options = {"remap": False, "retrain": False}
    annotations.update({name: bool for name in options})
    namespace = {
        "__annotations__": annotations,
        **{name: getattr(recipe, name) for name in annotations if name not in options},
        **options,
        "__doc__": f"The {recipe.name} recipe; the train_profile setting sizes epochs and image size "
                   "(`full` trains as written). remap: allow a base checkpoint with other classes. "
                   "retrain: train again even when this exact job already has a published version.",
    }
    return type("".join(part.capitalize() for part in recipe.name.split("_")) + "Config", (dg.Config,), namespace)


def configured_recipe(recipe: TrainRecipe, config: dg.Config) -> TrainRecipe:
    return replace(recipe, **{k: v for k, v in config.model_dump().items() if k not in ("remap", "retrain")})


def _job_key(extras: dict, upstream: dict) -> tuple:
    """What decides a trained model: the job's identity (recipe, profile, data files, base,
    classes), the upstream versions, and whether it trains on a CPU or a GPU (the demo profile
    is sized per device)."""
    return TrainJob.from_extras(extras).identity(), upstream, extras["device"] == "cpu"


def _published_job(
    context: dg.AssetExecutionContext, store, asset: str, job: dict, upstream: dict,
) -> tuple[str, dict] | None:
    """A lake version of this exact job and its materialization metadata, newest first."""
    for version in reversed(store.versions(asset)):
        stored = store.asset_dir(asset) / version / "recipe.json"
        if not stored.is_file():
            continue
        earlier = _job_key(json.loads(stored.read_text()), store.version_info(asset, version).get("upstream"))
        if earlier != _job_key(job, upstream):
            continue
        for record in context.instance.fetch_materializations(dg.AssetKey(asset), limit=100).records:
            metadata = record.asset_materialization.metadata if record.asset_materialization else {}
            if "version" in metadata and metadata["version"].value == version:
                return version, metadata
    return None


def _train(
    context: dg.AssetExecutionContext,
    *,
    asset: str,
    recipe: TrainRecipe,
    data_yaml: Path,
    eval_data: Path | None,
    model: str,
    upstream: dict[str, str],
    remap: bool,
    retrain: bool,
    lake: LakeResource,
    settings: SettingsResource,
    runtime: YoloRuntime,
    pipes: dg.PipesSubprocessClient,
) -> dg.MaterializeResult:
    site = settings.get()
    if runtime.batch:
        recipe = replace(recipe, batch=runtime.batch)
    device = resolve_device(runtime.device)
    store = lake.get()
    run_dir = store.home / SCRATCH / asset / (context.run.root_run_id or context.run.run_id)
    job = TrainJob(
        recipe=recipe, data_yaml=str(data_yaml), model=model, run_dir=str(run_dir), profile=site.train_profile,
        eval_data=str(eval_data) if eval_data else None, device=device, workers=runtime.workers,
        threads=runtime.threads, amp=runtime.amp and device != "cpu", cache=runtime.cache, classes=site.classes,
        remap=remap,
    ).as_extras()
    extra = {"classes": site.classes, "upstream": upstream, "recipe": recipe.name}
    published = None if retrain else _published_job(context, store, asset, job, upstream)
    if published:
        version, metadata = published
        context.log.info(f"{asset}: this exact job (recipe, profile, upstream versions, device kind) is published as "
                         f"{version}; reusing it instead of training again (run config retrain: true trains anew)")
        handle = store.handle_for(store.asset_dir(asset) / version, asset=asset, version=version, extra=extra)
        return dg.MaterializeResult(value=handle, data_version=dg.DataVersion(version),
                                    metadata={**metadata, "reused_version": True})
    context.log.info(f"training {asset} with {recipe.name} ({site.train_profile} profile) on {device}: "
                     f"{json.dumps(job['recipe'])}")
    invocation = pipes.run(
        context=context,
        command=[sys.executable, "-m", "hoban_pipelines.training.child"],
        extras=job,
        env={"YOLO_OFFLINE": "1"},
    )
    reported = invocation.get_materialize_result()
    meta = {"recipe": reported.metadata["recipe"].value, "profile": site.train_profile, "upstream": upstream,
            "device": device}
    with store.new_version(asset, meta=meta) as version:
        for relative in ARTIFACTS:
            source = run_dir / relative
            if source.is_file():
                (version.path / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, version.path / relative)
        (version.path / "recipe.json").write_text(json.dumps(job, indent=2, sort_keys=True))
        version.digest = file_sha256(version.path / "weights" / "best.pt")
    # the views (tiles: ~150 MB a demo run) are derived from lake inputs and rebuilt on demand;
    # the weights stay for a re-execution of this run
    for view in (run_dir / VIEW_DIR, run_dir / EVAL_DIR):
        if view.is_dir():
            shutil.rmtree(view)
    context.log.info(f"published {version.final_path}; removed the training views from {run_dir}")
    handle = store.handle_for(version.final_path, asset=asset, version=version.version, extra=extra)
    return dg.MaterializeResult(
        value=handle,
        data_version=dg.DataVersion(version.version),
        metadata={
            **reported.metadata,
            "reused_version": False,
            "version": version.version,
            "lake_path": dg.MetadataValue.path(handle.path),
            "upstream": dg.MetadataValue.json(upstream),
        },
    )


BaseFromScratchConfig = recipe_config(RECIPES["base_from_scratch"])


@dg.asset(group_name="models", kinds={"pytorch"}, pool="gpu", code_version="2", deps=["base_dataset"])
def base_model(
    context: dg.AssetExecutionContext, config: BaseFromScratchConfig, lake: LakeResource, settings: SettingsResource,
    yolo: YoloRuntime, pipes_subprocess_client: dg.PipesSubprocessClient,
) -> dg.MaterializeResult:
    """The starting checkpoint ("v13 stage2 best.pt", setting ``base_checkpoint``), versioned by
    sha256. Without one (the demo: no pretrained weights, no internet) a small base model is
    trained from a yaml on the base dataset, and that checkpoint plays the base role."""
    site = settings.get()
    store = lake.get()
    if site.base_checkpoint:
        checkpoint = load_checkpoint(site.path("base_checkpoint"))
        with store.new_version("base_model", meta={"source": str(checkpoint.path)}) as version:
            (version.path / "weights").mkdir()
            shutil.copy2(checkpoint.path, version.path / "weights" / "best.pt")
            version.digest = checkpoint.sha256
        handle = store.handle_for(version.final_path, asset="base_model", version=version.version,
                                  extra={"classes": checkpoint.classes, "source": str(checkpoint.path)})
        return dg.MaterializeResult(value=handle, data_version=dg.DataVersion(checkpoint.sha256[:16]), metadata={
            "source": dg.MetadataValue.path(str(checkpoint.path)), "sha256": checkpoint.sha256,
            "classes": dg.MetadataValue.json(checkpoint.classes), "version": version.version,
            "lake_path": dg.MetadataValue.path(handle.path),
        })
    base_root = site.require("base_dataset", "YOLO dataset folder (with data.yaml)")
    # the folder's files (names, sizes, times) stand for its content: a changed dataset retrains
    files = fingerprint_folder(base_root).version
    return _train(context, asset="base_model", recipe=configured_recipe(RECIPES["base_from_scratch"], config),
                  data_yaml=base_root / "data.yaml", eval_data=None, model=SCAFFOLD,
                  upstream={"base_dataset": f"{base_root} ({files})"}, remap=config.remap, retrain=config.retrain, lake=lake,
                  settings=settings,
                  runtime=yolo, pipes=pipes_subprocess_client)


def model_asset(asset: str, recipe_name: str, data_asset: str) -> dg.AssetsDefinition:
    recipe = RECIPES[recipe_name]
    config_class = recipe_config(recipe)
    tiles = f", on {recipe.tile}-px tiles of the frames" if recipe.tile else ""

    ins = {"data": dg.AssetIn(data_asset), "base": dg.AssetIn("base_model")}
    if data_asset != EVALUATION_DATA:  # an asset key may be an input once
        ins["evaluation"] = dg.AssetIn(EVALUATION_DATA)

    @dg.asset(
        name=asset, group_name="models", kinds={"pytorch"}, pool="gpu", code_version="2", ins=ins,
        description=f"YOLO trained with the {recipe_name} recipe on {data_asset}{tiles}, from base_model; "
                    f"scored on {EVALUATION_DATA}'s valid split.",
    )
    def _model(
        context: dg.AssetExecutionContext, config: config_class, lake: LakeResource, settings: SettingsResource,
        yolo: YoloRuntime, pipes_subprocess_client: dg.PipesSubprocessClient, **inputs: LakeHandle,
    ) -> dg.MaterializeResult:
        home = lake.get().home
        data, base = inputs["data"], inputs["base"]
        evaluation = inputs.get("evaluation", data)
        return _train(
            context, asset=asset, recipe=configured_recipe(recipe, config), data_yaml=data.resolve(home) / "data.yaml",
            eval_data=evaluation.resolve(home) / "data.yaml", model=str(base.resolve(home) / "weights" / "best.pt"),
            upstream={data_asset: data.version, EVALUATION_DATA: evaluation.version, "base_model": base.version,
                      **data.extra.get("upstream", {})},
            remap=config.remap, retrain=config.retrain, lake=lake, settings=settings, runtime=yolo,
            pipes=pipes_subprocess_client,
        )

    return _model


model_assets = [model_asset(asset, recipe, data) for asset, (recipe, data) in MODELS.items()]


@dg.asset(
    group_name="models", kinds={"pandas"}, code_version="1",
    ins={name: dg.AssetIn(name) for name in ["base_model", *MODELS]},
)
def model_comparison(context: dg.AssetExecutionContext, lake: LakeResource, **models: LakeHandle) -> dg.Output[LakeHandle]:
    """Every model's validation metrics side by side, overall and per class, like the team's table."""
    store = lake.get()
    summaries = {name: json.loads((handle.resolve(store.home) / SUMMARY).read_text())
                 for name, handle in models.items() if (handle.resolve(store.home) / SUMMARY).is_file()}
    table = comparison_table(summaries)
    with store.new_version("model_comparison", meta={"models": {n: h.version for n, h in models.items()}}) as version:
        table.to_csv(version.path / "comparison.csv", index=False)
        comparison_plot(table, version.path / "comparison.png")
    handle = store.handle_for(version.final_path, asset="model_comparison", version=version.version,
                              counts={"models": len(summaries)})
    rows = table.round(3).to_dict("records")
    return lake_output(handle, {
        "models": dg.MetadataValue.md(markdown_table([r for r in rows if r["class"] == "all"], list(table.columns))),
        "per_class": dg.MetadataValue.md(markdown_table([r for r in rows if r["class"] != "all"], list(table.columns))),
        "plot": dg.MetadataValue.md(png_markdown(version.final_path / "comparison.png", "model comparison")),
    })
