"""The one leakage grouping: which images must stay on one side of a split.

Two images are linked when their thumbnails are near-duplicates (cosine >= ``similarity``,
never between frames of one fixed camera, which all look alike: see ``near_duplicates``) or
when one camera took them at most ``burst_seconds`` apart. Linked images form one group, and a
group is never split. The same :class:`Grouping` builds a split (``split``, ``recipes``) and
checks it afterwards (``checks.leakage_problems``), read back from the version's own record,
so a check can never test other numbers than the split was made with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hoban_pipelines.datasets import near_duplicates

Pair = tuple[int, int, float]


@dataclass(frozen=True)
class Grouping:
    burst_seconds: float = 60.0  # frames of one camera this close are one group
    similarity: float = near_duplicates.DEFAULT_THRESHOLD  # thumbnails this similar are one group

    def __post_init__(self) -> None:
        if not self.burst_seconds >= 0:
            raise ValueError(f"burst_seconds must be 0 or more seconds, got {self.burst_seconds!r}")
        if not 0 < self.similarity <= 1:
            raise ValueError(f"similarity must be a cosine in (0, 1], got {self.similarity!r}")

    def as_params(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class Links:
    """Index pairs of linked images: near-duplicates (i, j, cosine) and same-camera bursts (i, j)."""

    near_duplicates: list[Pair]
    bursts: list[tuple[int, int]]
    unreadable: list[tuple[str, str]]  # (path, reason): in no near-duplicate pair

    def groups(self, n: int) -> np.ndarray:
        """A group id per image: the connected components of both kinds of link."""
        return np.array(near_duplicates.union_groups(n, self.near_duplicates, self.bursts), dtype=np.int64)


def time_links(cameras: pd.Series, timestamps: pd.Series, within_seconds: float) -> list[tuple[int, int]]:
    """Edges between consecutive frames of one camera taken at most ``within_seconds`` apart."""
    frame = pd.DataFrame({"camera": np.asarray(cameras, dtype=object), "t": pd.to_datetime(timestamps).to_numpy()})
    frame["row"] = np.arange(len(frame))
    frame = frame.dropna(subset=["t"]).sort_values(["camera", "t"])
    same_camera = frame["camera"].eq(frame["camera"].shift())
    close = (frame["t"] - frame["t"].shift()).dt.total_seconds().le(within_seconds)
    rows = frame["row"].to_numpy()
    hits = np.flatnonzero((same_camera & close).to_numpy())
    return [(int(rows[i - 1]), int(rows[i])) for i in hits]


def leakage_links(
    paths: Sequence[str | Path], cameras: Sequence, timestamps: Sequence, grouping: Grouping,
    *, similar: list[Pair] | None = None,
) -> Links:
    """The links among images (``paths`` with their camera and time, None/NaT where unknown).

    ``similar``: near-duplicate pairs already computed at a threshold at or below
    ``grouping.similarity`` (a recipe's dedup step has them); otherwise the thumbnails are read.
    """
    cameras = list(cameras)
    unreadable: list[tuple[str, str]] = []
    if similar is None:
        thumbs = near_duplicates.thumbnails(paths)
        similar = near_duplicates.near_duplicate_pairs(thumbs, grouping.similarity, cameras=cameras)
        unreadable = thumbs.skipped
    pairs = [pair for pair in similar if pair[2] >= grouping.similarity]
    bursts = time_links(pd.Series(cameras, dtype=object), pd.Series(list(timestamps)), grouping.burst_seconds)
    return Links(pairs, bursts, unreadable)
