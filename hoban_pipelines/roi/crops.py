"""The ``roi_crops`` build: per video and ROI, crops sampled under the team's rules, split by group.

One pass over each video (``cv2.VideoCapture.grab`` for frames outside every segment, ``read``
for the rest); per ROI only the current crop, the previous kept crop and the kept crops' hashes
are held. Each frame's crop goes through, in order:

1. label: the segment holding the frame (outside every segment: skipped, not decoded);
2. cooldown: within ``COOLDOWN_FRAMES`` after the previous kept crop of this ROI;
3. motion: grayscale mean absolute difference to the previous kept crop < ``MIN_MOTION_MAD``;
4. near-duplicate: 8x8 average hash within ``MAX_HASH_DISTANCE`` bits of any kept crop of this
   video, whichever ROI it came from.

Crops that pass are candidates ("kept" in the stream: the next frame is compared with them),
staged as JPEG on disk. Per label the candidates are then sampled to the quota (``target`` x
ratios, largest remainders so they sum to the target) with a seeded generator, so a sample
spreads over the video; a short label is topped up at random from the other labels' remaining
candidates and named in the report. Simulation videos go to train; real videos' crops are
pooled and ``real_test_crops`` of them drawn at random for test.

Hand-written on purpose: the average hash is ten lines of numpy, where ``imagehash`` would pull
Pillow and PyWavelets in for one function; the sampling rules are the team's own.
"""

from __future__ import annotations

import math
import shutil
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np
import pandas as pd

from hoban_pipelines.core.pictures import contact_sheet
from hoban_pipelines.core.report import BuildReport, Picture, Table
from hoban_pipelines.roi.videos import RoiVideo, RoiVideoSet

# The team's numbers (seeds/README.md, video_roi_dataset_readme.md)
TARGET_CROPS_PER_ROI = 100
LABEL_RATIOS = {"false": 0.25, "true": 0.60, "unknown": 0.15}
MIN_MOTION_MAD = 5.0  # grey levels; below it the ROI did not move since the previous kept crop
COOLDOWN_FRAMES = 2  # frames skipped after a kept one
HASH_SIZE = 8  # 8x8 average hash: 64 bits
MAX_HASH_DISTANCE = 5  # bits; within it two crops are near-duplicates
REAL_TEST_CROPS = 500
SEED = 0

TRAIN, TEST = "train", "test"
CROPS_TABLE = "crops.parquet"
SPLIT_OF_GROUP = {"simulation": TRAIN, "real": TEST}
RULES = ("outside_segments", "cooldown", "no_motion", "near_duplicate", "over_quota", "real_over_cap")
JPEG_QUALITY = 95


def average_hash(crop: np.ndarray) -> int:
    """64-bit average hash: the crop in grayscale shrunk to 8x8, each bit set where above the mean."""
    gray = crop if crop.ndim == 2 else cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(gray, (HASH_SIZE, HASH_SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)
    bits = (small > small.mean()).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def motion_mad(gray: np.ndarray, previous: np.ndarray | None) -> float:
    """Mean absolute grey-level difference to the previous kept crop (inf when there is none)."""
    if previous is None:
        return math.inf
    return float(np.abs(gray.astype(np.int16) - previous.astype(np.int16)).mean())


def label_quotas(target: int, ratios: Mapping[str, float]) -> dict[str, int]:
    """``target`` x ratios rounded by largest remainder, so the quotas sum to ``target``."""
    total = sum(ratios.values())
    exact = {label: target * ratio / total for label, ratio in ratios.items()}
    quotas = {label: math.floor(value + 1e-9) for label, value in exact.items()}
    by_remainder = sorted(exact, key=lambda label: (-(exact[label] - quotas[label]), label))
    for label in by_remainder[: target - sum(quotas.values())]:
        quotas[label] += 1
    return quotas


@dataclass(frozen=True)
class Candidate:
    video: str
    roi: int
    frame: int
    label: str
    ahash: int
    staged: Path


@dataclass
class RoiSample:
    """One video+ROI: the candidates that passed the stream rules, the chosen ones, what was dropped."""

    video: RoiVideo
    roi: int
    candidates: list[Candidate] = field(default_factory=list)
    chosen: list[Candidate] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    short: dict[str, int] = field(default_factory=dict)  # label -> crops missing from its quota
    topped_up: int = 0


def stream_candidates(
    video: RoiVideo,
    staging: Path,
    *,
    cooldown: int = COOLDOWN_FRAMES,
    min_motion: float = MIN_MOTION_MAD,
    max_hash_distance: int = MAX_HASH_DISTANCE,
) -> list[RoiSample]:
    """One pass over ``video``: per ROI the candidates (staged JPEGs) and the counts of each rule's drops.

    Raises OSError when the video cannot be opened (the caller reports it and goes on).
    """
    capture = cv2.VideoCapture(str(video.video_path))
    if not capture.isOpened():
        raise OSError(f"{video.video_path}: cannot be opened by OpenCV")
    samples = [RoiSample(video, index) for index in range(len(video.rois))]
    previous_gray: list[np.ndarray | None] = [None] * len(video.rois)
    last_kept = [-math.inf] * len(video.rois)
    staging.mkdir(parents=True, exist_ok=True)
    try:
        frame_index = -1
        while True:
            frame_index += 1
            label = video.label_at(frame_index)
            if label is None:
                if frame_index > (video.segments[-1].end_frame if video.segments else -1):
                    break  # nothing labelled after this: stop decoding
                if not capture.grab():
                    break
                for sample in samples:
                    sample.dropped["outside_segments"] += 1
                continue
            ok, frame = capture.read()
            if not ok:
                break
            for index, (x, y, w, h) in enumerate(video.rois):
                sample = samples[index]
                if frame_index - last_kept[index] <= cooldown:
                    sample.dropped["cooldown"] += 1
                    continue
                crop = frame[y : y + h, x : x + w].copy()
                gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
                if motion_mad(gray, previous_gray[index]) < min_motion:
                    sample.dropped["no_motion"] += 1
                    continue
                crop_hash = average_hash(gray)
                # near-duplicates across the video's ROIs too: two zones of one camera can show the same ground
                kept_hashes = (kept.ahash for other in samples for kept in other.candidates)
                if any(hamming(crop_hash, kept) <= max_hash_distance for kept in kept_hashes):
                    sample.dropped["near_duplicate"] += 1
                    continue
                staged = staging / f"{video.name}_roi{index}_{frame_index:06d}.jpg"
                cv2.imwrite(str(staged), crop, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                sample.candidates.append(Candidate(video.name, index, frame_index, label, crop_hash, staged))
                previous_gray[index], last_kept[index] = gray, frame_index
            del frame  # only the ROI crops outlive the frame
    finally:
        capture.release()
    return samples


def choose_to_quota(sample: RoiSample, quotas: Mapping[str, int], rng: np.random.Generator) -> None:
    """Sample each label's candidates to its quota; top up short labels from the others' remainder."""
    by_label: dict[str, list[Candidate]] = {}
    for candidate in sample.candidates:
        by_label.setdefault(candidate.label, []).append(candidate)
    chosen: list[Candidate] = []
    remaining: list[Candidate] = []
    for label in sorted(set(quotas) | set(by_label)):
        pool, quota = by_label.get(label, []), quotas.get(label, 0)
        if len(pool) > quota:
            picked = set(rng.choice(len(pool), size=quota, replace=False).tolist())
            chosen += [c for i, c in enumerate(pool) if i in picked]
            remaining += [c for i, c in enumerate(pool) if i not in picked]
        else:
            chosen += pool
            if len(pool) < quota:
                sample.short[label] = quota - len(pool)
    missing = sum(sample.short.values())
    if missing and remaining:
        picked = set(rng.choice(len(remaining), size=min(missing, len(remaining)), replace=False).tolist())
        chosen += [c for i, c in enumerate(remaining) if i in picked]
        sample.topped_up = len(picked)
        remaining = [c for i, c in enumerate(remaining) if i not in picked]
    sample.dropped["over_quota"] += len(remaining)
    sample.chosen = sorted(chosen, key=lambda c: c.frame)


def build_roi_crops(
    videos: RoiVideoSet | Sequence[RoiVideo],
    out_dir: Path,
    *,
    target: int = TARGET_CROPS_PER_ROI,
    ratios: Mapping[str, float] = LABEL_RATIOS,
    seed: int = SEED,
    real_test_crops: int = REAL_TEST_CROPS,
    cooldown: int = COOLDOWN_FRAMES,
    min_motion: float = MIN_MOTION_MAD,
    max_hash_distance: int = MAX_HASH_DISTANCE,
) -> BuildReport:
    """Crops under ``out_dir/<split>/<label>/<video>_roi<k>_<frame>.jpg``, ``crops.parquet``
    (video, roi, frame, label, split, ahash, path) and ``contact_<label>.jpg`` per label."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    video_set = videos if isinstance(videos, RoiVideoSet) else RoiVideoSet(videos=list(videos))
    report = BuildReport(warnings=list(video_set.warnings))
    unopened = [f"{u.spec_path}: {u.video_path} ({u.reason})" for u in video_set.unopened]
    quotas = label_quotas(target, ratios)
    staging = out_dir / ".staging"
    samples: list[RoiSample] = []
    for video in video_set.videos:
        try:
            video_samples = stream_candidates(
                video, staging, cooldown=cooldown, min_motion=min_motion, max_hash_distance=max_hash_distance
            )
        except OSError as error:
            unopened.append(str(error))
            report.warnings.append(f"{error}; skipped")
            continue
        for sample in video_samples:
            # one generator per video+ROI, so adding a video does not change another's crops
            rng = np.random.default_rng([seed, zlib.crc32(video.name.encode()), sample.roi])
            choose_to_quota(sample, quotas, rng)
            if sample.short:
                report.warnings.append(
                    f"{video.name} roi{sample.roi}: short of {_short_text(sample.short)}; topped up {sample.topped_up} "
                    "from other labels"
                )
        samples += video_samples

    rows = _split_rows(samples, seed, real_test_crops)
    for row in rows:
        final = out_dir / row["split"] / row["label"] / row["staged"].name
        final.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(row.pop("staged")), final)
        row["path"] = final.relative_to(out_dir).as_posix()
    shutil.rmtree(staging, ignore_errors=True)
    columns = ["video", "roi", "frame", "label", "split", "ahash", "path"]
    table = pd.DataFrame(rows, columns=columns)
    table["ahash"] = table["ahash"].map(lambda h: f"{h:016x}")  # 64 bits do not fit a signed int64
    table.to_parquet(out_dir / CROPS_TABLE, index=False)

    over_cap = sum(1 for s in samples for c in s.chosen) - len(rows)
    _fill_report(report, samples, table, unopened, over_cap, len(video_set.videos))
    for label in sorted(table["label"].unique()):
        sheet = contact_sheet([out_dir / p for p in table.loc[table["label"] == label, "path"]], out_dir / f"contact_{label}.jpg")
        report.details[f"contact sheet {label}"] = Picture(sheet.name, f"crops labelled {label}")
    return report


def _split_rows(samples: list[RoiSample], seed: int, real_test_crops: int) -> list[dict]:
    rows = []
    real = []
    for sample in samples:
        split = SPLIT_OF_GROUP[sample.video.group]
        for candidate in sample.chosen:
            row = {"video": candidate.video, "roi": candidate.roi, "frame": candidate.frame, "label": candidate.label,
                   "split": split, "ahash": candidate.ahash, "staged": candidate.staged}
            (real if split == TEST else rows).append(row)
    if len(real) > real_test_crops:
        picked = set(np.random.default_rng([seed, 1]).choice(len(real), size=real_test_crops, replace=False).tolist())
        real = [row for i, row in enumerate(real) if i in picked]
    return rows + real


def _fill_report(report, samples, table, unopened, over_cap, videos) -> None:
    dropped = Counter()
    for sample in samples:
        dropped.update(sample.dropped)
    dropped["real_over_cap"] = over_cap
    report.counts.update({
        "videos": videos,
        "videos_unopened": len(unopened),
        "crops": len(table),
        **{f"crops_{split}": int((table["split"] == split).sum()) for split in (TRAIN, TEST)},
        **{f"label_{label}": int(n) for label, n in table["label"].value_counts().sort_index().items()},
        **{f"dropped_{rule}": int(dropped[rule]) for rule in RULES},
        "topped_up": sum(s.topped_up for s in samples),
    })
    kept = Counter(zip(table["video"], table["roi"]))
    per_video = []
    for sample in samples:
        rows = table[(table["video"] == sample.video.name) & (table["roi"] == sample.roi)]
        per_video.append({
            "video": sample.video.name, "group": sample.video.group, "video path found": sample.video.path_found,
            "roi": sample.roi,
            "candidates": len(sample.candidates), "kept": kept[(sample.video.name, sample.roi)],
            **{f"label {label}": int((rows["label"] == label).sum()) for label in sorted(set(table["label"]))},
            **{rule: int(sample.dropped[rule]) for rule in RULES[:-1]},
            "short": _short_text(sample.short), "topped up": sample.topped_up,
        })
    report.details["crops per video"] = Table(per_video, list(per_video[0]) if per_video else ["video"])
    by_split = table.groupby(["split", "label"]).size().reset_index(name="crops").to_dict("records")
    report.details["crops per split and label"] = Table(by_split, ["split", "label", "crops"])
    report.details["dropped per rule"] = Table([{"rule": r, "crops": int(dropped[r])} for r in RULES], ["rule", "crops"])
    if unopened:
        report.details["unopened videos"] = "\n".join(unopened)
    report.details["crops table"] = CROPS_TABLE


def _short_text(short: Mapping[str, int]) -> str:
    return ", ".join(f"{label} by {n}" for label, n in sorted(short.items()))
