"""Leakage-free, class-stratified splits, and go2k_split: a labelled set split into train and val.

Images are split by *group*, never one by one: a group holds images that must not straddle a
split (near-duplicates, frames of one camera seconds apart), so a model is never validated on
a frame it effectively trained on. Groups are placed one at a time, largest first, into the
split whose shortfall (images, images holding each class, boxes of each class, all relative to
the target fractions) the group reduces most: iterative stratification as in Sechidis et al.
(2011), simplified to one pass. Then every class is made present in every split if the data
allows it. Deterministic for a given seed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hoban_pipelines.core.report import BuildReport, Table
from hoban_pipelines.core.yolo_format import TRAIN, VAL, write_data_yaml, write_list_files
from hoban_pipelines.datasets.grouping import Grouping, leakage_links


class SplitError(ValueError):
    """Fractions that do not describe a split, or data that cannot be split."""


def _check_fractions(fractions: dict[str, float]) -> None:
    if not fractions or any(f < 0 for f in fractions.values()) or abs(sum(fractions.values()) - 1) > 1e-6:
        raise SplitError(f"split fractions {fractions} must be non-negative and sum to 1")


def grouped_stratified_split(
    images: pd.DataFrame,
    boxes: pd.DataFrame,
    groups: np.ndarray,
    fractions: dict[str, float],
    n_classes: int,
    seed: int = 0,
) -> pd.Series:
    """The split name of every image row (``images.image`` ids; ``boxes`` has image, cls)."""
    _check_fractions(fractions)
    names = list(fractions)
    target = np.array([fractions[n] for n in names])
    n = len(images)
    if n == 0:
        raise SplitError("nothing to split: no images")
    index = pd.Index(images["image"])
    rows = index.get_indexer(boxes["image"])
    # per image: [1 image, holds class c (n_classes), boxes of class c (n_classes)]
    features = np.zeros((n, 1 + 2 * n_classes))
    features[:, 0] = 1
    np.add.at(features, (rows, 1 + n_classes + boxes["cls"].to_numpy()), 1)
    features[:, 1 : 1 + n_classes] = features[:, 1 + n_classes :] > 0
    group_ids, group_of = np.unique(np.asarray(groups), return_inverse=True)
    per_group = np.zeros((len(group_ids), features.shape[1]))
    np.add.at(per_group, group_of, features)
    totals = np.maximum(per_group.sum(axis=0), 1)
    rng = np.random.default_rng(seed)
    # largest groups first (they are hardest to place); ties in a seeded random order
    order = np.lexsort((rng.random(len(group_ids)), -per_group[:, 0]))
    filled = np.zeros((len(names), features.shape[1]))
    assignment = np.empty(len(group_ids), dtype=int)
    for g in order:
        shortfall = (target[:, None] * totals - filled) / totals  # >0: this split still needs it
        gain = (np.minimum(per_group[g] / totals, np.clip(shortfall, 0, None))).sum(axis=1)
        overshoot = np.clip(per_group[g] / totals - np.clip(shortfall, 0, None), 0, None).sum(axis=1)
        choice = int(np.argmax(gain - overshoot + 1e-9 * target))  # ties go to the larger split
        assignment[g] = choice
        filled[choice] += per_group[g]
    _make_every_class_present(assignment, per_group, n_classes, target)
    return pd.Series(np.array(names)[assignment[group_of]], index=images.index, name="split")


def _make_every_class_present(assignment: np.ndarray, per_group: np.ndarray, n_classes: int, target: np.ndarray) -> None:
    """Move the smallest group holding a class into each split that lacks it, if another split can spare one."""
    for cls in range(n_classes):
        holds = per_group[:, 1 + cls] > 0
        for split in np.argsort(-target):
            if target[split] == 0 or (holds & (assignment == split)).any():
                continue
            donors = [g for g in np.flatnonzero(holds) if ((holds & (assignment == assignment[g])).sum() > 1)]
            if donors:
                smallest = min(donors, key=lambda g: (per_group[g, 0], g))
                assignment[smallest] = split


@dataclass(frozen=True)
class SplitParameters:
    """How go2k_split splits a labelled set; the grouping decides what may not straddle it."""

    val_fraction: float = 0.2
    seed: int = 0
    grouping: Grouping = field(default_factory=Grouping)

    def as_params(self) -> dict[str, Any]:
        return asdict(self)


def split_images(images: pd.DataFrame, boxes: pd.DataFrame, root: Path, n_classes: int, params: SplitParameters) -> pd.DataFrame:
    """The labelled set's images with ``split`` (train/val) and ``group`` columns.

    ``images`` has image, path (relative to ``root``), camera, timestamp; ``boxes`` image, cls.
    """
    links = leakage_links([root / p for p in images["path"]], images["camera"], images["timestamp"], params.grouping)
    groups = links.groups(len(images))
    split = grouped_stratified_split(
        images, boxes, groups, {TRAIN: 1 - params.val_fraction, VAL: params.val_fraction}, n_classes, params.seed
    )
    return images.assign(split=split.to_numpy(), group=groups)


def with_box_counts(images: pd.DataFrame, boxes: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """``images`` with a ``boxes_<class>`` column per class (from ``boxes``: image, cls)."""
    per = boxes.groupby(["image", "cls"]).size().unstack(fill_value=0)
    return images.assign(**{
        f"boxes_{name}": images["image"].map(per[i] if i in per else {}).fillna(0).astype(int).to_numpy()
        for i, name in enumerate(classes)
    })


SPLIT_MANIFEST = "split.parquet"


def build_split(labelled: Path, classes: list[str], params: SplitParameters, out_dir: Path) -> BuildReport:
    """go2k_split of the labelled set at ``labelled`` (its ``manifests/``) into ``out_dir``: list
    files of absolute image paths, ``data.yaml`` and ``manifests/split.parquet``."""
    labelled = Path(labelled)
    images = pd.read_parquet(labelled / "manifests" / "images.parquet")
    boxes = pd.read_parquet(labelled / "manifests" / "boxes.parquet")
    split = with_box_counts(split_images(images, boxes, labelled, len(classes), params), boxes, classes)
    entries = split.assign(path=[str(labelled / p) for p in split["path"]],
                           label_path=[str(labelled / p) for p in split["label_path"]])
    write_data_yaml(out_dir, write_list_files(out_dir, entries), classes)
    (out_dir / "manifests").mkdir()
    entries.to_parquet(out_dir / "manifests" / SPLIT_MANIFEST, index=False)
    rows = [
        {"split": name, "images": len(group), "groups": int(group["group"].nunique()),
         **{f"boxes_{c}": int(group[f"boxes_{c}"].sum()) for c in classes}}
        for name, group in entries.groupby("split")
    ]
    return BuildReport(
        counts={f"{row['split']}_images": row["images"] for row in rows},
        details={"splits": Table(rows, ["split", "images", "groups", *[f"boxes_{c}" for c in classes]]),
                 "groups": int(split["group"].nunique())},
    )
