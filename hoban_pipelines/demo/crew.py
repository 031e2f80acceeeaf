"""The time model: who is where on each camera at any second of the two site days.

Each camera has a fixed crew. Every worker gets a deterministic day plan of segments (walk
to a point, stand, work in place, step away) drawn from the worker's own random stream, and
everyone is away over the lunch hour, which leaves the site empty (negative frames and live
but static captures). Frames seconds apart therefore show nearly the same scene, frames
minutes apart a different one, and ``Crew.states_at(t)`` is a pure function of
(seed, camera, t). Also here: the site clock and daylight over the day.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from hoban_pipelines.demo.scene import CameraScene, camera_index
from hoban_pipelines.demo.seeding import Stream, stream_rng
from hoban_pipelines.demo.workers import Pose, WorkerLook, random_look

# The site clock: integer seconds since midnight of the first site day (local camera time).
SITE_EPOCH = datetime(2026, 2, 11)
SITE_DAYS = 2
DAY = 86_400
HOUR = 3_600
LUNCH = (12 * HOUR, 13 * HOUR)  # everyone leaves the cameras' view
CREW_SIZE = {"cam1": 9, "cam2": 8}
WALK_SPEED = 0.75  # person heights per second
# Whether the hard hat is on is drawn each time a worker comes into view (start of day,
# after lunch or a break): the user's labels are about 15% without a helmet.
NO_HELMET_RATE = 0.15


def site_datetime(t: int) -> datetime:
    return SITE_EPOCH + timedelta(seconds=int(t))


def file_stamp(t: int) -> str:
    """The ``YYYYmmdd_HHMMSS`` the user's recorder puts in file names."""
    return site_datetime(t).strftime("%Y%m%d_%H%M%S")


def day_stamp(t: int) -> str:
    return site_datetime(t).strftime("%Y%m%d")


def iso_time(t: int) -> str:
    return site_datetime(t).isoformat()


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    activity: str  # "walk", "stand", "work" or "away"
    start_xy: tuple[float, float]
    end_xy: tuple[float, float]
    helmet: bool
    facing: int
    rhythm: float  # seconds per swing of a working worker's arms


@dataclass(frozen=True)
class WorkerState:
    worker_id: int
    feet: tuple[float, float]
    pose: Pose
    helmet: bool
    look: WorkerLook


@dataclass(frozen=True)
class _WorkerPlan:
    worker_id: int
    look: WorkerLook
    segments: tuple[Segment, ...]
    starts: tuple[float, ...]


class Crew:
    """The deterministic plans of one camera's workers over both site days."""

    def __init__(self, seed: int, scene: CameraScene) -> None:
        self._scene = scene
        self._plans = tuple(
            self._plan_worker(stream_rng(seed, Stream.CREW, camera_index(scene.camera), worker_id),
                              worker_id)
            for worker_id in range(CREW_SIZE[scene.camera])
        )

    def states_at(self, t: float) -> list[WorkerState]:
        """Workers on camera at ``t`` (before visibility rules), in worker-id order."""
        states = []
        for plan in self._plans:
            index = bisect.bisect_right(plan.starts, t) - 1
            if index < 0:
                continue
            segment = plan.segments[index]
            if t >= segment.end or segment.activity == "away":
                continue
            states.append(self._state(plan, segment, t))
        return states

    def _state(self, plan: _WorkerPlan, segment: Segment, t: float) -> WorkerState:
        elapsed = t - segment.start
        (x0, y0), (x1, y1) = segment.start_xy, segment.end_xy
        if segment.activity == "walk":
            frac = elapsed / (segment.end - segment.start)
            x, y = x0 + frac * (x1 - x0), y0 + frac * (y1 - y0)
            covered = frac * math.hypot(x1 - x0, y1 - y0)
            stride_length = 0.85 * self._scene.perspective.person_height(y)
            pose = Pose(stride_phase=2 * math.pi * covered / stride_length, stride=1.0,
                        facing=segment.facing)
        elif segment.activity == "work":
            phase = 2 * math.pi * elapsed / segment.rhythm
            x, y = x0 + 2.0 * math.sin(phase / 3), y0
            pose = Pose(stride_phase=phase, bend=0.55 + 0.35 * math.sin(phase),
                        facing=segment.facing, working_arms=True)
        else:
            x, y = x0, y0
            pose = Pose(facing=segment.facing)
        return WorkerState(plan.worker_id, (x, y), pose, segment.helmet, plan.look)

    def _plan_worker(self, rng: np.random.Generator, worker_id: int) -> _WorkerPlan:
        look = random_look(rng)
        area = self._scene.walk_area
        segments: list[Segment] = []
        for day in range(SITE_DAYS):
            day_start = day * DAY
            t = day_start + 7.5 * HOUR + rng.uniform(0, 40 * 60)
            end = day_start + 17.5 * HOUR + rng.uniform(0, 40 * 60)
            lunch_out = day_start + LUNCH[0] - rng.uniform(0, 8 * 60)
            lunch_back = day_start + LUNCH[1] + rng.uniform(0, 8 * 60)
            position = area.sample(rng)
            helmet = bool(rng.random() >= NO_HELMET_RATE)
            facing = 1 if rng.random() < 0.5 else -1
            while t < end:
                if lunch_out <= t < lunch_back:
                    segments.append(Segment(t, lunch_back, "away", position, position, helmet,
                                            facing, 1.0))
                    t, position = lunch_back, area.sample(rng)
                    helmet = bool(rng.random() >= NO_HELMET_RATE)
                    continue
                segment = self._next_segment(rng, t, position, helmet, facing)
                stop = min(segment.end, end, lunch_out if t < lunch_out else end)
                if stop < segment.end:
                    segment = _truncate(segment, stop)
                segments.append(segment)
                t, position, facing = segment.end, segment.end_xy, segment.facing
                if segment.activity == "away":  # comes back somewhere else, maybe without a hat
                    position = area.sample(rng)
                    helmet = bool(rng.random() >= NO_HELMET_RATE)
        return _WorkerPlan(worker_id, look, tuple(segments), tuple(s.start for s in segments))

    def _next_segment(self, rng: np.random.Generator, t: float, position: tuple[float, float],
                      helmet: bool, facing: int) -> Segment:
        choice = rng.random()
        rhythm = float(rng.uniform(1.5, 4.0))
        if choice < 0.45:
            target = self._scene.walk_area.sample(rng)
            dx, dy = target[0] - position[0], target[1] - position[1]
            distance = math.hypot(dx, dy)
            if distance > 700:  # walk part of the way
                target = (position[0] + dx * 700 / distance, position[1] + dy * 700 / distance)
                distance = 700.0
            mean_height = self._scene.perspective.person_height((position[1] + target[1]) / 2)
            duration = max(1.0, distance / (WALK_SPEED * mean_height))
            heading = facing if abs(dx) < 1 else (1 if dx > 0 else -1)
            return Segment(t, t + duration, "walk", position, target, helmet, heading, rhythm)
        if choice < 0.65:
            activity, duration = "stand", rng.uniform(5, 90)
        elif choice < 0.92:
            activity, duration = "work", rng.uniform(60, 600)
        else:
            activity, duration = "away", rng.uniform(180, 1200)
        return Segment(t, t + float(duration), activity, position, position, helmet, facing, rhythm)


def _truncate(segment: Segment, stop: float) -> Segment:
    """The segment cut short at ``stop`` (a walk ends where it had got to)."""
    end_xy = segment.end_xy
    if segment.activity == "walk":
        frac = (stop - segment.start) / (segment.end - segment.start)
        (x0, y0), (x1, y1) = segment.start_xy, segment.end_xy
        end_xy = (x0 + frac * (x1 - x0), y0 + frac * (y1 - y0))
    return Segment(segment.start, stop, segment.activity, segment.start_xy, end_xy, segment.helmet,
                   segment.facing, segment.rhythm)


def daylight_gains(seed: int, camera: str, t: int) -> np.ndarray:
    """Per-channel (B, G, R) gain of the scene at ``t``: the sun over the day, that day's
    overcast, drifting clouds, and warmer light early and late."""
    day, second = divmod(int(t), DAY)
    hour = second / HOUR
    sun = min(1.0, max(0.05, math.sin(math.pi * (hour - 6.0) / 13.0)))
    weather = stream_rng(seed, Stream.WEATHER, day)
    overcast = weather.uniform(0.0, 0.25)
    amplitudes = weather.uniform(0.01, 0.035, 3)
    periods = weather.uniform(400, 2400, 3)
    phases = weather.uniform(0, 2 * math.pi, 3)
    clouds = float(np.sum(amplitudes * np.sin(2 * math.pi * t / periods + phases)))
    exposure = 1.0 + 0.04 * (camera_index(camera) - 1)  # the cameras' auto-exposure differs
    gain = ((0.62 + 0.42 * sun) * (1.0 - overcast) + clouds) * exposure
    warmth = 1.0 - sun
    return gain * np.array([1.0 - 0.08 * warmth, 1.0, 1.0 + 0.07 * warmth])
