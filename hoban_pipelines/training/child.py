"""The training subprocess: ``python -m hoban_pipelines.training.child``.

Dagster's ``PipesSubprocessClient`` starts it with the job in ``context.extras`` (the keys of
``training.TrainJob``). It streams every epoch's losses and metrics back as log lines and
custom messages, and ends with one asset materialization whose data version is the sha256 of
best.pt. A retry after a killed attempt resumes from ``run_dir/weights/last.pt``.

Without Dagster, ``--job job.json`` names the job and progress goes to stderr (dagster-pipes
warns that it is not orchestrated and its calls become no-ops); the summary is written to
``run_dir/summary.json`` either way.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

# before ultralytics is imported: it reads this once, and nothing here may reach the internet
os.environ.setdefault("YOLO_OFFLINE", "1")

from dagster_pipes import PipesContext, open_dagster_pipes  # noqa: E402

from hoban_pipelines.core.pictures import markdown_table, png_markdown  # noqa: E402
from hoban_pipelines.training.job import (  # noqa: E402
    RunState,
    TrainingError,
    TrainJob,
    TrainSummary,
    check_classes,
    cpu_threads,
    demo_samples,
    evaluation_imgsz,
    for_profile,
    load_checkpoint,
    offline_amp_check,
    record_job,
    resolve_device,
    run_state,
    summarize_run,
    train_args,
)
from hoban_pipelines.training.view import TrainingDataError, build_training_view, longest_side  # noqa: E402
from hoban_pipelines.core.yolo_format import YoloFormatError, read_class_names  # noqa: E402

SUMMARY_FILE = "summary.json"
VIEW_DIR = "data"  # the training view (whole images or tiles) inside the run folder
EVAL_DIR = "eval"  # the evaluation set's view


class EpochReporter:
    """ultralytics ``on_fit_epoch_end`` callback: one log line and one custom message per epoch."""

    def __init__(self, log: Callable[[str], None], context: PipesContext):
        self.log = log
        self.context = context
        self.training_over = False

    def __call__(self, trainer) -> None:
        # ultralytics calls this once more after validating best.pt; summarize_run reports that
        if self.training_over:
            return
        self.training_over = bool(trainer.stop)
        losses = trainer.label_loss_items(trainer.tloss) if trainer.tloss else {}
        metrics = trainer.metrics or {}
        message = {
            "epoch": trainer.epoch + 1,
            "epochs": trainer.epochs,
            "seconds": round(float(trainer.epoch_time or 0.0), 1),
            **{key: round(float(value), 5) for key, value in losses.items()},
            **{key: round(float(metrics.get(column, 0.0)), 5) for key, column in (
                ("precision", "metrics/precision(B)"),
                ("recall", "metrics/recall(B)"),
                ("mAP50", "metrics/mAP50(B)"),
                ("mAP50-95", "metrics/mAP50-95(B)"),
            )},
        }
        loss_text = " ".join(f"{key.split('/', 1)[1]} {value:.3f}" for key, value in message.items() if "/" in key)
        self.log(
            f"epoch {message['epoch']}/{message['epochs']} ({message['seconds']} s): {loss_text} | "
            f"P {message['precision']:.3f} R {message['recall']:.3f} "
            f"mAP50 {message['mAP50']:.3f} mAP50-95 {message['mAP50-95']:.3f}"
        )
        self.context.report_custom_message(message)


def train(job: TrainJob, context: PipesContext, log: Callable[[str], None]) -> TrainSummary:
    """Check the job, build the training view, train (fresh, resumed or not at all when already
    finished) and summarize on the evaluation set."""
    import torch
    import ultralytics.engine.trainer
    from ultralytics import YOLO

    run_dir = Path(job.run_dir).resolve()
    device = resolve_device(job.device)
    threads = cpu_threads(job.threads)
    state, note = run_state(job)  # before anything is written: the folder may hold another job's run
    try:
        classes = read_class_names(Path(job.data_yaml))
    except YoloFormatError as exc:
        raise TrainingError(str(exc)) from None
    if job.classes is not None and list(job.classes) != classes:
        raise TrainingError(f"{job.data_yaml} names classes {classes}, but the job expects {list(job.classes)}")
    from_checkpoint = str(job.model).endswith(".pt")  # else a model yaml: training from scratch
    if from_checkpoint:
        base = load_checkpoint(job.model)
        if check_classes(base.classes, classes, job.remap):
            log(f"re-heading {base.path} from classes {base.classes} to {classes}")
    sized = for_profile(job.recipe, job.profile, device=device)
    # a finetune in the demo profile sees its share of samples, if need be less than an epoch
    budget = demo_samples(job.recipe, device) if job.profile == "demo" and from_checkpoint else 0
    try:
        view = build_training_view(
            job.data_yaml, run_dir / VIEW_DIR, tile=sized.tile, tile_over=sized.tile_over,
            background_tiles=sized.background_tiles, max_train_entries=budget,
        )
        evaluation = build_training_view(job.eval_data, run_dir / EVAL_DIR, splits=("val",)) if job.eval_data else view
    except TrainingDataError as exc:
        raise TrainingError(str(exc)) from None
    # finetunes share the demo's sample budget; training from scratch needs all its epochs
    recipe = for_profile(
        job.recipe, job.profile, train_images=view.entries["train"] if from_checkpoint else None, device=device,
    )
    eval_imgsz = evaluation_imgsz(recipe, longest_side(evaluation.data_yaml))
    entries = view.entries["train"]
    sample = (f" (a fixed sample of the {entries + view.sampled_out['train']}: the {job.profile} profile's budget)"
              if view.sampled_out["train"] else "")
    tiling = (f" ({view.tiles['train']} tiles of {view.tile} px cut from the largest, "
              f"{view.background_tiles_dropped['train']} label-free ones left out)") if view.tiles["train"] else ""
    log(f"training view {view.data_yaml.parent}: {entries} training entries{sample} from {view.images['train']} "
        f"images{tiling}; {job.profile} profile: {recipe.epochs} epoch{'s' * (recipe.epochs != 1)} at imgsz "
        f"{recipe.imgsz}; scored on "
        f"{job.eval_data or job.data_yaml} at imgsz {eval_imgsz}")
    log(note)
    record_job(job)
    if state is not RunState.FINISHED:
        if state is RunState.UNFINISHED:
            model = YOLO(run_dir / "weights" / "last.pt")
            # ultralytics takes the rest from the checkpoint; these may change between attempts
            args = {"resume": True, "data": str(view.data_yaml), "device": device, "workers": job.workers,
                    "cache": job.cache, "save_dir": str(run_dir)}
        else:
            model = YOLO(job.model)
            args = train_args(
                recipe, data_yaml=view.data_yaml, model=job.model, device=device, workers=job.workers,
                project=run_dir.parent, name=run_dir.name, amp=job.amp, cache=job.cache,
            )
        # ultralytics' own AMP check downloads weights; this one tests the model being trained
        def amp_check(trained) -> bool:
            passed = offline_amp_check(trained)
            log(f"AMP check (offline, on the model being trained): {'passed, mixed precision' if passed else 'failed, float32'}")
            return passed

        ultralytics.engine.trainer.check_amp = amp_check
        model.add_callback("on_pretrain_routine_start", lambda trainer: torch.set_num_threads(threads))
        model.add_callback("on_fit_epoch_end", EpochReporter(log, context))
        model.train(**args)
    summary = summarize_run(
        run_dir, classes, recipe=recipe, eval_yaml=evaluation.data_yaml, eval_source=job.eval_data or job.data_yaml,
        eval_imgsz=eval_imgsz, device=device, threads=threads,
    )
    (run_dir / SUMMARY_FILE).write_text(json.dumps({**summary.as_dict(), "view": view.as_dict()}, indent=2))
    return summary


def materialization_metadata(job: TrainJob, summary: TrainSummary) -> dict[str, Any]:
    """Dagster metadata of the trained model, as dagster-pipes typed values."""
    def typed(value: Any, kind: str) -> dict[str, Any]:
        return {"raw_value": value, "type": kind}

    table = markdown_table(
        [{k: "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else v) for k, v in row.items()}
         for row in summary.per_class],
        ["class", "images", "instances", "precision", "recall", "map50", "map50_95"],
    )
    return {
        "val/mAP50": typed(summary.map50, "float"),
        "val/mAP50-95": typed(summary.map50_95, "float"),
        "val/precision": typed(summary.precision, "float"),
        "val/recall": typed(summary.recall, "float"),
        "best_epoch": typed(summary.best_epoch, "int"),
        "epochs": typed(summary.epochs, "int"),
        "per_class": typed(table, "md"),
        "train_seconds": typed(round(summary.train_seconds, 1), "float"),
        "device": typed(summary.device, "text"),
        "imgsz": typed(summary.imgsz, "int"),
        "eval_data": typed(summary.eval_data, "path"),
        "eval_imgsz": typed(summary.eval_imgsz, "int"),
        "profile": typed(job.profile, "text"),
        "recipe": typed(summary.recipe, "json"),
        "best_sha256": typed(summary.best_sha256, "text"),
        "last_sha256": typed(summary.last_sha256, "text"),
        "best_pt": typed(str(summary.best_pt), "path"),
        "curves": typed(png_markdown(summary.curves_png, "losses and metrics per epoch"), "md"),
        "confusion": typed(png_markdown(summary.confusion_png, "confusion matrix"), "md"),
    }


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hoban_pipelines.training.child", description=__doc__.split("\n\n")[0])
    parser.add_argument("--job", type=Path, help="job JSON (the keys of TrainJob) for a run without Dagster")
    options = parser.parse_args(argv)
    try:
        with open_dagster_pipes() as context:
            if options.job:
                extras, log = json.loads(options.job.read_text()), _to_stderr
            elif isinstance(context, PipesContext):
                extras, log = dict(context.extras), context.log.info
            else:
                raise TrainingError("not started by Dagster: name the job with --job job.json")
            job = TrainJob.from_extras(extras)
            summary = train(job, context, log)
            context.report_asset_materialization(
                metadata=materialization_metadata(job, summary), data_version=summary.best_sha256
            )
            log(f"best epoch {summary.best_epoch}: mAP50 {summary.map50:.3f} mAP50-95 {summary.map50_95:.3f}; "
                f"summary in {Path(job.run_dir) / SUMMARY_FILE}")
    except (TrainingError, OSError, json.JSONDecodeError) as exc:
        # the pipes context has reported the error to Dagster; one line for the console
        print(f"training failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
