"""Side-by-side model metrics, like the team's results table (P, R, mAP50, mAP50-95 per model,
overall and per class), from each checkpoint version's ``summary.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

METRICS = ["precision", "recall", "map50", "map50_95"]
COLUMNS = ["model", "class", *METRICS, "scored_on", "eval_imgsz", "best_epoch", "epochs", "train_seconds", "device"]


def dataset_name(data_yaml: str | None) -> str | None:
    """``go2k_split`` for a lake version's data.yaml (lake/<asset>/<version>/data.yaml), else its folder."""
    if not data_yaml:
        return None
    path = Path(data_yaml)
    return path.parent.parent.name if path.parent.parent.parent.name == "lake" else path.parent.name


def comparison_table(summaries: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One 'all' row per model, then one row per model and class."""
    rows = []
    for model, summary in summaries.items():
        common = {k: summary.get(k) for k in ("eval_imgsz", "best_epoch", "epochs", "train_seconds", "device")}
        common["scored_on"] = dataset_name(summary.get("eval_data"))
        rows.append({"model": model, "class": "all", **{m: summary.get(m) for m in METRICS}, **common})
        for per in summary.get("per_class", []):
            rows.append({"model": model, "class": per["class"], **{m: per.get(m) for m in METRICS}, **common})
    return pd.DataFrame(rows, columns=COLUMNS)


def comparison_plot(table: pd.DataFrame, path: Path) -> Path:
    """Grouped bars of every metric per model (overall), and mAP50 per class."""
    overall = table[table["class"] == "all"]
    per_class = table[table["class"] != "all"].pivot_table(index="model", columns="class", values="map50")
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4), dpi=100)
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
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
