"""The summary of a finished run (``TrainSummary``: best.pt validated once, per-epoch history,
pictures, hashes), and the table comparing the summaries of several models.

Facts about ultralytics 8.4 this module relies on (read from its source):
- ``best.pt`` is the epoch with the highest mAP50-95 (its fitness weights are [0, 0, 0, 1]).
- ``results.csv`` gets one row per epoch, appended on resume; a row is written before that
  epoch's checkpoint, so a run killed in between repeats the epoch and the row.
- The validator fills its confusion matrix only with ``plots=True``, at the mAP threshold
  (conf 0.001), and its image mosaics fetch a font from the internet; validation here fills
  the matrix at conf 0.25 and skips the mosaics.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from hoban_pipelines.core.lake import file_sha256
from hoban_pipelines.training.job import BEST_WEIGHTS, CONFUSION_PNG, CURVES_PNG, LAST_WEIGHTS, RESULTS_CSV, cpu_threads
from hoban_pipelines.training.recipes import TrainingError, TrainRecipe

# our name of each validation metric -> its results.csv column
METRIC_COLUMNS = {
    "precision": "metrics/precision(B)",
    "recall": "metrics/recall(B)",
    "map50": "metrics/mAP50(B)",
    "map50_95": "metrics/mAP50-95(B)",
}
# how the epoch messages and the plots write them
METRIC_LABELS = {"precision": "precision", "recall": "recall", "map50": "mAP50", "map50_95": "mAP50-95"}
CONFUSION_CONF = 0.25  # ultralytics' predict default: boxes below it are not detections to a user
# the comparison table: one row per model and class
METRICS = list(METRIC_COLUMNS)
COLUMNS = ["model", "class", *METRICS, "scored_on", "eval_imgsz", "best_epoch", "epochs", "train_seconds", "device"]


@dataclass(frozen=True)
class TrainSummary:
    """A finished run: best.pt validated once, per-epoch history, pictures and hashes."""

    run_dir: Path
    device: str
    recipe: dict[str, Any]  # as trained: sized by the profile
    imgsz: int
    epochs: int
    eval_data: str  # the data.yaml whose val split the metrics below are on
    eval_imgsz: int  # whole images are scored at the scale the model trained at
    best_epoch: int  # 1-based, the epoch saved as best.pt
    precision: float
    recall: float
    map50: float
    map50_95: float
    train_seconds: float
    per_class: list[dict[str, Any]]  # class, images, instances, precision, recall, map50, map50_95
    confusion: list[list[int]]  # [predicted][true] at conf > CONFUSION_CONF; background last
    history: list[dict[str, float]]  # results.csv, one dict per epoch
    best_pt: Path
    last_pt: Path
    best_sha256: str
    last_sha256: str
    curves_png: Path
    confusion_png: Path

    def as_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


def read_results(csv: Path) -> pd.DataFrame:
    """results.csv, one row per epoch: the last row of an epoch that a resume repeated."""
    if not csv.is_file():
        raise TrainingError(f"{csv} does not exist: the run did not finish a single epoch")
    table = pd.read_csv(csv)
    table.columns = [c.strip() for c in table.columns]
    missing = sorted(set(METRIC_COLUMNS.values()) - set(table.columns))
    if missing or table.empty:
        raise TrainingError(f"{csv} lacks rows or columns {missing}; was it written by ultralytics 8.4?")
    return table.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)


def _train_seconds(times: pd.Series) -> float:
    # 'time' counts from the start of each attempt; a resume starts it again
    restarts = times.diff().fillna(0) < 0
    segment_ends = times[restarts.shift(-1, fill_value=True)]
    return float(segment_ends.sum())


def _nullable(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def validate_checkpoint(checkpoint: Path, data_yaml: Path, imgsz: int, device: str, save_dir: Path, threads: int = 0):
    """ultralytics' DetMetrics of one checkpoint on the dataset's val split, confusion matrix filled."""
    import torch
    from ultralytics import YOLO
    from ultralytics.models.yolo.detect import DetectionValidator
    from ultralytics.utils.metrics import ConfusionMatrix

    class ConfusionAtThreshold(ConfusionMatrix):
        # the validator passes its mAP threshold (0.001), which counts thousands of junk boxes as FP
        def process_batch(self, detections, batch, conf=CONFUSION_CONF, iou_thres=0.45):
            super().process_batch(detections, batch, conf=CONFUSION_CONF, iou_thres=iou_thres)

    class Validator(DetectionValidator):
        def init_metrics(self, model):
            super().init_metrics(model)
            self.confusion_matrix = ConfusionAtThreshold(names=model.names)
            torch.set_num_threads(cpu_threads(threads))  # after ultralytics' select_device set its own

        # plots=True fills the confusion matrix; these two draw image mosaics with a downloaded font
        def plot_val_samples(self, batch, ni):
            pass

        def plot_predictions(self, batch, preds, ni):
            pass

    return YOLO(checkpoint).val(
        validator=Validator, data=str(data_yaml), imgsz=imgsz, device=device, plots=True,
        project=str(save_dir.parent), name=save_dir.name, exist_ok=True, verbose=False,
    )


def summarize_run(
    run_dir: Path, classes: list[str], *, recipe: TrainRecipe, eval_yaml: Path, eval_source: str, eval_imgsz: int,
    device: str, threads: int = 0,
) -> TrainSummary:
    """Metrics, pictures and hashes of the training run in ``run_dir``; best.pt scored on ``eval_yaml``'s val."""
    from hoban_pipelines.training.plots import plot_confusion, plot_curves  # here: plots imports this module

    run_dir = Path(run_dir)
    best, last = run_dir / BEST_WEIGHTS, run_dir / LAST_WEIGHTS
    for checkpoint in (best, last):
        if not checkpoint.is_file():
            raise TrainingError(f"{checkpoint} does not exist: the run in {run_dir} did not finish")
    history = read_results(run_dir / RESULTS_CSV)
    # ultralytics 8.4 keeps the epoch with the highest mAP50-95 as best.pt (first one on ties)
    best_row = history.loc[history[METRIC_COLUMNS["map50_95"]].idxmax()]
    metrics = validate_checkpoint(best, eval_yaml, eval_imgsz, device, run_dir / "val", threads)
    per_class = []
    positions = {int(cls): position for position, cls in enumerate(metrics.ap_class_index)}
    for index, name in enumerate(classes):
        scores = metrics.class_result(positions[index]) if index in positions else (math.nan,) * 4
        per_class.append({
            "class": name,
            "images": int(metrics.nt_per_image[index]),
            "instances": int(metrics.nt_per_class[index]),
            **{key: _nullable(value) for key, value in zip(METRIC_COLUMNS, scores)},
        })
    confusion = metrics.confusion_matrix.matrix.astype(int)
    curves_png = plot_curves(history, int(best_row["epoch"]), run_dir / CURVES_PNG)
    confusion_png = plot_confusion(confusion, [*classes, "background"], run_dir / CONFUSION_PNG)
    precision, recall, map50, map50_95 = (float(v) for v in metrics.mean_results())
    return TrainSummary(
        run_dir=run_dir,
        device=device,
        recipe=recipe.as_dict(),
        imgsz=recipe.imgsz,
        epochs=len(history),
        eval_data=eval_source,
        eval_imgsz=eval_imgsz,
        best_epoch=int(best_row["epoch"]),
        precision=precision,
        recall=recall,
        map50=map50,
        map50_95=map50_95,
        train_seconds=_train_seconds(history["time"]),
        per_class=per_class,
        confusion=confusion.tolist(),
        history=[
            {k: int(v) if k == "epoch" else float(v) for k, v in row.items() if not k.startswith("lr/")}
            for row in history.to_dict("records")
        ],
        best_pt=best,
        last_pt=last,
        best_sha256=file_sha256(best),
        last_sha256=file_sha256(last),
        curves_png=curves_png,
        confusion_png=confusion_png,
    )


def dataset_name(data_yaml: str | None) -> str | None:
    """``go2k_split`` for a lake version's data.yaml (lake/<asset>/<version>/data.yaml), else its folder."""
    if not data_yaml:
        return None
    path = Path(data_yaml)
    return path.parent.parent.name if path.parent.parent.parent.name == "lake" else path.parent.name


def comparison_table(summaries: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Side-by-side model metrics, like the team's results table, from each model's summary
    (``TrainSummary.as_dict``): one 'all' row per model, then one row per model and class."""
    rows = []
    for model, summary in summaries.items():
        common = {k: summary.get(k) for k in ("eval_imgsz", "best_epoch", "epochs", "train_seconds", "device")}
        common["scored_on"] = dataset_name(summary.get("eval_data"))
        rows.append({"model": model, "class": "all", **{m: summary.get(m) for m in METRICS}, **common})
        for per in summary.get("per_class", []):
            rows.append({"model": model, "class": per["class"], **{m: per.get(m) for m in METRICS}, **common})
    return pd.DataFrame(rows, columns=COLUMNS)
