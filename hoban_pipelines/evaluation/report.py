"""What the evaluation shows a person: the sweep plots, the failure strips and the report card.

Plots are drawn on matplotlib's Agg canvas (``Figure``, no pyplot state; its bundled font), the
failure strips with OpenCV from the frames themselves. Each builder writes into a version folder
and returns a ``BuildReport``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import pandas as pd

from hoban_pipelines.core.pictures import CLASS_COLOURS
from hoban_pipelines.core.report import Table
from hoban_pipelines.evaluation.metrics import Scores, match

SCORE_COLUMNS = ["precision", "recall", "f1", "tp", "fp", "fn"]
STRIP_CROPS = 12  # crops in a failure strip
ANNOTATED_CELLS = 64  # a heatmap writes its values in the cells up to this many (text is most of a plot's time)
CROP_PX = 160


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def plot_conf_curves(curve: pd.DataFrame, path: Path, title: str, marks: Sequence[float] = ()) -> Path:
    """P, R and F1 against confidence, and the PR curve (``curve``: conf, precision, recall, f1)."""
    figure = _figure(11, 4)
    against_conf, pr = figure.subplots(1, 2)
    for column in ("precision", "recall", "f1"):
        against_conf.plot(curve["conf"], curve[column], label=column)
    for conf in marks:
        against_conf.axvline(conf, color="grey", linestyle=":", linewidth=0.8)
    against_conf.set_xlabel("confidence threshold")
    against_conf.set_ylim(0, 1.02)
    against_conf.legend()
    against_conf.grid(alpha=0.3)
    pr.plot(curve["recall"], curve["precision"], marker=".", markersize=3)
    pr.set_xlabel("recall")
    pr.set_ylabel("precision")
    pr.set_xlim(0, 1.02)
    pr.set_ylim(0, 1.02)
    pr.grid(alpha=0.3)
    pr.set_title("precision-recall over confidence")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path)
    return path


def plot_heatmap(table: pd.DataFrame, path: Path, title: str, xlabel: str, ylabel: str, mark: tuple | None = None) -> Path:
    """A pivoted sweep table as a heatmap with each cell's value written in it."""
    figure = _figure(max(6, 0.9 * table.shape[1] + 3), max(3, 0.38 * table.shape[0] + 1.6))
    axes = figure.subplots()
    values = table.to_numpy(float)
    image = axes.imshow(values, cmap="viridis", aspect="auto")
    axes.set_xticks(range(table.shape[1]), [f"{c:g}" if isinstance(c, float) else str(c) for c in table.columns])
    axes.set_yticks(range(table.shape[0]), ["/".join(f"{p:g}" if isinstance(p, float) else str(p)
                                                     for p in (i if isinstance(i, tuple) else (i,)))
                                            for i in table.index])
    low, high = np.nanmin(values), np.nanmax(values)
    for (row, column), value in np.ndenumerate(values if values.size <= ANNOTATED_CELLS else np.zeros((0, 0))):
        if np.isfinite(value):
            bright = value > (low + high) / 2
            axes.text(column, row, f"{value:.3f}", ha="center", va="center", fontsize=7,
                      color="black" if bright else "white")
    if mark is not None:
        row, column = table.index.get_loc(mark[0]), table.columns.get_loc(mark[1])
        from matplotlib.patches import Rectangle

        axes.add_patch(Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    figure.colorbar(image, ax=axes, shrink=0.8)
    figure.tight_layout()
    figure.savefig(path)
    return path


def plot_recall_by_size(sizes: pd.DataFrame, path: Path, title: str) -> Path:
    """Recall per truth-size bucket for each labelled set of rows (``sizes``: label, bucket, truth, recall)."""
    figure = _figure(8, 3.6)
    axes = figure.subplots()
    labels = list(dict.fromkeys(sizes["label"]))
    buckets = list(dict.fromkeys(sizes["bucket"]))
    width = 0.8 / max(len(labels), 1)
    for offset, label in enumerate(labels):
        mine = sizes[sizes["label"] == label].set_index("bucket").reindex(buckets)
        axes.bar(np.arange(len(buckets)) + offset * width, mine["recall"].fillna(0), width, label=label)
    truth = sizes.drop_duplicates("bucket").set_index("bucket").reindex(buckets)["truth"].fillna(0).astype(int)
    axes.set_xticks(np.arange(len(buckets)) + width * (len(labels) - 1) / 2,
                    [f"{b}\n({n} boxes)" for b, n in zip(buckets, truth)])
    axes.set_xlabel("ground-truth size, sqrt(w x h) in px")
    axes.set_ylabel("recall")
    axes.set_ylim(0, 1.05)
    axes.legend()
    axes.grid(alpha=0.3, axis="y")
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path)
    return path


def plot_confusions(matrices: dict[str, Scores], path: Path) -> Path:
    """Confusion matrices side by side (rows truth, columns predicted)."""
    figure = _figure(5.2 * len(matrices), 4.4)
    for axes, (title, scores) in zip(np.atleast_1d(figure.subplots(1, len(matrices))), matrices.items()):
        values = np.asarray(scores.confusion, float)
        axes.imshow(values, cmap="Blues")
        labels = [label.replace("person_", "").replace("_", " ") for label in scores.confusion_labels]
        axes.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        axes.set_yticks(range(len(labels)), labels, fontsize=8)
        for (row, column), value in np.ndenumerate(values):
            axes.text(column, row, int(value), ha="center", va="center", fontsize=9,
                      color="white" if value > values.max() / 2 else "black")
        axes.set_xlabel("predicted")
        axes.set_ylabel("ground truth")
        axes.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    return path


def failure_strip(frames: dict[str, Path], boxes: pd.DataFrame, path: Path, title: str, colour_by_class: bool = True) -> Path:
    """Crops around ``boxes`` (image, cls, x1..y2, label) from their frames, in one strip of rows."""
    crops = []
    cache: dict[str, np.ndarray | None] = {}
    for row in boxes.head(STRIP_CROPS).itertuples():
        if row.image not in cache:
            cache[row.image] = cv2.imread(str(frames[row.image])) if row.image in frames else None
        frame = cache[row.image]
        if frame is None:
            continue
        cx, cy = (row.x1 + row.x2) / 2, (row.y1 + row.y2) / 2
        side = max(CROP_PX / 2, 1.5 * max(row.x2 - row.x1, row.y2 - row.y1))
        x1, y1 = int(max(0, cx - side)), int(max(0, cy - side))
        x2, y2 = int(min(frame.shape[1], cx + side)), int(min(frame.shape[0], cy + side))
        crop = frame[y1:y2, x1:x2].copy()
        colour = CLASS_COLOURS[int(row.cls) % len(CLASS_COLOURS)] if colour_by_class else (0, 0, 255)
        cv2.rectangle(crop, (int(row.x1 - x1), int(row.y1 - y1)), (int(row.x2 - x1), int(row.y2 - y1)), colour, 2)
        crop = cv2.resize(crop, (CROP_PX, CROP_PX), interpolation=cv2.INTER_AREA if crop.shape[0] > CROP_PX else cv2.INTER_LINEAR)
        cv2.putText(crop, str(row.label)[:24], (4, CROP_PX - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1,
                    cv2.LINE_AA)
        crops.append(crop)
    columns = 6
    if not crops:
        crops = [np.zeros((CROP_PX, CROP_PX, 3), np.uint8)]
    while len(crops) % columns:
        crops.append(np.zeros_like(crops[0]))
    grid = np.vstack([np.hstack(crops[i:i + columns]) for i in range(0, len(crops), columns)])
    header = np.zeros((26, grid.shape[1], 3), np.uint8)
    cv2.putText(header, title, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), np.vstack([header, grid]))
    return path


def worst_failures(detections: pd.DataFrame, truth: pd.DataFrame, frames: list[str],
                   classes: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The most confident false positives and the largest missed people, with a label each."""
    matching = match(detections, truth, images=frames)
    false = detections.join(matching.detections[["tp", "kind"]])
    false = false[~false["tp"]].sort_values("score", ascending=False)
    false = false.assign(label=[f"{kind} {score:.2f}" for kind, score in zip(false["kind"], false["score"])])
    missed = truth[~matching.truth["matched"].to_numpy()].copy()
    missed["side"] = np.sqrt((missed["x2"] - missed["x1"]) * (missed["y2"] - missed["y1"]))
    missed = missed.sort_values("side", ascending=False)
    missed["label"] = [f"missed {classes[c].replace('person_', '')}" for c in missed["cls"]]
    return false, missed


def scores_table(named: dict[str, Scores]) -> Table:
    rows = [{"setting": name, **{column: getattr(scores, column) for column in SCORE_COLUMNS},
             "map50": scores.map50, "map50_95": scores.map50_95} for name, scores in named.items()]
    return Table(rows, ["setting", *SCORE_COLUMNS, "map50", "map50_95"])


def per_class_table(named: dict[str, Scores]) -> Table:
    rows = [{"setting": name, **{k: row[k] for k in ("class", "truth", "tp", "fp", "fn", "precision", "recall", "f1")}}
            for name, scores in named.items() for row in scores.per_class]
    return Table(rows, ["setting", "class", "truth", "tp", "fp", "fn", "precision", "recall", "f1"])
