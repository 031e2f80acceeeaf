"""Frozen frames in a day of captures, and the one explicit way to delete them.

A recorder that loses its stream keeps writing the last good frame, as the same bytes or
decoded and re-encoded. Each camera's frames are read in time order and compared with the last
frame that was not frozen (:func:`hoban_pipelines.datasets.near_duplicates.frozen_flags`: equal
SHA-256, else block-max mean absolute difference on 1/4-scale grayscale decodes below
``FROZEN_THRESHOLD``; its docstring has the figures the threshold was calibrated on, the demo
site's planted runs). A frozen run is every frozen frame that points at one source frame. A frame
that cannot be decoded (unreadable, truncated) is counted and kept out of the keep-list, and the
run goes on. The first frame of a day is compared with nothing: a run that crosses midnight is
found from its second day's first live frame on.

Nothing here deletes a frame unless :func:`apply_prune` is called on a :func:`plan_prune` of one
dedup version; the plan refuses when any frame it would delete, or the frame it repeats, is no
longer the file that version read (so a prune never removes the last copy of a scene), and every
removal is logged before the file goes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from hoban_pipelines.captures.ingest import MANIFEST, CaptureError
from hoban_pipelines.core.lake import file_sha256
from hoban_pipelines.core.report import BuildReport, Table
from hoban_pipelines.datasets.near_duplicates import FROZEN_THRESHOLD, frozen_flags

FRAMES = "frames.parquet"  # the manifest's rows with status, reason, score, frozen_of, error
KEEP_LIST = "keep.txt"  # the live frames' paths, one a line, in camera then time order
RUNS = "runs.parquet"
LIVE, FROZEN, UNREADABLE = "live", "frozen", "unreadable"
_RUN_ROWS_SHOWN = 20


def find_frozen(manifest: pd.DataFrame, threshold: float = FROZEN_THRESHOLD, workers: int | None = None) -> pd.DataFrame:
    """The manifest's frames with ``status`` (live, frozen, unreadable), ``reason`` (bytes,
    pixels), ``score`` (block-max MAD against the last live frame), ``frozen_of`` (the path of the
    frame it repeats) and ``error``: each camera on its own, in time order."""
    parts = []
    for _, frames in manifest.groupby("camera", sort=True):
        frames = frames.sort_values(["timestamp", "name"], kind="stable")
        results = frozen_flags(frames["path"], threshold=threshold, workers=workers)
        flags = pd.DataFrame({
            "status": [FROZEN if r.is_frozen else UNREADABLE if r.error else LIVE for r in results],
            "reason": [r.reason for r in results], "score": [r.score for r in results],
            "frozen_of": [r.frozen_of for r in results], "error": [r.error for r in results],
        }, index=frames.index)
        parts.append(frames.join(flags))
    columns = [*manifest.columns, "status", "reason", "score", "frozen_of", "error"]
    found = pd.concat(parts) if parts else pd.DataFrame(columns=columns)
    found["score"] = found["score"].astype(float)
    return found[columns].reset_index(drop=True)


def frozen_runs(frames: pd.DataFrame) -> pd.DataFrame:
    """One row a run: camera, source frame, first and last repeat, repeats, bytes they take."""
    frozen = frames[frames["status"] == FROZEN]
    runs = frozen.groupby(["camera", "frozen_of"], sort=False).agg(
        first=("timestamp", "min"), last=("timestamp", "max"), repeats=("path", "size"), bytes=("bytes", "sum"),
        byte_copies=("reason", lambda reasons: int((reasons == "bytes").sum())),
    ).reset_index().rename(columns={"frozen_of": "source"})
    return runs.sort_values(["camera", "first"], kind="stable").reset_index(drop=True)


def build_dedup(manifest_dir: Path, out_dir: Path, threshold: float = FROZEN_THRESHOLD,
                workers: int | None = None) -> BuildReport:
    """Flag the frozen frames of one ``captures`` version (its folder) into ``out_dir``: every
    frame with its status, the keep-list, the runs, and what deleting the repeats would free."""
    if threshold <= 0:
        raise CaptureError(f"the frozen-frame threshold must be positive, got {threshold}")
    manifest = pd.read_parquet(Path(manifest_dir) / MANIFEST)
    frames = find_frozen(manifest, threshold, workers)
    runs = frozen_runs(frames)
    out_dir = Path(out_dir)
    frames.to_parquet(out_dir / FRAMES, index=False)
    runs.to_parquet(out_dir / RUNS, index=False)
    live = frames[frames["status"] == LIVE]
    (out_dir / KEEP_LIST).write_text("".join(f"{path}\n" for path in live["path"]))
    frozen, unreadable = frames[frames["status"] == FROZEN], frames[frames["status"] == UNREADABLE]
    scores = frames["score"]
    longest = runs["repeats"].max() if len(runs) else 0
    return BuildReport(
        counts={"frames": len(frames), "kept": len(live), "frozen": len(frozen),
                "frozen_byte_copies": int((frozen["reason"] == "bytes").sum()),
                "frozen_reencoded": int((frozen["reason"] == "pixels").sum()),
                "unreadable": len(unreadable), "runs": len(runs)},
        details={
            "bytes_freeable": int(frozen["bytes"].sum()),
            "threshold": float(threshold),
            "longest_run": int(longest),
            # how close the calls came: the most different repeat and the least different live frame
            "frozen_score_max": _finite(scores[frames["status"] == FROZEN].max()),
            "live_score_min": _finite(scores[frames["status"] == LIVE].min()),
            "cameras": Table([_camera_row(frames, runs, camera) for camera in sorted(set(frames["camera"]))],
                             ["camera", "frames", "kept", "frozen", "unreadable", "runs", "bytes_freeable"]),
            "runs": Table([{"camera": r.camera, "source": Path(r.source).name, "first": r.first.isoformat(),
                            "last": r.last.isoformat(), "repeats": int(r.repeats), "byte_copies": int(r.byte_copies)}
                           for r in runs.nlargest(_RUN_ROWS_SHOWN, "repeats").itertuples()],
                          ["camera", "source", "first", "last", "repeats", "byte_copies"]),
        },
        warnings=[f"{camera} {Path(path).name}: {error}; kept out of the keep-list"
                  for camera, path, error in unreadable[["camera", "path", "error"]].itertuples(index=False)],
    )


def _finite(value: float) -> float | None:
    return None if pd.isna(value) else float(value)


def _camera_row(frames: pd.DataFrame, runs: pd.DataFrame, camera: str) -> dict:
    mine = frames[frames["camera"] == camera]
    return {"camera": camera, "frames": len(mine), "kept": int((mine["status"] == LIVE).sum()),
            "frozen": int((mine["status"] == FROZEN).sum()), "unreadable": int((mine["status"] == UNREADABLE).sum()),
            "runs": int((runs["camera"] == camera).sum()),
            "bytes_freeable": int(mine.loc[mine["status"] == FROZEN, "bytes"].sum())}


# --------------------------------------------------------------------------- prune


class PruneRefused(CaptureError):
    """A prune that could lose a frame nobody asked to delete."""


@dataclass(frozen=True)
class PrunePlan:
    """What pruning one dedup version would delete: ``files`` (path, sha256, bytes, camera,
    frozen_of and its sha256) still as that version read them, ``gone`` already absent (an earlier prune), and
    ``problems``: any one refuses the whole prune."""

    dedup_dir: Path
    files: list[dict] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(f["bytes"] for f in self.files)

    def summary(self) -> dict:
        per_camera: dict[str, int] = {}
        for f in self.files:
            per_camera[f["camera"]] = per_camera.get(f["camera"], 0) + 1
        return {"dedup_version": str(self.dedup_dir), "files": len(self.files), "bytes": self.bytes,
                "per_camera": per_camera, "already_gone": len(self.gone), "problems": self.problems}


def plan_prune(dedup_dir: Path) -> PrunePlan:
    """The repeats one dedup version found, each checked against the file on disk now: it must
    hold the bytes that version read (sha256), and so must the live frame it repeats."""
    frames_file = Path(dedup_dir) / FRAMES
    if not frames_file.is_file():
        raise CaptureError(f"{dedup_dir} is not a captures_dedup version ({FRAMES} missing): "
                           "pass a folder under lake/captures_dedup/<day>/")
    frames = pd.read_parquet(frames_file)
    recorded = dict(zip(frames["path"], frames["sha256"]))
    plan = PrunePlan(Path(dedup_dir))
    for row in frames[frames["status"] == FROZEN].itertuples():
        changed = _changed(row.path, row.sha256)
        source_changed = _changed(row.frozen_of, recorded[row.frozen_of])
        if source_changed:
            plan.problems.append(f"{row.frozen_of} (the live frame {Path(row.path).name} repeats) {source_changed}")
        if changed == "is gone":
            plan.gone.append(row.path)
        elif changed:
            plan.problems.append(f"{row.path} {changed}")
        else:
            plan.files.append({"path": row.path, "sha256": row.sha256, "bytes": int(row.bytes),
                               "camera": row.camera, "frozen_of": row.frozen_of,
                               "frozen_of_sha256": recorded[row.frozen_of]})
    return plan


def _changed(path: str, sha256: str) -> str | None:
    """Why ``path`` is not the file recorded with ``sha256`` any more, or None."""
    try:
        now = file_sha256(Path(path))
    except FileNotFoundError:
        return "is gone"
    return None if now == sha256 else "changed since the dedup version read it (sha256 differs)"


def apply_prune(plan: PrunePlan, log_file: Path) -> Iterator[dict]:
    """Delete the plan's files, appending one JSON line a file to ``log_file`` before it goes;
    yields each logged record. Refused when the plan has problems: rematerialize the day's
    ``captures`` and ``captures_dedup`` and plan again."""
    if plan.problems:
        raise PruneRefused(f"refusing to prune {plan.dedup_dir}: {len(plan.problems)} files changed since it was "
                           f"built, e.g. {plan.problems[0]}; rematerialize captures and captures_dedup for the day "
                           "and prune the new version")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a", encoding="utf-8") as log:
        for entry in plan.files:
            if _changed(entry["path"], entry["sha256"]) or _changed(entry["frozen_of"], entry["frozen_of_sha256"]):
                raise PruneRefused(f"{entry['path']} or the frame it repeats changed while the prune ran; "
                                   "stopped before deleting it")
            record = {"time": datetime.now(UTC).isoformat(), "dedup_version": str(plan.dedup_dir), **entry}
            log.write(json.dumps(record) + "\n")
            log.flush()
            os.fsync(log.fileno())
            os.remove(entry["path"])
            yield record
