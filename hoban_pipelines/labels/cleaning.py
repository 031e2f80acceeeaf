"""Removing pre-annotation false boxes: the team's rule, and the stricter one its name implies.

The team removed "fixed-position small false positives" with ``w < 0.03 and h < 0.05``
(normalised). On 1920x1080 CCTV that size test alone also matches every real worker shorter
than 54 px, and the team's workers are often 20-60 px tall. The ``recurring_small`` rule
therefore only removes small boxes that recur at the same spot (IoU >= ``min_iou`` with each
other: the detector's jitter of a few pixels is large for a 15 px box, so a pixel tolerance
does not carry across sizes) in images of the same camera taken at ``min_frames`` different times: images less
than ``min_gap_s`` apart count once, so a worker standing still through a burst of frames is
not mistaken for a fixture. Both rules are always counted, so the report shows what each
would remove.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

Rule = Literal["recurring_small", "small_box", "none"]
RULES: tuple[str, ...] = ("recurring_small", "small_box", "none")
_CHUNK = 512  # rows per pairwise block: bounded memory for thousands of small boxes


@dataclass(frozen=True)
class CleaningRule:
    rule: Rule = "recurring_small"
    max_w: float = 0.03  # normalised width below which a box is "small"
    max_h: float = 0.05  # normalised height below which a box is "small"
    min_frames: int = 3  # recurring: seen at this many different times on one camera
    min_iou: float = 0.5  # recurring: boxes overlapping this much are the same spot
    min_gap_s: float = 600.0  # recurring: images closer in time than this count as one

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"cleaning rule '{self.rule}' is unknown; use one of {list(RULES)}")


def small_mask(boxes: pd.DataFrame, rule: CleaningRule) -> np.ndarray:
    """Boxes under the size thresholds. Needs columns x1 y1 x2 y2 img_w img_h."""
    w = (boxes["x2"] - boxes["x1"]) / boxes["img_w"]
    h = (boxes["y2"] - boxes["y1"]) / boxes["img_h"]
    return ((w < rule.max_w) & (h < rule.max_h)).to_numpy()


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (n x 4 xyxy) with every box in ``b`` (m x 4): an n x m matrix."""
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def recurring_mask(boxes: pd.DataFrame, rule: CleaningRule) -> np.ndarray:
    """Small boxes that recur at one spot in ``min_frames`` images of the same camera.

    Needs columns image, camera, timestamp (NaT when unknown), x1 y1 x2 y2 img_w img_h.
    Pairwise per camera over small boxes only, which are few compared to all boxes.
    """
    small = small_mask(boxes, rule)
    result = np.zeros(len(boxes), dtype=bool)
    candidates = boxes[small]
    for _, group in candidates.groupby("camera", sort=False):
        corners = group[["x1", "y1", "x2", "y2"]].to_numpy(dtype=np.float64)
        # one "moment" per min_gap_s window; an image without a time is a moment of its own
        windows = (group["timestamp"] - pd.Timestamp(0)) // pd.Timedelta(seconds=rule.min_gap_s)
        moment_keys = ("t" + windows.astype("Int64").astype(str)).where(
            group["timestamp"].notna(), "i" + group["image"].astype(str)
        )
        moments = pd.factorize(moment_keys)[0]
        recurring = np.zeros(len(group), dtype=bool)
        for start in range(0, len(group), _CHUNK):
            near = pairwise_iou(corners[start : start + _CHUNK], corners) >= rule.min_iou
            # distinct moments holding a matching box, per box of this block
            hits = np.zeros((len(near), moments.max() + 1), dtype=bool)
            rows, cols = np.nonzero(near)
            hits[rows, moments[cols]] = True
            recurring[start : start + len(near)] = hits.sum(axis=1) >= rule.min_frames
        result[boxes.index.get_indexer(group.index)] = recurring
    return result


def apply(boxes: pd.DataFrame, rule: CleaningRule) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """(kept boxes, removed boxes with a ``removed_by`` column, boxes each rule would remove)."""
    boxes = boxes.reset_index(drop=True)
    would_remove = {
        "small_box": small_mask(boxes, rule),
        "recurring_small": recurring_mask(boxes, rule),
    }
    counts = {name: int(mask.sum()) for name, mask in would_remove.items()}
    if rule.rule == "none":
        return boxes, boxes.iloc[0:0].assign(removed_by=pd.Series(dtype=str)), counts
    removed = would_remove[rule.rule]
    return (
        boxes[~removed].reset_index(drop=True),
        boxes[removed].assign(removed_by=rule.rule).reset_index(drop=True),
        counts,
    )
