"""Pictures of training: a run's per-epoch curves and confusion matrix, and the bar chart
comparing models. matplotlib is imported inside each function (the Agg canvas of a ``Figure``,
no pyplot state; the DejaVu font ships with matplotlib), so importing this module stays quick."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hoban_pipelines.training.summary import CONFUSION_CONF, METRIC_COLUMNS, METRIC_LABELS, METRICS

def plot_curves(history: pd.DataFrame, best_epoch: int, path: Path) -> Path:
    """Losses (train solid, val dashed) and P/R/mAP per epoch, the best epoch marked."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(11, 4), dpi=100)
    losses, scores = figure.subplots(1, 2)
    epochs = history["epoch"]
    for column in (c for c in history.columns if c.startswith("train/")):
        loss = column.split("/", 1)[1]
        line = losses.plot(epochs, history[column], marker=".", label=f"train {loss}")[0]
        if f"val/{loss}" in history:
            losses.plot(epochs, history[f"val/{loss}"], "--", marker=".", color=line.get_color(), label=f"val {loss}")
    losses.set_title("losses")
    for key, column in METRIC_COLUMNS.items():
        scores.plot(epochs, history[column], marker=".", label=METRIC_LABELS[key])
    scores.set_title("validation")
    scores.set_ylim(0, 1)
    for axes in (losses, scores):
        axes.axvline(best_epoch, color="grey", linewidth=0.8, linestyle=":")
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.legend(fontsize=8)
        axes.grid(alpha=0.3)
    figure.suptitle(f"best epoch {best_epoch} (dotted)")
    figure.tight_layout()
    figure.savefig(path)
    return path


def plot_confusion(matrix, labels: list[str], path: Path) -> Path:
    """Counts of predicted (rows) against true (columns) classes, background last."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(1.6 * len(labels) + 2, 1.4 * len(labels) + 1.5), dpi=100)
    axes = figure.subplots()
    image = axes.imshow(matrix, cmap="Blues")
    peak = max(int(max(map(max, matrix))), 1)
    for row, values in enumerate(matrix):
        for column, count in enumerate(values):
            colour = "white" if count > peak / 2 else "black"
            axes.text(column, row, str(int(count)), ha="center", va="center", color=colour)
    axes.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("true")
    axes.set_ylabel("predicted")
    axes.set_title(f"best.pt on the val split, conf > {CONFUSION_CONF}")
    figure.colorbar(image, ax=axes)
    figure.tight_layout()
    figure.savefig(path)
    return path


def comparison_plot(table: pd.DataFrame, path: Path) -> Path:
    """Grouped bars of every metric per model (overall), and mAP50 per class, from ``summary.comparison_table``."""
    from matplotlib.figure import Figure

    overall = table[table["class"] == "all"]
    per_class = table[table["class"] != "all"].pivot_table(index="model", columns="class", values="map50")
    figure = Figure(figsize=(12, 4), dpi=100)
    left, right = figure.subplots(1, 2)
    width = 0.8 / len(METRICS)
    x = np.arange(len(overall))
    for i, metric in enumerate(METRICS):
        left.bar(x + i * width, overall[metric].astype(float), width, label=metric)
    left.set_xticks(x + width * (len(METRICS) - 1) / 2, overall["model"], rotation=15, ha="right", fontsize=8)
    left.set_ylim(0, 1)
    left.set_title("validation, all classes")
    left.legend(fontsize=8)
    if not per_class.empty:
        per_class.plot.bar(ax=right, rot=15, ylim=(0, 1), title="mAP50 per class", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
