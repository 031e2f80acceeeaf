"""Model checkpoints as assets: YOLO training in a child process through Dagster Pipes (a
subprocess of the run, or a Kubernetes pod of its own: the ``training_child`` resource).

Each model trains on the exact dataset version upstream, from the base checkpoint, in the
``gpu`` pool (one training at a time). The child streams every epoch's metrics into the run
log and writes its summary; this side publishes the checkpoint, its metrics, plots and job as
an immutable lake version, which records the job's reuse key: an unchanged job is found with
``Lake.find_version`` and reused instead of trained again. A retried or re-executed run keeps its scratch folder
(keyed by the root run id), so training resumes from its last checkpoint instead of starting over.
"""

import json
from dataclasses import replace
from pathlib import Path

import dagster as dg

from hoban_pipelines.assets.publishing import Published, asset_name, lake_output, publish, published_with_key
from hoban_pipelines.assets.run_config import config_class
from hoban_pipelines.core.fingerprints import fingerprint_folder
from hoban_pipelines.core.lake import LakeHandle
from hoban_pipelines.promotion.decide import read_promotion
from hoban_pipelines.resources import LakeResource, SettingsResource, TrainingChild, YoloRuntime
from hoban_pipelines.training.job import BEST_WEIGHTS, TrainJob, load_checkpoint, remove_views, resolve_device
from hoban_pipelines.training.recipes import RECIPES, TrainingError, TrainRecipe
from hoban_pipelines.training.report import build_base_checkpoint, build_checkpoint, model_report

SCRATCH = "runs"  # under HOBAN_HOME: ultralytics' working folders, kept for resuming
SCAFFOLD = "yolov8n.yaml"  # what the demo's base model is built from (no pretrained weights offline)

# model asset -> (recipe, training data asset); every go2k model is scored on go2k_split's val
MODELS = {
    "model_go2k_finetune_sgd": ("finetune_sgd", "go2k_split"),
    "model_go2k_finetune_adamw": ("finetune_adamw", "go2k_split"),
    "model_go2k_v2": ("go2k_v2", "go2k_v2_mix"),
    "model_go2k_v3": ("go2k_v3", "go2k_v2_mix"),
    "model_go2k_v4": ("go2k_v4", "go2k_v4_mix"),
}
# retrained after review rounds, from the production checkpoint: built by the review loop, not pipeline_job
RETRAINED = {"model_go2k_v4"}
RETRAINING_GROUP = "retraining"
PRODUCTION = "production_model"
EVALUATION_DATA = "go2k_split"
# recipe fields the launchpad does not offer: the name is the asset's, the rest is code
_FIXED_FIELDS = ("name", "extra", "demo_tiles", "demo_weight")


_JOB_FIELDS = {"remap": (bool, False), "retrain": (bool, False)}


def recipe_config(recipe: TrainRecipe, extra: dict | None = None) -> type[dg.Config]:
    """A run config class whose defaults are the recipe's numbers (the team's), editable in the launchpad."""
    return config_class(
        "".join(part.capitalize() for part in recipe.name.split("_")) + "Config",
        f"The {recipe.name} recipe; the train_profile setting sizes epochs and image size "
        "(`full` trains as written). remap: allow a base checkpoint with other classes. "
        "retrain: train again even when this exact job already has a published version."
        + (" start_from: 'production' (the promoted checkpoint), 'base' or a model asset." if extra else ""),
        TrainRecipe, defaults=recipe, skip=_FIXED_FIELDS, extra={**_JOB_FIELDS, **(extra or {})},
    )


def configured_recipe(recipe: TrainRecipe, config: dg.Config) -> TrainRecipe:
    return replace(recipe, **{k: v for k, v in config.model_dump().items() if k not in (*_JOB_FIELDS, "start_from")})


def _train(
    context: dg.AssetExecutionContext,
    *,
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
    child: TrainingChild,
) -> dg.Output[LakeHandle]:
    """Train in the Pipes child and publish the checkpoint, or reuse the version of this exact job."""
    configured = settings.get()
    if runtime.batch:
        recipe = replace(recipe, batch=runtime.batch)
    device = resolve_device(runtime.device)
    store = lake.get()
    asset = asset_name(context)
    run_dir = store.home / SCRATCH / asset / (context.run.root_run_id or context.run.run_id)
    job = TrainJob(
        recipe=recipe, data_yaml=str(data_yaml), model=model, run_dir=str(run_dir), profile=configured.train_profile,
        eval_data=str(eval_data) if eval_data else None, device=device, workers=runtime.workers,
        threads=runtime.threads, amp=runtime.amp and device != "cpu", cache=runtime.cache, classes=configured.classes,
        remap=remap,
    )
    key = job.reuse_key(upstream)
    earlier = None if retrain else published_with_key(context, lake, key)
    if earlier:
        context.log.info(f"{asset}: this exact job (recipe, profile, upstream versions, device kind) is published as "
                         f"{earlier.version}; reusing it instead of training again (run config retrain: true trains anew)")
        root = earlier.resolve(store.home)
        return lake_output(Published(handle=earlier, root=root, reused=True, report=model_report(root)))
    extras = job.as_extras()
    context.log.info(f"training {asset} with {recipe.name} ({configured.train_profile} profile) on {device}: "
                     f"{json.dumps(extras['recipe'])}")
    child.run(context, extras=extras, env={"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false"}, home=store.home)
    published = publish(
        context, lake, lambda out: build_checkpoint(run_dir, out, job),
        params={"profile": configured.train_profile, "device": device, "reuse_key": key},
        upstream=upstream, classes=configured.classes,
    )
    removed = remove_views(run_dir)
    context.log.info(f"published {published.root}; removed the training views {[str(v) for v in removed]}")
    return lake_output(published)


BaseFromScratchConfig = recipe_config(RECIPES["base_from_scratch"])


@dg.asset(group_name="models", kinds={"pytorch"}, pool="gpu", code_version="2", deps=["base_dataset"])
def base_model(
    context: dg.AssetExecutionContext, config: BaseFromScratchConfig, lake: LakeResource, settings: SettingsResource,
    yolo: YoloRuntime, training_child: TrainingChild,
) -> dg.Output[LakeHandle]:
    """The starting checkpoint ("v13 stage2 best.pt", setting ``base_checkpoint``), versioned by
    sha256. Without one (the demo: no pretrained weights, no internet) a small base model is
    trained from a yaml on the base dataset, and that checkpoint plays the base role."""
    configured = settings.get()
    if configured.base_checkpoint:
        checkpoint = load_checkpoint(configured.path("base_checkpoint"))
        return lake_output(publish(context, lake, lambda out: build_base_checkpoint(checkpoint, out),
                                   params={"source": str(checkpoint.path)}, classes=checkpoint.classes))
    base_root = configured.require("base_dataset", "YOLO dataset folder (with data.yaml)")
    # the folder's files (names, sizes, times) stand for its content: a changed dataset retrains
    files = fingerprint_folder(base_root).version
    return _train(context, recipe=configured_recipe(RECIPES["base_from_scratch"], config),
                  data_yaml=base_root / "data.yaml", eval_data=None, model=SCAFFOLD,
                  upstream={"base_dataset": f"{base_root} ({files})"}, remap=config.remap, retrain=config.retrain,
                  lake=lake, settings=settings, runtime=yolo, child=training_child)


def _starting_checkpoint(lake: LakeResource, base: LakeHandle, start_from: str) -> tuple[Path, dict[str, str]]:
    """The checkpoint a retrained model starts from: production's (when one was promoted and
    ``start_from`` is 'production'), a named model's current version, else the base model's; and
    the upstream versions it records.
    Production is read from its record, not declared as an input: it is decided downstream of
    the retrained model, and an asset graph has no cycles."""
    home = lake.get().home
    if start_from not in ("production", "base", *MODELS):
        raise TrainingError(f"start_from {start_from!r} is not 'production', 'base' or one of {sorted(MODELS)}")
    if start_from in MODELS:
        chosen = lake.recorded(start_from)
        return chosen.resolve(home) / BEST_WEIGHTS, {start_from: chosen.version}
    if start_from == "production" and lake.get().versions(PRODUCTION):
        production = lake.recorded(PRODUCTION)
        promoted = read_promotion(production.resolve(home))["production"]
        return home / promoted["path"] / BEST_WEIGHTS, {PRODUCTION: production.version, promoted["model"]: promoted["version"]}
    return base.resolve(home) / BEST_WEIGHTS, {"base_model": base.version}


def model_asset(asset: str, recipe_name: str, data_asset: str) -> dg.AssetsDefinition:
    recipe = RECIPES[recipe_name]
    retrained = asset in RETRAINED
    extra = {"start_from": (str, "production")} if retrained else {}
    config_class = recipe_config(recipe, extra)
    tiles = f", on {recipe.tile}-px tiles of the frames" if recipe.tile else ""
    start = "from the production checkpoint (or base_model before any promotion)" if retrained else "from base_model"

    ins = {"data": dg.AssetIn(data_asset), "base": dg.AssetIn("base_model")}
    if data_asset != EVALUATION_DATA:  # an asset key may be an input once
        ins["evaluation"] = dg.AssetIn(EVALUATION_DATA)

    @dg.asset(
        name=asset, group_name=RETRAINING_GROUP if retrained else "models", kinds={"pytorch"}, pool="gpu",
        code_version="2", ins=ins,
        description=f"YOLO trained with the {recipe_name} recipe on {data_asset}{tiles}, {start}; "
                    f"scored on {EVALUATION_DATA}'s val split.",
    )
    def _model(
        context: dg.AssetExecutionContext, config: config_class, lake: LakeResource, settings: SettingsResource,
        yolo: YoloRuntime, training_child: TrainingChild, **inputs: LakeHandle,
    ) -> dg.Output[LakeHandle]:
        home = lake.get().home
        data, base = inputs["data"], inputs["base"]
        evaluation = inputs.get("evaluation", data)
        checkpoint, start = (_starting_checkpoint(lake, base, config.start_from) if retrained
                             else (base.resolve(home) / BEST_WEIGHTS, {"base_model": base.version}))
        return _train(
            context, recipe=configured_recipe(recipe, config), data_yaml=data.resolve(home) / "data.yaml",
            eval_data=evaluation.resolve(home) / "data.yaml", model=str(checkpoint),
            upstream={data_asset: data.version, EVALUATION_DATA: evaluation.version, **start, **data.upstream},
            remap=config.remap, retrain=config.retrain, lake=lake, settings=settings, runtime=yolo,
            child=training_child,
        )

    return _model


model_assets = [model_asset(asset, recipe, data) for asset, (recipe, data) in MODELS.items()]
