"""Crop classifiers as checkpoints: the one training path ``roi_classifier`` and ``crop_verifier``
share. Like the detectors, each trains in the Pipes child (``training.classifier_child``) in the
``gpu`` pool, publishes its weights and scores as an immutable lake version with the job's reuse
key, and is reused instead of trained again while that job is unchanged."""

from pathlib import Path

import dagster as dg

from hoban_pipelines.assets.publishing import (
    Published, asset_name, lake_output, partition_of, publish, published_with_key,
)
from hoban_pipelines.resources import LakeResource, SettingsResource, TrainingChild, YoloRuntime
from hoban_pipelines.resources.kubernetes import CLASSIFIER_CHILD_MODULE
from hoban_pipelines.training.classifier import ClassifierJob, ClassifierRecipe, classifier_report, write_classifier_version
from hoban_pipelines.training.job import resolve_device

SCRATCH = "runs"  # under HOBAN_HOME, as the detectors' runs


def train_crop_classifier(
    context: dg.AssetExecutionContext, *, recipe: ClassifierRecipe, crops: Path, classes: list[str], eval_split: str,
    upstream: dict[str, str], retrain: bool, lake: LakeResource, settings: SettingsResource, runtime: YoloRuntime,
    child: TrainingChild,
) -> dg.Output:
    store = lake.get()
    asset = asset_name(context)
    device = resolve_device(runtime.device)
    run = context.run.root_run_id or context.run.run_id  # a retried run keeps its scratch folder
    run_dir = store.home / SCRATCH / asset / (partition_of(context) or "") / run
    job = ClassifierJob(
        recipe=recipe, crops=str(crops), classes=classes, eval_split=eval_split, run_dir=str(run_dir),
        profile=settings.get().train_profile, device=device, threads=runtime.threads,
    )
    key = job.reuse_key(upstream)
    earlier = None if retrain else published_with_key(context, lake, key)
    if earlier:
        context.log.info(f"{asset}: this exact job is published as {earlier.version}; reusing it "
                         "(run config retrain: true trains anew)")
        root = earlier.resolve(store.home)
        return lake_output(Published(handle=earlier, root=root, reused=True, report=classifier_report(root)))
    context.log.info(f"training {asset}: {recipe.model} at imgsz {recipe.imgsz} on {device}, classes {classes}")
    child.run(context, extras=job.as_extras(), env={"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false"},
              home=store.home, module=CLASSIFIER_CHILD_MODULE)
    return lake_output(publish(
        context, lake, lambda out: write_classifier_version(Path(job.run_dir), out, job),
        params={"reuse_key": key, "profile": job.profile, "device": device}, upstream=upstream, classes=classes,
    ))
