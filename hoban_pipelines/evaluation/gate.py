"""The full-image gate: a sliced detection is kept only where the whole frame, seen at once, also
sees someone. The team's rule: keep it when its centre lies within ``radius`` px of the centre of
a full-image detection at ``conf`` or more (C 0.20, R 40 px); per class, or any class.

Caution, from the team's notes: at 640 px a 1920 frame is scaled down 3x, so the smallest people
vanish from the full-image pass and the gate then removes true positives. Recall by box size,
with and without the gate, shows what it costs (``sweeps``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

BOX = ["x1", "y1", "x2", "y2"]


@dataclass(frozen=True)
class Gate:
    conf: float = 0.20
    radius: float = 40.0
    class_agnostic: bool = True  # the team matches any person the full frame found

    def __post_init__(self) -> None:
        if not 0 <= self.conf < 1:
            raise ValueError(f"gate conf {self.conf!r} must be in [0, 1)")
        if self.radius < 0:
            raise ValueError(f"gate radius {self.radius!r} px must be >= 0")

    @property
    def name(self) -> str:
        return f"C{self.conf:g}/R{self.radius:g}" + ("" if self.class_agnostic else "/per-class")


def _centres(boxes: np.ndarray) -> np.ndarray:
    return np.column_stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2])


def anchor_distances(sliced: pd.DataFrame, full: pd.DataFrame, confs: Sequence[float],
                     class_agnostic: bool = True) -> np.ndarray:
    """Per row of ``sliced`` (image, cls, x1..y2) and per gate conf, the distance in px from its centre to the
    nearest full-image detection (same image; same class unless ``class_agnostic``) scoring at least that conf;
    inf where there is none. A gate keeps a row when this is within its radius, so a sweep over radii needs it
    once per conf."""
    confs = np.asarray(confs, np.float64)
    nearest = np.full((len(sliced), len(confs)), np.inf)
    if sliced.empty or full.empty:
        return nearest
    codes, names = pd.factorize(pd.concat([sliced["image"], full["image"]], ignore_index=True))
    mine, theirs = codes[: len(sliced)], codes[len(sliced):]
    centres, anchors = _centres(sliced[BOX].to_numpy(np.float64)), _centres(full[BOX].to_numpy(np.float64))
    scores = full["score"].to_numpy(np.float64)  # float64, as every threshold is compared
    cls, anchor_cls = sliced["cls"].to_numpy(), full["cls"].to_numpy()
    anchor_order = np.argsort(theirs, kind="stable")
    starts = np.searchsorted(theirs[anchor_order], np.arange(len(names) + 1))
    for image in np.unique(mine):
        rows = np.flatnonzero(mine == image)
        found = anchor_order[starts[image]:starts[image + 1]]
        if not found.size:
            continue
        distance = np.linalg.norm(centres[rows, None, :] - anchors[None, found, :], axis=2)
        if not class_agnostic:
            distance[cls[rows, None] != anchor_cls[None, found]] = np.inf
        for k, conf in enumerate(confs):
            weak = scores[found] < conf
            nearest[rows, k] = np.where(weak[None, :], np.inf, distance).min(axis=1)
    return nearest


def gate_mask(sliced: pd.DataFrame, full: pd.DataFrame, gate: Gate) -> np.ndarray:
    """A boolean per row of ``sliced`` (image, cls, x1..y2): True where the gate keeps it.
    ``full`` is the full-image pass (image, cls, score, x1..y2), filtered to ``gate.conf`` here."""
    return anchor_distances(sliced, full, [gate.conf], gate.class_agnostic)[:, 0] <= gate.radius


def apply_gate(sliced: pd.DataFrame, full: pd.DataFrame, gate: Gate | None) -> pd.DataFrame:
    """The sliced detections the gate keeps (all of them without a gate)."""
    return sliced if gate is None else sliced[gate_mask(sliced, full, gate)]
