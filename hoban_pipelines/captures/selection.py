"""Which live capture frames go to pseudo-labelling and human review.

The team's rule (``time_uniform``): over a date range, at most one frame per ``interval_s``
seconds per camera (a frame is taken when it is at least that long after the camera's last
taken one), none within ``exclusion_s`` of a go2k_manual snapshot of the same camera (already
labelled by hand), cameras interleaved, capped at ``target`` frames. Over the cap each camera
keeps its share of the candidates (in proportion to how many it has), spread evenly over its
time range, so the cap thins every hour alike instead of cutting off the last days.

The ``review_value`` policy keeps the same candidates and shares but, within a camera, prefers
the frames where the detector is unsure, since that is where a reviewer's minute changes the
next model most: each final detection scoring within ``uncertain_band`` of the adopted
confidence counts one, and so does each confident sliced detection the full-image gate removes
(the two passes disagree). It needs the detector's predictions on every candidate
(:func:`hoban_pipelines.captures.pseudo_labels.review_values`); ties keep the time-uniform choice. Both policies' picks are reported
side by side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hoban_pipelines.captures.dedup import FRAMES, LIVE
from hoban_pipelines.captures.ingest import CaptureError
from hoban_pipelines.core.report import BuildReport, Table

SELECTION = "selection.parquet"
POLICIES = ("time_uniform", "review_value")


@dataclass(frozen=True)
class SelectionRule:
    interval_s: float = 10.0
    exclusion_s: float = 10.0
    target: int = 3000
    policy: str = "time_uniform"
    uncertain_band: float = 0.15

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise CaptureError(f"selection policy {self.policy!r} is not one of {list(POLICIES)}")
        if self.interval_s < 0 or self.exclusion_s < 0:
            raise CaptureError(f"interval_s and exclusion_s must be >= 0, got {self.interval_s}, {self.exclusion_s}")
        if self.target < 1:
            raise CaptureError(f"the selection target must be at least 1 frame, got {self.target}")

    def as_dict(self) -> dict:
        return asdict(self)


def live_frames(dedup_dirs: dict[str, Path]) -> pd.DataFrame:
    """The live frames of the given dedup versions (day -> folder), with their day."""
    tables = []
    for day, folder in sorted(dedup_dirs.items()):
        frames = pd.read_parquet(Path(folder) / FRAMES)
        tables.append(frames[frames["status"] == LIVE].assign(day=day))
    if not tables:
        raise CaptureError("no captures_dedup day in the selection's date range: ingest and dedup captures first")
    return pd.concat(tables, ignore_index=True)


def labelled_snapshots(labelled_root: Path, timezone: str) -> pd.DataFrame:
    """Camera and time of a labelled set's images (go2k_manual's ``manifests/images.parquet``,
    local times without a zone), in the capture time zone."""
    images = pd.read_parquet(Path(labelled_root) / "manifests" / "images.parquet", columns=["camera", "timestamp"])
    stamps = pd.to_datetime(images["timestamp"])
    if stamps.dt.tz is None:
        stamps = stamps.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")
    return pd.DataFrame({"camera": images["camera"], "timestamp": stamps}).dropna(subset=["timestamp"])


def candidates(frames: pd.DataFrame, labelled: pd.DataFrame, rule: SelectionRule) -> pd.DataFrame:
    """The frames far enough from a labelled snapshot, thinned to one per ``interval_s`` a camera,
    in camera then time order. ``labelled`` has camera and timestamp (tz-aware) columns; a
    snapshot whose camera is unknown excludes frames of every camera around its time."""
    kept = []
    for camera, mine in frames.sort_values(["camera", "timestamp", "name"], kind="stable").groupby("camera", sort=True):
        seconds = _seconds(mine["timestamp"])
        near = labelled[(labelled["camera"] == camera) | labelled["camera"].isna()]
        free = ~_within(seconds, _seconds(near["timestamp"]), rule.exclusion_s)
        taken, last = [], -np.inf
        for index, t, ok in zip(mine.index, seconds, free):
            if ok and t - last >= rule.interval_s:
                taken.append(index)
                last = t
        kept.append(mine.loc[taken])
    return pd.concat(kept) if kept else frames.iloc[0:0]


def _seconds(timestamps: pd.Series) -> np.ndarray:
    return (pd.to_datetime(timestamps, utc=True) - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(float)


def _within(times: np.ndarray, anchors: np.ndarray, window: float) -> np.ndarray:
    """Whether each time lies within ``window`` seconds of any anchor."""
    anchors = np.sort(anchors[~np.isnan(anchors)])
    if not len(anchors):
        return np.zeros(len(times), bool)
    after = np.clip(np.searchsorted(anchors, times), 0, len(anchors) - 1)
    before = np.clip(after - 1, 0, len(anchors) - 1)
    return np.minimum(np.abs(anchors[after] - times), np.abs(anchors[before] - times)) <= window


def shares(counts: dict[str, int], target: int) -> dict[str, int]:
    """Each camera's number of frames under the cap: in proportion to its candidates, largest
    remainders first, never more than it has."""
    total = sum(counts.values())
    if total <= target:
        return dict(counts)
    exact = {camera: n * target / total for camera, n in counts.items()}
    share = {camera: int(value) for camera, value in exact.items()}
    for camera in sorted(exact, key=lambda c: (share[c] - exact[c], c))[: target - sum(share.values())]:
        share[camera] += 1
    return share


def spread(n: int, k: int) -> np.ndarray:
    """``k`` of ``n`` positions evenly spread, first and last included."""
    if k >= n:
        return np.arange(n)
    if k <= 1:
        return np.array([n // 2] if k == 1 else [], dtype=int)
    return np.round(np.linspace(0, n - 1, k)).astype(int)  # steps of >= 1: distinct


def pick(pool: pd.DataFrame, rule: SelectionRule, values: pd.Series | None = None) -> pd.DataFrame:
    """The selection from the candidates: each camera's share, evenly spread in time or, with
    ``values`` (review value by path), its most valuable frames, then cameras interleaved."""
    per_camera = dict(pool.groupby("camera").size())
    share = shares({c: int(n) for c, n in per_camera.items()}, rule.target)
    chosen = []
    for camera, mine in pool.groupby("camera", sort=True):
        uniform = mine.iloc[spread(len(mine), share[camera])]
        if values is not None and share[camera] < len(mine):
            score = mine["path"].map(values).fillna(0).to_numpy()
            preferred = np.zeros(len(mine), bool)
            preferred[spread(len(mine), share[camera])] = True  # ties keep the time-uniform choice
            order = np.lexsort((~preferred, -score))
            uniform = mine.iloc[np.sort(order[: share[camera]])]
        chosen.append(uniform.assign(rank_in_camera=np.arange(len(uniform))))
    picked = pd.concat(chosen) if chosen else pool.iloc[0:0].assign(rank_in_camera=[])
    # interleave: cam1's first, cam2's first, cam1's second, ... so any prefix mixes the cameras
    picked = picked.sort_values(["rank_in_camera", "camera"], kind="stable").drop(columns="rank_in_camera")
    return picked.reset_index(drop=True)


def build_selection(frames: pd.DataFrame, labelled: pd.DataFrame, rule: SelectionRule, out_dir: Path,
                    review_value: Callable[[list[str], Path], pd.Series] | None = None) -> BuildReport:
    """Write the selection (``selection.parquet``: the frames in review order, with ``order``) and
    report per camera what each policy picked. The review_value policy needs ``review_value``:
    given the candidates' paths and ``out_dir`` (where it may keep what it computed), their
    values by path."""
    pool = candidates(frames, labelled, rule)
    values = None
    if rule.policy == "review_value":
        if review_value is None:
            raise CaptureError("the review_value policy needs the detector's predictions on the candidates")
        values = review_value(pool["path"].tolist(), Path(out_dir))
    uniform = pick(pool, rule)
    chosen = pick(pool, rule, values) if values is not None else uniform
    chosen = chosen.assign(order=np.arange(len(chosen)))
    if values is not None:
        chosen = chosen.assign(review_value=chosen["path"].map(values).fillna(0.0))
    chosen.to_parquet(Path(out_dir) / SELECTION, index=False)
    excluded = len(frames) - len(candidates(frames, labelled, SelectionRule(0.0, rule.exclusion_s, rule.target)))
    picks = {"time_uniform": uniform, **({"review_value": chosen} if values is not None else {})}
    rows = []
    for camera in sorted(set(frames["camera"])):
        row = {"camera": camera, "live": int((frames["camera"] == camera).sum()),
               "candidates": int((pool["camera"] == camera).sum())}
        for name, table in picks.items():
            row[name] = int((table["camera"] == camera).sum())
        rows.append(row)
    details = {
        "policy": rule.policy, "interval_s": rule.interval_s, "exclusion_s": rule.exclusion_s,
        "days": ", ".join(sorted(set(frames["day"]))),
        "cameras": Table(rows, ["camera", "live", "candidates", *picks]),
    }
    if values is not None:
        for name, table in picks.items():
            picked_values = table["path"].map(values).fillna(0.0)
            details[f"{name}_mean_review_value"] = float(picked_values.mean()) if len(table) else 0.0
            details[f"{name}_frames_with_doubt"] = int((picked_values > 0).sum())
        details["policies_agree_on"] = len(set(uniform["path"]) & set(chosen["path"]))
    return BuildReport(
        counts={"frames": len(chosen), "candidates": len(pool), "live_frames": len(frames),
                "excluded_near_labelled": excluded,
                **{f"frames_{camera}": int((chosen["camera"] == camera).sum()) for camera in sorted(set(frames["camera"]))}},
        details=details,
        warnings=[] if len(pool) >= rule.target else
        [f"{len(pool)} candidate frames, fewer than the target {rule.target}: every candidate is selected"],
    )
