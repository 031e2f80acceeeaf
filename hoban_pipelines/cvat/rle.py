"""CVAT's mask run-length encoding.

A CVAT ``<mask rle="..." left top width height>`` covers a ``width x height`` crop in
row-major order; counts alternate starting with background, so a crop whose first pixel
is foreground starts with a 0. The counts always sum to ``width * height``. Written by hand
because CVAT's own codec lives inside its server and datumaro's pulls in a large dependency
for twenty lines of numpy.
"""

from __future__ import annotations

import numpy as np


class RleError(ValueError):
    """An RLE string that does not describe a mask of the stated size."""


def encode(mask: np.ndarray) -> list[int]:
    """Runs of a 2-D boolean mask, row-major, starting with a (possibly empty) background run."""
    if mask.ndim != 2:
        raise RleError(f"mask must be 2-D, got shape {mask.shape}")
    flat = mask.astype(bool).ravel()
    if flat.size == 0:
        return []
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat[0] else runs


def decode(counts: list[int] | str, width: int, height: int) -> np.ndarray:
    """The ``height x width`` boolean mask of CVAT RLE counts (a list or the comma string)."""
    if isinstance(counts, str):
        try:
            counts = [int(c) for c in counts.split(",")] if counts.strip() else []
        except ValueError as exc:
            raise RleError(f"RLE is not a comma-separated list of integers: {exc}") from None
    if width <= 0 or height <= 0:
        raise RleError(f"mask size must be positive, got width={width} height={height}")
    runs = np.asarray(counts, dtype=np.int64)
    if runs.size and runs.min() < 0:
        raise RleError("RLE has a negative run length")
    total = int(runs.sum())
    if total != width * height:
        raise RleError(
            f"RLE counts sum to {total} but width*height is {width}*{height}={width * height}"
        )
    values = np.zeros(runs.size, dtype=bool)
    values[1::2] = True
    return np.repeat(values, runs).reshape(height, width)


def to_string(counts: list[int]) -> str:
    """The comma-separated form CVAT writes in the ``rle`` attribute."""
    return ", ".join(str(c) for c in counts)
