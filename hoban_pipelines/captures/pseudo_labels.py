"""Pseudo-labels of the selected capture frames: the adopted sliced inference + full-image gate.

The detector runs once over the frames through the evaluation engine and its raw detections are
kept in the version (``predictions.parquet``, the evaluation cache format), so a changed setting
re-scores them without inferring again, and a selection that already predicted its candidates
(the review-value policy) hands its cache over instead. The boxes are those of the model's
adopted ``inference_config`` (confidence, merge, gate); each is kept with whether the gate let
it through, so the count before and after the gate (the team's run: 6,233 -> 5,058) is read from
one table.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hoban_pipelines.core.pictures import sample_grid
from hoban_pipelines.core.report import BuildReport, Picture, Table
from hoban_pipelines.evaluation.engine import Detector, InferenceSettings
from hoban_pipelines.evaluation.gate import gate_mask
from hoban_pipelines.evaluation.postprocess import postprocess_frames
from hoban_pipelines.evaluation.predictions import (
    PREDICTIONS_FILE, Predictions, load_predictions, predict_to_file, write_predictions,
)
from hoban_pipelines.evaluation.sweeps import Setting, at_conf

BOXES = "boxes.parquet"
BOX_COLUMNS = ["path", "camera", "cls", "label", "score", "x1", "y1", "x2", "y2", "kept_by_gate"]
SAMPLES = "samples.jpg"
SAMPLE_FRAMES = 6


def inference_settings(config: dict[str, Any], conf_floor: float = 0.05) -> InferenceSettings:
    """The slicing an ``inference_config`` was adopted at, as engine settings; the full-image
    pass only when the adopted setting has a gate (nothing else reads it, and it can cost as much
    as the slices)."""
    slicing = config["slicing"]
    return InferenceSettings(slice_size=int(slicing["slice_size"]), imgsz=int(slicing["imgsz"]),
                             full_imgsz=int(slicing["full_imgsz"]) if config.get("gate") else 0,
                             overlap=float(slicing["overlap"]), conf_floor=min(conf_floor, float(config["conf"])))


def predict_frames(detector: Detector, paths: list[str], settings: InferenceSettings, out_file: Path, *,
                   batch: int, about: dict[str, Any]) -> BuildReport:
    """Both passes over frames named by their paths (the name a cache and a selection share)."""
    return predict_to_file(detector, [(path, Path(path)) for path in paths], settings, out_file, batch=batch,
                           about=about)


def matching_cache(folder: Path, about: dict[str, Any], config: dict[str, Any]) -> Predictions | None:
    """The predictions a folder holds (a review-value selection's) if they were made by the model
    version ``about`` names at ``config``'s slicing; None otherwise."""
    cache = Path(folder) / PREDICTIONS_FILE
    if not cache.is_file():
        return None
    predictions = load_predictions(cache)
    made_with = {key: predictions.record.get(key) for key in ("model_version", "export_version")}
    same_model = made_with == {key: about.get(key) for key in made_with}
    same_slicing = predictions.record.get("settings") == inference_settings(config).as_dict()
    return predictions if same_model and same_slicing else None


def gated_boxes(predictions: Predictions, setting: Setting) -> pd.DataFrame:
    """The merged sliced detections at the setting's confidence, each with ``kept_by_gate``."""
    merged = postprocess_frames(at_conf(predictions.sliced, setting.conf), setting.postprocess).reset_index(drop=True)
    kept = gate_mask(merged, predictions.full, setting.gate) if setting.gate else np.ones(len(merged), bool)
    return merged.assign(kept_by_gate=kept)


def review_values(predictions: Predictions, setting: Setting, band: float) -> pd.Series:
    """Review value by image of the cache: merged sliced detections scoring within ``band`` of
    the setting's confidence, plus the detections at that confidence the setting's gate removes."""
    loose = postprocess_frames(at_conf(predictions.sliced, max(setting.conf - band, 0.0)), setting.postprocess)
    uncertain = loose[(loose["score"] - setting.conf).abs() <= band].groupby("image").size()
    boxes = gated_boxes(predictions, setting)
    removed = boxes[~boxes["kept_by_gate"]].groupby("image").size()
    values = pd.Series(0.0, index=pd.Index(predictions.readable, name="image"))
    return values.add(uncertain, fill_value=0).add(removed, fill_value=0)


def review_scorer(detector: Detector, config: dict[str, Any], band: float, *, batch: int = 16,
                  about: dict[str, Any] | None = None) -> Callable[[list[str], Path], pd.Series]:
    """The review-value function a selection calls on its candidates: it predicts them into the
    selection's version (the cache :func:`build_pseudo_labels` then reads) and values them."""
    def score(paths: list[str], out_dir: Path) -> pd.Series:
        cache = Path(out_dir) / PREDICTIONS_FILE
        predict_frames(detector, paths, inference_settings(config), cache, batch=batch, about=about or {})
        return review_values(load_predictions(cache), Setting.from_dict(config), band)

    return score


def build_pseudo_labels(selection: pd.DataFrame, config: dict[str, Any], classes: list[str], out_dir: Path, *,
                        detector: Detector | None = None, cache: Predictions | None = None, batch: int = 16,
                        about: dict[str, Any] | None = None) -> BuildReport:
    """Pseudo-label ``selection``'s frames (path, camera) with ``config`` into ``out_dir``.

    ``cache`` holds predictions already made on (at least) these frames at the config's slicing;
    without one, ``detector`` infers them."""
    out_dir = Path(out_dir)
    paths = selection["path"].tolist()
    cached = out_dir / PREDICTIONS_FILE
    if cache is not None:
        subset = cache.on(paths)
        write_predictions(cached, pd.concat([subset.sliced, subset.full], ignore_index=True), subset.frames,
                          subset.record)
        inferred: BuildReport | None = None
    elif detector is not None:
        inferred = predict_frames(detector, paths, inference_settings(config), cached, batch=batch, about=about or {})
    else:
        raise ValueError("pseudo-labels need a detector or a cache of predictions on the frames")
    predictions = load_predictions(cached)
    setting = Setting.from_dict(config)
    boxes = gated_boxes(predictions, setting)
    camera_of = dict(zip(selection["path"], selection["camera"]))
    boxes = boxes.rename(columns={"image": "path"}).assign(
        camera=lambda b: b["path"].map(camera_of), label=lambda b: [classes[int(c)] for c in b["cls"]])
    boxes = boxes[BOX_COLUMNS]
    boxes.to_parquet(out_dir / BOXES, index=False)

    after = boxes[boxes["kept_by_gate"]]
    unreadable = predictions.frames[predictions.frames["width"] <= 0]
    rows = []
    for (camera, label), group in boxes.groupby(["camera", "label"], sort=True):
        kept = int(group["kept_by_gate"].sum())
        rows.append({"camera": camera, "class": label, "before_gate": len(group), "after_gate": kept,
                     "filtered": round(1 - kept / len(group), 3) if len(group) else 0.0})
    busiest = after.groupby("path").size().sort_values(ascending=False, kind="stable").index[:SAMPLE_FRAMES]
    removed = boxes[~boxes["kept_by_gate"]]
    sample_grid(((Path(p), after[after["path"] == p], removed[removed["path"] == p]) for p in busiest), classes,
                out_dir / SAMPLES, removed_by="the gate")
    details: dict[str, Any] = {
        "setting": setting.name, "filtered_by_gate": round(1 - len(after) / len(boxes), 3) if len(boxes) else 0.0,
        "inferred": inferred is not None,
        "per_camera_and_class": Table(rows, ["camera", "class", "before_gate", "after_gate", "filtered"]),
        "samples": Picture(SAMPLES, "the frames with the most pseudo-labels: kept in class colours, gated in magenta"),
    }
    if inferred is not None:
        details["frames_per_second"] = inferred.details["frames_per_second"]
    return BuildReport(
        counts={"frames": len(selection), "frames_with_boxes": int(after["path"].nunique()),
                "boxes_before_gate": len(boxes), "boxes_after_gate": len(after), "unreadable": len(unreadable)},
        details=details,
        warnings=(inferred.warnings if inferred else []),
    )
