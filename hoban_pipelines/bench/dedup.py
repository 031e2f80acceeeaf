"""Benchmark of the all-pairs near-duplicate search (blockwise matrix product of thumbnails).

Builds ``n`` thumbnails in memory, with no disk or JPEG decode, so only the pairwise part is
timed: random smooth images (8x8 random levels upscaled to 64x64, a few broad features like
a scene thumbnail) and, for one image in fifty, a noisy copy of one of the 49 before it, which
must be found.

Run ``python -m hoban_pipelines.bench.dedup [n]`` to print the numbers as JSON.
"""

from __future__ import annotations

import json
import sys
import time

import cv2
import numpy as np

from hoban_pipelines.datasets import near_duplicates as dedup

DUPLICATE_EVERY = 50
_SOURCE_SIZE = 64


def synthetic_thumbnails(n: int, seed: int = 0) -> tuple[dedup.Thumbnails, set[tuple[int, int]]]:
    """``n`` thumbnails and the planted duplicate pairs (i, j), i < j, among them."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, _SOURCE_SIZE, _SOURCE_SIZE), np.uint8)
    planted: set[tuple[int, int]] = set()
    for index in range(n):
        if index % DUPLICATE_EVERY == DUPLICATE_EVERY - 1:
            source = index - 1 - int(rng.integers(DUPLICATE_EVERY - 1))  # an original, copied once
            noisy = images[source] + rng.normal(0.0, 3.0, (_SOURCE_SIZE, _SOURCE_SIZE))
            images[index] = np.clip(noisy, 0, 255)
            planted.add((source, index))
        else:
            levels = rng.normal(128.0, 40.0, (8, 8)).astype(np.float32)
            smooth = cv2.resize(levels, (_SOURCE_SIZE, _SOURCE_SIZE), interpolation=cv2.INTER_CUBIC)
            images[index] = np.clip(smooth, 0, 255)
    vectors = np.stack([dedup.thumbnail_vector(image) for image in images])
    paths = [f"synthetic/{index:06d}" for index in range(n)]
    return dedup.Thumbnails(paths, vectors, np.arange(n, dtype=np.int64), []), planted


def run(n: int = 20_000) -> dict:
    """Time ``near_duplicate_pairs`` over ``n`` synthetic thumbnails at the default threshold.

    Returns {"dedup_images", "dedup_seconds"}; raises if a planted duplicate is missed, so a
    fast but broken search never reports a figure.
    """
    if n < DUPLICATE_EVERY:
        raise ValueError(f"n must be at least {DUPLICATE_EVERY} so duplicates are planted, got {n}")
    thumbs, planted = synthetic_thumbnails(n)
    start = time.perf_counter()
    pairs = dedup.near_duplicate_pairs(thumbs)
    seconds = time.perf_counter() - start
    missed = planted - {(i, j) for i, j, _ in pairs}
    if missed:
        raise RuntimeError(f"the search missed {len(missed)} of {len(planted)} planted duplicates")
    return {"dedup_images": n, "dedup_seconds": round(seconds, 3)}


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000), indent=2))
