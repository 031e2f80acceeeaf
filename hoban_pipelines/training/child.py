"""The training subprocess: ``python -m hoban_pipelines.training.child``.

Dagster starts it (``PipesSubprocessClient``, or ``PipesK8sClient`` in a pod of its own) with
the job in ``context.extras`` (the keys of ``training.job.TrainJob``). It streams every epoch's
losses and metrics back as log lines and custom messages, and ends with ``run_dir/summary.json``
(metrics, pictures, hashes), which the asset publishes with the weights. A retry after a killed attempt resumes from
``run_dir/weights/last.pt``.

Without Dagster, ``--job job.json`` names the job and progress goes to stderr (dagster-pipes
warns that it is not orchestrated and its calls become no-ops).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable

# before ultralytics is imported: it reads this once, and nothing here may reach the internet
os.environ.setdefault("YOLO_OFFLINE", "1")

from dagster_pipes import PipesContext, open_dagster_pipes  # noqa: E402

from hoban_pipelines.core.yolo_format import YoloFormatError, read_class_names  # noqa: E402
from hoban_pipelines.training.job import (  # noqa: E402
    EVAL_DIR,
    LAST_WEIGHTS,
    SUMMARY_FILE,
    VIEW_DIR,
    RunState,
    TrainJob,
    check_classes,
    cpu_threads,
    load_checkpoint,
    offline_amp_check,
    record_job,
    resolve_device,
    run_state,
    train_args,
)
from hoban_pipelines.training.profiles import evaluation_imgsz, for_profile  # noqa: E402
from hoban_pipelines.training.recipes import TrainingError  # noqa: E402
from hoban_pipelines.training.summary import METRIC_COLUMNS, METRIC_LABELS, TrainSummary, summarize_run  # noqa: E402
from hoban_pipelines.training.view import TrainingDataError, build_training_view, longest_side  # noqa: E402


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
            **{METRIC_LABELS[key]: round(float(metrics.get(column, 0.0)), 5) for key, column in METRIC_COLUMNS.items()},
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
    size = for_profile(job.recipe, job.profile, device=device, finetune=from_checkpoint)
    try:
        view = build_training_view(
            job.data_yaml, run_dir / VIEW_DIR, tile=size.recipe.tile, tile_over=size.recipe.tile_over,
            background_tiles=size.recipe.background_tiles, max_train_entries=size.sample_budget,
        )
        evaluation = build_training_view(job.eval_data, run_dir / EVAL_DIR, splits=("val",)) if job.eval_data else view
    except TrainingDataError as exc:
        raise TrainingError(str(exc)) from None
    entries = view.entries["train"]
    recipe = size.trained_on(entries)
    eval_imgsz = evaluation_imgsz(recipe, longest_side(evaluation.data_yaml))
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
            model = YOLO(run_dir / LAST_WEIGHTS)
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
            log(f"best epoch {summary.best_epoch}: mAP50 {summary.map50:.3f} mAP50-95 {summary.map50_95:.3f}; "
                f"summary in {Path(job.run_dir) / SUMMARY_FILE}")
    except (TrainingError, OSError, json.JSONDecodeError) as exc:
        # the pipes context has reported the error to Dagster; one line for the console
        print(f"training failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
