"""The cache every evaluation reads: one sliced and one full-image pass of one model over one set
of frames, every raw detection above a low floor, as Parquet in a lake version.

One Parquet file holds it all, so the CLI's output and a lake version are the same thing: the
detections of both passes (``engine.DETECTION_COLUMNS``) as the table, and in the file's schema
metadata the record (settings, classes, model, backend and device, timings) and the frame table
(each frame's size, tiles and status). What a cache was computed from (model version, frames,
settings, backend) is its reuse key: the same inputs are never inferred twice.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from hoban_pipelines.core.report import BuildReport, Table
from hoban_pipelines.core.yolo_format import VAL, read_yolo_dataset
from hoban_pipelines.evaluation.engine import (
    FRAME_COLUMNS, FULL, SLICED, Detector, EvaluationError, InferenceSettings, run_pass,
)

PREDICTIONS_FILE = "predictions.parquet"  # in a lake version
RECORD_KEY, FRAMES_KEY = b"hoban.inference", b"hoban.frames"


@dataclass(frozen=True)
class EvaluationSet:
    """The frames a model is evaluated on and their ground truth (``truth``: image, cls, x1..y2 in pixels)."""

    root: Path
    classes: list[str]
    images: list[tuple[str, Path]]  # (name relative to the dataset, path)
    truth: pd.DataFrame

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.images]


def evaluation_set(dataset: Path, split: str = VAL) -> EvaluationSet:
    """The ``split`` images of the YOLO dataset at ``dataset`` (a folder with data.yaml) and their boxes."""
    data = read_yolo_dataset(Path(dataset), splits=(split,))
    images = [(row.image, Path(row.path)) for row in data.images.itertuples()]
    images += [(str(Path(path).relative_to(data.root)) if Path(path).is_relative_to(data.root) else str(path),
                Path(path)) for path, _ in data.unreadable]  # the engine reports them; nothing goes missing
    truth = data.boxes[["image", "cls", "x1", "y1", "x2", "y2"]].reset_index(drop=True)
    return EvaluationSet(Path(data.root), list(data.classes), images, truth)


def check_classes(model_classes: list[str], truth_classes: list[str], model: str, data: str) -> None:
    """An error unless the model predicts exactly the ground truth's classes, in its order."""
    if list(model_classes) != list(truth_classes):
        raise EvaluationError(
            f"{model} predicts classes {list(model_classes)} but {data} is labelled {list(truth_classes)}; "
            "evaluate a model trained on these classes (class ids are compared by position)"
        )


def frames_key(images: list[tuple[str, Path]]) -> str:
    """A short digest of the frame list (names and sizes on disk), part of a cache's reuse key."""
    digest = hashlib.sha256()
    for name, path in images:
        size = Path(path).stat().st_size if Path(path).is_file() else -1
        digest.update(f"{name}\0{size}\n".encode())
    return digest.hexdigest()[:16]


def predict_to_file(detector: Detector, images: list[tuple[str, Path]], settings: InferenceSettings, path: Path,
                    *, batch: int = 16, about: dict[str, Any] | None = None,
                    progress: Callable[[str, int], None] | None = None) -> BuildReport:
    """Run both passes of ``detector`` over ``images`` and write the cache to ``path`` (.parquet)."""
    sliced = run_pass(detector, images, settings, batch=batch,
                      progress=(lambda done: progress(SLICED, done)) if progress else None)
    passes = [sliced.detections]
    full_seconds = 0.0
    if settings.full_imgsz:
        full = run_pass(detector, images, settings, full_image=True, batch=batch,
                        progress=(lambda done: progress(FULL, done)) if progress else None)
        passes.append(full.detections)
        full_seconds = full.seconds
    detections = pd.concat(passes, ignore_index=True)
    readable = int((sliced.frames["width"] > 0).sum())
    speed = {
        "backend": detector.backend, "device": detector.device_name, "threads": detector.threads, "batch": batch,
        "frames": readable, "sliced_seconds": round(sliced.seconds, 3), "full_seconds": round(full_seconds, 3),
        "ms_per_frame": round(1000 * sliced.seconds / readable, 1) if readable else None,
        "frames_per_second": round(readable / sliced.seconds, 3) if readable and sliced.seconds else None,
    }
    record = {"settings": settings.as_dict(), "classes": detector.names, "speed": speed, **(about or {})}
    write_predictions(Path(path), detections, sliced.frames, record)
    counts = {"frames": len(sliced.frames), "unreadable": len(sliced.frames) - readable,
              "tiles": int(sliced.frames["tiles"].sum()), "sliced_detections": int(len(sliced.detections)),
              "full_detections": int(len(detections) - len(sliced.detections))}
    sizes = sliced.frames[sliced.frames["width"] > 0].groupby(["width", "height"]).size()
    return BuildReport(
        counts=counts,
        details={
            "backend": detector.backend, "device": detector.device_name, "threads": detector.threads,
            "slice_size": settings.slice_size, "overlap": settings.overlap, "imgsz": settings.imgsz,
            "full_imgsz": settings.full_imgsz, "conf_floor": settings.conf_floor,
            "ms_per_frame": speed["ms_per_frame"], "frames_per_second": speed["frames_per_second"],
            "full_pass_seconds": round(full_seconds, 2),
            "frame_sizes": Table([{"width": int(w), "height": int(h), "frames": int(n)} for (w, h), n in sizes.items()],
                                 ["width", "height", "frames"]),
        },
        warnings=sliced.warnings,
    )


def write_predictions(path: Path, detections: pd.DataFrame, frames: pd.DataFrame, record: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(detections, preserve_index=False)
    metadata = {**(table.schema.metadata or {}), RECORD_KEY: json.dumps(record, default=str).encode(),
                FRAMES_KEY: frames.to_json(orient="records").encode()}
    pq.write_table(table.replace_schema_metadata(metadata), path)


@dataclass(frozen=True)
class Predictions:
    """A cache as read back: the sliced and full-image detections, the frames, the record."""

    sliced: pd.DataFrame
    full: pd.DataFrame
    frames: pd.DataFrame
    record: dict[str, Any]

    @property
    def classes(self) -> list[str]:
        return list(self.record["classes"])

    @property
    def readable(self) -> list[str]:
        return self.frames.loc[self.frames["width"] > 0, "image"].tolist()

    def on(self, frames: list[str]) -> "Predictions":
        """The same cache restricted to ``frames`` (the ones with ground truth)."""
        keep = set(frames)
        return Predictions(self.sliced[self.sliced["image"].isin(keep)].reset_index(drop=True),
                           self.full[self.full["image"].isin(keep)].reset_index(drop=True),
                           self.frames[self.frames["image"].isin(keep)].reset_index(drop=True), self.record)


def load_predictions(path: Path) -> Predictions:
    """A cache written by ``predict_to_file`` (a .parquet file, or a lake version folder holding one)."""
    import pyarrow.parquet as pq

    path = Path(path)
    path = path / PREDICTIONS_FILE if path.is_dir() else path
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:
        raise EvaluationError(f"{path} is not a readable Parquet file ({exc})") from exc
    metadata = table.schema.metadata or {}
    if RECORD_KEY not in metadata or FRAMES_KEY not in metadata:
        raise EvaluationError(f"{path} is not a sliced-predictions cache (no inference record in its metadata); "
                              "write one with `hoban predict-sliced` or the sliced_predictions asset")
    detections = table.to_pandas()
    frames = pd.DataFrame(json.loads(metadata[FRAMES_KEY]), columns=FRAME_COLUMNS)
    sliced = detections[detections["pass"] == SLICED].reset_index(drop=True)
    full = detections[detections["pass"] == FULL].reset_index(drop=True)
    return Predictions(sliced, full, frames, json.loads(metadata[RECORD_KEY]))
