"""Tiny fixed-camera videos and their JSON specs for the roi tests (MJPG in .avi: headless OpenCV writes it).

Each frame is a grey background with every ROI filled by an 8x8 grid of random blocks drawn from
a pattern number: the same number gives the same frame (a static stretch, a repeat), a new one
moves the ROI and changes its average hash.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

SIZE = (160, 120)  # w, h
ROIS = [[8, 8, 64, 48], [88, 60, 64, 48]]
LABEL_MAP = {"0": "false", "1": "true", "2": "unknown"}
FRAMES = 450
STATIC = range(150, 180)  # frames 151..179 repeat frame 150: no motion
REPEATS_OF_FIRST = range(400, 405)  # frames repeating frame 0: near-duplicates
SEGMENTS = [
    {"start_frame": 0, "end_frame": 119, "label": 0},
    {"start_frame": 120, "end_frame": 359, "label": 1},
    {"start_frame": 360, "end_frame": 449, "label": 2},
]


def standard_patterns(offset: int = 0) -> list[int]:
    patterns = [offset + i for i in range(FRAMES)]
    for frame in STATIC:
        patterns[frame] = offset + STATIC.start
    for frame in REPEATS_OF_FIRST:
        patterns[frame] = offset
    return patterns


def frame_of(pattern: int, rois=ROIS) -> np.ndarray:
    frame = np.full((SIZE[1], SIZE[0], 3), 90, np.uint8)
    for index, (x, y, w, h) in enumerate(rois):
        blocks = np.random.default_rng([pattern, index]).integers(0, 256, (8, 8, 3), dtype=np.uint8)
        frame[y : y + h, x : x + w] = cv2.resize(blocks, (w, h), interpolation=cv2.INTER_NEAREST)
    return frame


def write_video(path: Path, patterns: list[int], rois=ROIS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, SIZE)
    assert writer.isOpened(), "MJPG writer unavailable"
    cache: dict[int, np.ndarray] = {}
    for pattern in patterns:
        if pattern not in cache:
            cache[pattern] = frame_of(pattern, rois)
        writer.write(cache[pattern])
    writer.release()
    return path


def write_spec(folder: Path, name: str, video_path: str | Path, **fields) -> Path:
    spec = {"video_path": str(video_path), "roi": ROIS, "label_map": LABEL_MAP, "segments": SEGMENTS, **fields}
    spec = {key: value for key, value in spec.items() if value is not None}
    path = folder / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec))
    return path


def standard_video(folder: Path, name: str, offset: int = 0, **fields) -> Path:
    """A video beside its spec in ``folder`` (named simulation/real for the group rule)."""
    write_video(folder / f"{name}.avi", standard_patterns(offset))
    return write_spec(folder, name, f"{name}.avi", **fields)
