"""Where a frame is cut into tiles: exactly as sahi 0.12 cuts it (``sahi.slicing.get_slice_bboxes``).

From sahi's source: the overlap is ``int(ratio * size)`` pixels, tiles start at 0 and step by
``size - overlap``; a tile that would cross the frame's right or bottom edge is shifted back to
end at the edge (never padded), so the last two tiles of a row or column overlap more. A frame
smaller than a tile is one tile, the whole frame. For 1920x1080, 640, 0.2: x0 in {0, 512, 1024,
1280}, y0 in {0, 440}, 8 tiles. Matching sahi tile for tile is what makes our detections
comparable with the team's sahi runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class SlicingError(ValueError):
    """Slicing settings that describe no tiling."""


@dataclass(frozen=True)
class Slicing:
    """Square tiles of ``size`` pixels overlapping by ``overlap`` (a share of the size, in [0, 1))."""

    size: int
    overlap: float = 0.2

    def __post_init__(self) -> None:
        if not isinstance(self.size, (int, np.integer)) or isinstance(self.size, bool) or self.size <= 0:
            raise SlicingError(f"slice size {self.size!r} must be a whole number of pixels > 0 (the team's is 640)")
        if not 0 <= self.overlap < 1:
            raise SlicingError(
                f"overlap ratio {self.overlap!r} must be in [0, 1): it is the share of a tile that its neighbour "
                "repeats (the team's is 0.2); at 1 or more the tiles would never advance"
            )

    @property
    def overlap_pixels(self) -> int:
        return int(self.overlap * self.size)

    def tiles(self, width: int, height: int) -> np.ndarray:
        """The tiles of a ``width`` x ``height`` frame as rows of (x1, y1, x2, y2), row by row."""
        return np.array(
            [(x1, y1, x2, y2) for y1, y2 in _starts(height, self.size, self.overlap_pixels)
             for x1, x2 in _starts(width, self.size, self.overlap_pixels)],
            dtype=np.int64,
        ).reshape(-1, 4)


def _starts(length: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """sahi's walk along one side: (start, end) of each tile."""
    spans, start, end = [], 0, 0
    while end < length:
        end = start + size
        if end > length:  # the last tile ends at the edge instead of crossing it
            spans.append((max(0, length - size), length))
        else:
            spans.append((start, end))
        start = end - overlap
    return spans
