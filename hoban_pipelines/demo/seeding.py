"""Named random streams: every random draw in the demo comes from
``numpy.random.default_rng([seed, stream, *keys])`` with integer keys, so any single frame or
image can be regenerated on its own and adding a draw to one stream never shifts another."""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Stream(IntEnum):
    SCENE = 1
    CREW = 2
    SENSOR_NOISE = 3
    WEATHER = 4
    SNAPSHOT_SCHEDULE = 5
    LABELLING = 6
    CAPTURE_SCHEDULE = 7
    BASE_DATASET = 8
    FROZEN_REENCODE = 9
    PLANTED_BOXES = 10
    MASK_CROPS = 11


def stream_rng(seed: int, stream: Stream, *keys: int) -> np.random.Generator:
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    return np.random.default_rng([seed, int(stream), *(int(k) for k in keys)])
