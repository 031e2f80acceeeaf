"""The full-image gate: a sliced detection is kept only where the whole frame, seen at once, also
sees someone. The team's rule: keep it when its centre lies within ``radius`` px of the centre of
a full-image detection at ``conf`` or more (C 0.20, R 40 px); per class, or any class.

Caution, from the team's notes: at 640 px a 1920 frame is scaled down 3x, so the smallest people
vanish from the full-image pass and the gate then removes true positives. Recall by box size,
with and without the gate, shows what it costs (``sweeps``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


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


def _centres(frame: pd.DataFrame) -> np.ndarray:
    boxes = frame[["x1", "y1", "x2", "y2"]].to_numpy(np.float64)
    return np.column_stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2])


def gate_mask(sliced: pd.DataFrame, full: pd.DataFrame, gate: Gate) -> np.ndarray:
    """A boolean per row of ``sliced`` (image, cls, x1..y2): True where the gate keeps it.
    ``full`` is the full-image pass (image, cls, score, x1..y2), filtered to ``gate.conf`` here."""
    keep = np.zeros(len(sliced), dtype=bool)
    anchors = full[full["score"].to_numpy(np.float64) >= gate.conf]  # float64, as every threshold is compared
    if sliced.empty or anchors.empty:
        return keep
    by_image = {image: frame for image, frame in anchors.groupby("image", sort=False)}
    positions = pd.RangeIndex(len(sliced))
    for image, rows in pd.Series(positions, index=sliced["image"].to_numpy()).groupby(level=0, sort=False):
        found = by_image.get(image)
        if found is None:
            continue
        mine = sliced.iloc[rows.to_numpy()]
        distance = np.linalg.norm(_centres(mine)[:, None, :] - _centres(found)[None, :, :], axis=2)
        near = distance <= gate.radius
        if not gate.class_agnostic:
            near &= mine["cls"].to_numpy()[:, None] == found["cls"].to_numpy()[None, :]
        keep[rows.to_numpy()] = near.any(axis=1)
    return keep


def apply_gate(sliced: pd.DataFrame, full: pd.DataFrame, gate: Gate | None) -> pd.DataFrame:
    """The sliced detections the gate keeps (all of them without a gate)."""
    return sliced if gate is None else sliced[gate_mask(sliced, full, gate)]
