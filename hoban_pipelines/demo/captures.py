"""Continuous per-camera captures, the raw material of the pseudo-labelling pipeline.

Stands in for the user's capture folders: irregular timestamps over both days with bursts a
few seconds apart, runs of frozen frames as the recorder writes them (the last good frame
repeated, either as a byte-identical file or decoded and re-encoded at another JPEG quality),
live but static stretches (the empty site at lunch: only noise and light change), and a few
timestamps equal to labelled snapshots so "exclude timestamps already in go2k" can be tested.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from hoban_pipelines.demo.crew import DAY, HOUR, SITE_DAYS, day_stamp, file_stamp, iso_time
from hoban_pipelines.demo.profiles import SiteProfile
from hoban_pipelines.demo.render import SiteWorld, encode_jpeg
from hoban_pipelines.demo.scene import CAMERAS, camera_index
from hoban_pipelines.demo.seeding import Stream, stream_rng
from hoban_pipelines.demo.snapshots import Snapshot

_CAPTURE_HOURS = (7 * HOUR, 19 * HOUR)
_LUNCH_START = (12 * HOUR + 5 * 60, 12 * HOUR + 15 * 60)
# Re-encoding at these qualities keeps pixels within ~1 grey level of the source (block-max
# mean abs diff <= ~1.0), well under the ~3-4 of two live frames of a static scene.
REENCODE_QUALITIES = (95, 96, 97, 98)
_FROZEN_GAP = (2, 15)  # s between repeated frames of a frozen run
_BURST_GAP = (1, 5)


@dataclass
class CaptureFrame:
    camera: str
    t: int
    frozen_of: int | None = None  # timestamp of the frame being repeated
    copy: str | None = None  # "bytes" or "reencode"
    static: bool = False
    snapshot: str | None = None  # name of the snapshot taken at the same second

    @property
    def file(self) -> str:
        """The path relative to ``captures/``."""
        return capture_file(self.camera, self.t)


def capture_file(camera: str, t: int) -> str:
    return f"{camera}/{day_stamp(t)}/{camera}_{file_stamp(t)}.jpg"


def plan_captures(world: SiteWorld, profile: SiteProfile, snapshots: list[Snapshot]) -> list[CaptureFrame]:
    frames: list[CaptureFrame] = []
    run_number = 0
    for camera in CAMERAS:
        snapshot_names = {s.t: s.name for s in snapshots if s.camera == camera}
        for day in range(SITE_DAYS):
            rng = stream_rng(world.seed, Stream.CAPTURE_SCHEDULE, camera_index(camera), day)
            day_frames = _plan_day(rng, profile, camera, day, snapshots, snapshot_names, run_number)
            run_number += profile.frozen_runs_per_camera_per_day
            _mark_static(world, day_frames)
            frames.extend(day_frames)
    return frames


def _plan_day(rng: np.random.Generator, profile: SiteProfile, camera: str, day: int,
              snapshots: list[Snapshot], snapshot_names: dict[int, str],
              first_run_number: int) -> list[CaptureFrame]:
    day_start = day * DAY
    times: dict[int, CaptureFrame] = {}

    def add(t: int) -> CaptureFrame:
        while t in times or t in snapshot_names:  # only planned matches share a snapshot's second
            t += 1
        times[t] = CaptureFrame(camera, t)
        return times[t]

    frozen_lengths = rng.integers(2, 5, profile.frozen_runs_per_camera_per_day)
    burst_sizes = rng.integers(3, 6, profile.bursts_per_camera_per_day)
    labelled_today = sorted(s.t for s in snapshots if s.camera == camera and s.labelled
                            and s.t // DAY == day)
    matches = [labelled_today[i] for i in sorted(rng.choice(
        len(labelled_today), min(profile.snapshot_matches_per_camera_per_day, len(labelled_today)),
        replace=False))]
    base_count = (profile.captures_per_camera_per_day - int(frozen_lengths.sum())
                  - int((burst_sizes - 1).sum()) - profile.lunch_captures_per_camera_per_day - len(matches))
    if base_count < len(frozen_lengths) + len(burst_sizes):
        raise ValueError(f"profile {profile.name}: too few captures for its bursts and frozen runs")

    for t in matches:
        times[t] = CaptureFrame(camera, t, snapshot=snapshot_names[t])
    plain = [add(day_start + int(t)) for t in rng.integers(*_CAPTURE_HOURS, base_count)]
    t = day_start + int(rng.integers(*_LUNCH_START))
    for _ in range(profile.lunch_captures_per_camera_per_day):
        add(t)
        t += int(rng.integers(20, 150))
    for anchor_index, size in zip(rng.choice(len(plain), len(burst_sizes), replace=False), burst_sizes):
        t = plain[anchor_index].t
        for _ in range(size - 1):
            t += int(rng.integers(*_BURST_GAP))
            add(t)

    # A frozen run repeats its source on the next few timestamps, which must come before the
    # next live frame.
    ordered = sorted(times)
    room = {t: nxt - t for t, nxt in zip(ordered, ordered[1:])}
    sources = [f for f in plain if f.t in times and room.get(f.t, 0) > _FROZEN_GAP[1] * 5]
    chosen = rng.choice(len(sources), min(len(frozen_lengths), len(sources)), replace=False)
    for offset, (index, length) in enumerate(zip(sorted(chosen), frozen_lengths)):
        source = sources[index]
        copy = ("bytes", "reencode")[(first_run_number + offset) % 2]
        t = source.t
        for _ in range(length):
            t += int(rng.integers(*_FROZEN_GAP))
            frame = add(t)
            frame.frozen_of, frame.copy = source.t, copy
    return [times[t] for t in sorted(times)]


def _mark_static(world: SiteWorld, frames: list[CaptureFrame]) -> None:
    """A live frame is static when nobody moved since the previous capture."""
    previous = None
    for frame in frames:
        scene = tuple((w.worker_id, w.box, w.mask.tobytes()) for w in world.layout(frame.camera, frame.t))
        frame.static = frame.frozen_of is None and previous is not None and scene == previous
        previous = scene


def write_captures(world: SiteWorld, frames: list[CaptureFrame], out_dir: Path) -> None:
    written: dict[tuple[str, int], bytes] = {}
    for frame in frames:
        path = out_dir / frame.file
        path.parent.mkdir(parents=True, exist_ok=True)
        if frame.frozen_of is None:
            data, _ = world.encode(frame.camera, frame.t)
            written[(frame.camera, frame.t)] = data
        else:
            source = written[(frame.camera, frame.frozen_of)]
            data = source if frame.copy == "bytes" else _reencode(world.seed, frame, source)
        path.write_bytes(data)


def _reencode(seed: int, frame: CaptureFrame, source: bytes) -> bytes:
    rng = stream_rng(seed, Stream.FROZEN_REENCODE, camera_index(frame.camera), frame.t)
    quality = REENCODE_QUALITIES[int(rng.integers(len(REENCODE_QUALITIES)))]
    image = cv2.imdecode(np.frombuffer(source, np.uint8), cv2.IMREAD_COLOR)
    return encode_jpeg(image, quality)


def captures_manifest(frames: list[CaptureFrame]) -> dict:
    return {
        "root": "captures",
        "static_means": "live frame, nobody moved since the previous capture of that camera",
        "frames": [
            {
                "file": frame.file,
                "camera": frame.camera,
                "timestamp": iso_time(frame.t),
                "frozen_of": capture_file(frame.camera, frame.frozen_of) if frame.frozen_of is not None else None,
                "copy": frame.copy,
                "static": frame.static,
                "snapshot": frame.snapshot,
            }
            for frame in frames
        ],
    }
