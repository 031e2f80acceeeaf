"""Leakage-free, class-stratified splits.

Images are split by *group*, never one by one: a group holds images that must not straddle a
split (near-duplicates, frames of one camera seconds apart), so a model is never validated on
a frame it effectively trained on. Groups are placed one at a time, largest first, into the
split whose shortfall (images, images holding each class, boxes of each class, all relative to
the target fractions) the group reduces most: iterative stratification as in Sechidis et al.
(2011), simplified to one pass. Then every class is made present in every split if the data
allows it. Deterministic for a given seed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


class SplitError(ValueError):
    """Fractions that do not describe a split, or data that cannot be split."""


def _check_fractions(fractions: dict[str, float]) -> None:
    if not fractions or any(f < 0 for f in fractions.values()) or abs(sum(fractions.values()) - 1) > 1e-6:
        raise SplitError(f"split fractions {fractions} must be non-negative and sum to 1")


def time_groups(cameras: pd.Series, timestamps: pd.Series, within_seconds: float) -> list[tuple[int, int]]:
    """Edges between consecutive frames of one camera taken at most ``within_seconds`` apart."""
    frame = pd.DataFrame({"camera": cameras.to_numpy(), "t": pd.to_datetime(timestamps).to_numpy()})
    frame["row"] = np.arange(len(frame))
    frame = frame.dropna(subset=["t"]).sort_values(["camera", "t"])
    same_camera = frame["camera"].eq(frame["camera"].shift())
    close = (frame["t"] - frame["t"].shift()).dt.total_seconds().le(within_seconds)
    rows = frame["row"].to_numpy()
    hits = np.flatnonzero((same_camera & close).to_numpy())
    return [(int(rows[i - 1]), int(rows[i])) for i in hits]


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
