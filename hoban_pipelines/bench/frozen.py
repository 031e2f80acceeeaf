"""Benchmark of frozen-frame detection (``captures.dedup.find_frozen``) on a day of 1920x1080
captures, against fastdup over the same frames when fastdup can be imported.

The day is generated into a temporary folder, seeded, in the recorders' layout
``<root>/<camera>/<YYYYMMDD>/<camera>_<YYYYMMDD_HHMMSS>.jpg`` on the demo site's first day:
every live frame is a distinct render of the demo site (``demo.render.SiteWorld``, cameras cam1
and cam2, JPEG quality 90, about 0.45 MB) 45-240 s after the previous one, and about one frame in
eight is planted as a frozen run right after a live frame: 1-3 repeats 2-15 s apart, a run
either byte copies of that frame or re-encodes of it at a JPEG quality of the demo's
``REENCODE_QUALITIES`` (95-98), as the demo's recorders write them. Neither generation nor
ingestion (``build_captures``, which lists, times and hashes every file into the manifest) is
timed.

What is timed is ``find_frozen`` on that manifest, each camera in time order: read each file,
hash it, decode it at 1/4 scale in grayscale and compare it with the last live frame, the same
call ``build_dedup`` makes (which adds only the parquet writes), at its default worker count.
It runs once untimed first and then three times, and the median counts: every file has then
been read before any timed run, so the OS page cache is equally warm for all three, and a
figure is of decoding and comparing, not of the disk. ``frames_per_s`` is frames over that
median. ``frozen_found`` is the planted frames flagged frozen; the run raises, reporting
nothing, when a planted frame is missed or points at the wrong source, or a live frame is
flagged.

fastdup (``fastdup_frames_per_s``, null when ``import fastdup`` fails) is timed the same way,
warm-up then median of three: ``fastdup.create(work_dir, input_dir=paths).run(...)`` over the
same files in a fresh work folder each time, as ``near_duplicates.near_duplicate_pairs_fastdup``
calls it (telemetry off before the import). It is not checked for frozen frames, which it cannot tell from live ones (every
consecutive CCTV frame scores >= 0.9967; see ``datasets.near_duplicates``), only that it read
every frame. The ``fastdup`` extra does not install beside the rest: fastdup 2.54 needs
numpy<2, and every opencv-python that sahi 0.12 accepts (>= 4.12.0.88) needs numpy>=2 (pip:
ResolutionImpossible). Install fastdup alone in another virtual environment (``pip install
fastdup``) and pass its python as ``fastdup_python`` (``--fastdup-python``): fastdup is then
timed there, in a subprocess running ``python -m hoban_pipelines.bench.frozen --fastdup-only
DIR``, a mode that needs only fastdup itself.

Measured on 2 cores while ``make demo`` trained on them: 480 frames, 175-187 frames/s
(one decode thread's worth: the second core was busy), fastdup 22-26 frames/s.

Run ``hoban bench dedup --json [--frames N]``, or ``python -m hoban_pipelines.bench.frozen
[--frames N] [--keep DIR]`` (``--keep`` leaves the generated day in DIR).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

CAMERAS = ("cam1", "cam2")
DEFAULT_FRAMES = 480
MIN_FRAMES = 8  # a camera needs a few live frames to plant a run after
PLANTED_SHARE = 0.125
RUN_LENGTHS = (1, 4)  # repeats in one frozen run, as numpy's integers(low, high)
LIVE_GAP = (45, 241)  # s between live frames
FROZEN_GAP = (2, 16)  # s between the repeats of a run
FIRST_FRAME = 7 * 3_600  # s after midnight of the site's first day
REPEATS = 3  # timed runs after one warm-up; the median counts
SEED = 7


def plant_day(root: Path, frames: int, seed: int = SEED) -> tuple[dict[str, Path], date, dict[str, str | None]]:
    """Write ``frames`` captures of the site's first day under ``root``, half a camera.

    Returns the camera folders (camera -> ``root/camera``), the day, and every frame's truth:
    path -> the path of the live frame it repeats, None for a live frame.
    """
    import cv2
    import numpy as np

    from hoban_pipelines.demo.captures import REENCODE_QUALITIES
    from hoban_pipelines.demo.crew import SITE_EPOCH, day_stamp, file_stamp
    from hoban_pipelines.demo.render import SiteWorld, encode_jpeg

    if frames < MIN_FRAMES:
        raise ValueError(f"--frames must be at least {MIN_FRAMES}, got {frames}")
    world = SiteWorld(seed)
    rng = np.random.default_rng(seed)
    truth: dict[str, str | None] = {}
    for number, camera in enumerate(CAMERAS):
        count = frames // len(CAMERAS) + (number < frames % len(CAMERAS))
        planted = max(1, round(count * PLANTED_SHARE))
        lengths: list[int] = []
        while sum(lengths) < planted:
            lengths.append(min(int(rng.integers(*RUN_LENGTHS)), planted - sum(lengths)))
        live = count - planted
        # a run follows its source directly; the first frame of the day has nothing before it
        sources = sorted(rng.choice(np.arange(1, live), len(lengths), replace=False).tolist())
        runs = dict(zip(sources, lengths))
        t = FIRST_FRAME
        for index in range(live):
            t += int(rng.integers(*LIVE_GAP)) if index else 0
            data, _ = world.encode(camera, t)
            source = _write(root, camera, t, data, day_stamp, file_stamp)
            truth[source] = None
            for _ in range(runs.get(index, 0)):
                t += int(rng.integers(*FROZEN_GAP))
                if sources.index(index) % 2:  # runs alternate: byte copies, re-encodes
                    quality = REENCODE_QUALITIES[int(rng.integers(len(REENCODE_QUALITIES)))]
                    repeat = encode_jpeg(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), quality)
                else:
                    repeat = data
                truth[_write(root, camera, t, repeat, day_stamp, file_stamp)] = source
        if day_stamp(t) != day_stamp(FIRST_FRAME):
            raise ValueError(f"{count} frames of {camera} do not fit in one day; ask for fewer")
    return {camera: root / camera for camera in CAMERAS}, SITE_EPOCH.date(), truth


def _write(root: Path, camera: str, t: int, data: bytes, day_stamp, file_stamp) -> str:
    path = root / camera / day_stamp(t) / f"{camera}_{file_stamp(t)}.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def _median_seconds(call) -> float:
    call()  # warm-up, untimed: every file is in the page cache before the first timed run
    seconds = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def check_found(found, truth: dict[str, str | None]) -> int:
    """The planted frames flagged frozen; raises on any miss or any live frame flagged."""
    from hoban_pipelines.captures.dedup import FROZEN

    if sorted(found["path"]) != sorted(truth):
        raise RuntimeError(f"find_frozen returned {len(found)} frames for {len(truth)} written")
    flagged = {path: source if status == FROZEN else None
               for path, status, source in zip(found["path"], found["status"], found["frozen_of"])}
    wrong_live = [path for path, source in truth.items() if source is None and flagged[path] is not None]
    missed = [path for path, source in truth.items() if source is not None and flagged[path] != source]
    if wrong_live or missed:
        raise RuntimeError(f"find_frozen flagged {len(wrong_live)} live frames (e.g. {wrong_live[:1]}) and missed "
                           f"or misattributed {len(missed)} planted repeats (e.g. {missed[:1]})")
    return sum(source is not None for source in truth.values())


def fastdup_frames_per_s(paths: list[str]) -> float | None:
    """Frames per second of fastdup over ``paths`` (median of three after a warm-up), or None
    when fastdup cannot be imported here."""
    # fastdup reports to Sentry and checks PyPI at import unless these are set first.
    os.environ["SENTRY_OPT_OUT"] = "1"
    os.environ["FASTDUP_PRODUCTION"] = "1"
    try:
        import fastdup
    except ImportError:
        return None

    names = [os.path.abspath(p) for p in paths]
    with tempfile.TemporaryDirectory(prefix="hoban-bench-fastdup-") as scratch:
        runs = iter(range(REPEATS + 1))

        def call() -> None:
            work_dir = Path(scratch) / f"run{next(runs)}"
            fd = fastdup.create(work_dir=str(work_dir), input_dir=names)
            fd.run(overwrite=True, print_summary=False)  # as near_duplicate_pairs_fastdup runs it
            invalid = fd.invalid_instances()
            if invalid is not None and len(invalid):
                raise RuntimeError(f"fastdup could not read {len(invalid)} of {len(names)} frames")
            annotated = len(fd.annotations())
            if annotated != len(names):
                raise RuntimeError(f"fastdup embedded {annotated} of {len(names)} frames")

        return len(names) / _median_seconds(call)


def _fastdup_elsewhere(python: str, frames_dir: Path) -> float | None:
    """fastdup's frames/s measured by another environment's ``python`` over ``frames_dir``."""
    package_root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(package_root), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([python, "-m", "hoban_pipelines.bench.frozen", "--fastdup-only", str(frames_dir)],
                          capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        raise RuntimeError(f"the fastdup run in {python} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["fastdup_frames_per_s"]


def run(frames: int = DEFAULT_FRAMES, seed: int = SEED, fastdup_python: str | None = None,
        keep: Path | None = None) -> dict:
    """Generate a day of ``frames`` captures, time ``find_frozen`` and fastdup over it.

    Returns {"frames", "frames_per_s", "frozen_found", "frozen_planted", "fastdup_frames_per_s"};
    raises rather than report a figure when the frozen frames found are not exactly those planted.
    """
    import pandas as pd

    from hoban_pipelines.captures.dedup import find_frozen
    from hoban_pipelines.captures.ingest import MANIFEST, Timestamping, build_captures

    with tempfile.TemporaryDirectory(prefix="hoban-bench-frozen-") as scratch:
        scratch = Path(scratch)
        root = Path(keep) if keep is not None else scratch / "captures"
        roots, day, truth = plant_day(root, frames, seed)
        (scratch / "manifest").mkdir()
        report = build_captures(roots, day, Timestamping(), scratch / "manifest")
        if report.counts["frames"] != len(truth):
            raise RuntimeError(f"ingestion found {report.counts['frames']} of the {len(truth)} frames written")
        manifest = pd.read_parquet(scratch / "manifest" / MANIFEST)

        found = find_frozen(manifest)
        frozen_found = check_found(found, truth)
        seconds = _median_seconds(lambda: find_frozen(manifest))

        paths = sorted(truth)
        fastdup_rate = fastdup_frames_per_s(paths)
        if fastdup_rate is None and fastdup_python:
            fastdup_rate = _fastdup_elsewhere(fastdup_python, root)
    return {
        "frames": len(truth),
        "frames_per_s": round(len(truth) / seconds, 1),
        "frozen_found": frozen_found,
        "frozen_planted": sum(source is not None for source in truth.values()),
        "fastdup_frames_per_s": None if fastdup_rate is None else round(fastdup_rate, 1),
    }


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hoban_pipelines.bench.frozen", description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES)
    parser.add_argument("--fastdup-python", default=None, help="a python that can import fastdup, when this one cannot")
    parser.add_argument("--keep", type=Path, default=None, help="write the generated day here and leave it")
    parser.add_argument("--fastdup-only", type=Path, default=None, metavar="DIR",
                        help="only time fastdup over every .jpg under DIR (needs fastdup, not this package's dependencies)")
    args = parser.parse_args(argv)
    if args.fastdup_only is not None:
        paths = sorted(str(p) for p in args.fastdup_only.rglob("*.jpg"))
        if not paths:
            raise SystemExit(f"no .jpg under {args.fastdup_only}")
        rate = fastdup_frames_per_s(paths)
        if rate is None:
            raise SystemExit(f"{sys.executable} cannot import fastdup")
        print(json.dumps({"frames": len(paths), "fastdup_frames_per_s": round(rate, 1)}))
        return
    print(json.dumps(run(args.frames, fastdup_python=args.fastdup_python, keep=args.keep)))


if __name__ == "__main__":
    _main()
