"""What a published checkpoint and the model comparison show a person: the build of each
version as a ``BuildReport`` (metrics, per-class table, curves, confusion matrix)."""

from __future__ import annotations

import json
from pathlib import Path

from hoban_pipelines.core.report import BuildReport, Picture, Table
from hoban_pipelines.training.job import (
    BEST_WEIGHTS, CONFUSION_PNG, CURVES_PNG, RECIPE_FILE, SUMMARY_FILE, CheckpointInfo, TrainJob,
    write_base_version, write_checkpoint_version,
)
from hoban_pipelines.training.plots import comparison_plot
from hoban_pipelines.training.summary import METRIC_COLUMNS, comparison_table

COMPARISON_CSV, COMPARISON_PNG = "comparison.csv", "comparison.png"


def model_report(version: Path) -> BuildReport:
    """The metrics of the checkpoint version at ``version``, from its own summary and job."""
    summary = json.loads((Path(version) / SUMMARY_FILE).read_text())
    job = json.loads((Path(version) / RECIPE_FILE).read_text())
    per_class = Table(summary["per_class"], ["class", "images", "instances", *METRIC_COLUMNS])
    return BuildReport(details={
        "val/mAP50": summary["map50"],
        "val/mAP50-95": summary["map50_95"],
        "val/precision": summary["precision"],
        "val/recall": summary["recall"],
        "best_epoch": summary["best_epoch"],
        "epochs": summary["epochs"],
        "per_class": per_class,
        "train_seconds": round(summary["train_seconds"], 1),
        "device": summary["device"],
        "imgsz": summary["imgsz"],
        "eval_data": Path(summary["eval_data"]),
        "eval_imgsz": summary["eval_imgsz"],
        "profile": job["profile"],
        "recipe": summary["recipe"],
        "best_sha256": summary["best_sha256"],
        "last_sha256": summary["last_sha256"],
        "best_pt": Path(BEST_WEIGHTS),
        "curves": Picture(CURVES_PNG, "losses and metrics per epoch"),
        "confusion": Picture(CONFUSION_PNG, "confusion matrix"),
    })


def build_checkpoint(run_dir: Path, out_dir: Path, job: TrainJob) -> BuildReport:
    """A finished run's checkpoint version in ``out_dir``, named by best.pt's sha256."""
    digest = write_checkpoint_version(run_dir, out_dir, job)
    report = model_report(out_dir)
    report.digest = digest
    return report


def build_base_checkpoint(checkpoint: CheckpointInfo, out_dir: Path) -> BuildReport:
    """A configured base checkpoint copied into ``out_dir``, named by its sha256."""
    return BuildReport(
        details={"source": checkpoint.path, "sha256": checkpoint.sha256, "classes": checkpoint.classes},
        digest=write_base_version(checkpoint, out_dir),
    )


def build_comparison(models: dict[str, Path], out_dir: Path, extra: dict[str, dict] | None = None) -> BuildReport:
    """Every model version's metrics side by side (``models``: asset -> version folder), as a
    CSV, a plot and tables; a model without a summary (a configured checkpoint) is left out.
    ``extra``: more columns of a model's overall row (model -> column -> value), such as the
    sliced evaluation's figures."""
    summaries = {name: json.loads((root / SUMMARY_FILE).read_text())
                 for name, root in models.items() if (root / SUMMARY_FILE).is_file()}
    table = comparison_table(summaries)
    for model, columns in (extra or {}).items():
        overall = (table["model"] == model) & (table["class"] == "all")
        for column, value in columns.items():
            table.loc[overall, column] = value
    table.to_csv(Path(out_dir) / COMPARISON_CSV, index=False)
    comparison_plot(table, Path(out_dir) / COMPARISON_PNG)
    rows = table.to_dict("records")
    columns = list(table.columns)
    return BuildReport(
        counts={"models": len(summaries)},
        details={
            "models": Table([r for r in rows if r["class"] == "all"], columns),
            "per_class": Table([r for r in rows if r["class"] != "all"], columns),
            "plot": Picture(COMPARISON_PNG, "model comparison"),
        },
    )
