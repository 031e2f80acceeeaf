"""The second-stage verifier: a crop classifier that re-checks each sliced detection before it
counts ("a wrong positive is the worst error", the team's motorcycle-helmet log).

``build_verifier_crops`` cuts its training crops: go2k's labelled people with their class, and
"not a person" crops around the detector's background false positives (cached sliced
detections that overlap no labelled person) plus random person-sized patches of the training
frames that hold no one. Every crop is a square around the box with a context margin.

Leakage: the false positives come from the evaluation frames (that is where the cache is), and
the verifier is measured on those frames too. So the evaluation frames are split in two by a
seeded hash of their names: crops of the *fit* half train the verifier, the *held-out* half's
crops score it (its val split), and ``gate_sweep`` compares the verifier with the full-image gate
on the held-out frames only, every row on the same frames.

The verifier's gate keeps a detection when the verifier's probability of the
detection's own class reaches a threshold; a person seen with the wrong helmet class is dropped
too, as it would be a false positive of that class.
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import pandas as pd

from hoban_pipelines.core.pictures import contact_sheet
from hoban_pipelines.core.report import BuildReport, Picture, Table
from hoban_pipelines.core.yolo_format import TRAIN
from hoban_pipelines.evaluation.engine import EvaluationError
from hoban_pipelines.evaluation.metrics import box_iou, score_subsets
from hoban_pipelines.evaluation.postprocess import postprocess_frames
from hoban_pipelines.evaluation.predictions import evaluation_set
from hoban_pipelines.evaluation.gate import Gate, gate_mask
from hoban_pipelines.evaluation.sweeps import TEAM_GATE, TEAM_POSTPROCESS, Setting, at_conf
from hoban_pipelines.training.classifier import Classifier, classify_crops

BACKGROUND = "background"  # the verifier's "not a person" class
CONTEXT_MARGIN = 0.25  # of the box's longer side, on each side
CROP_SIZE = 64  # px: crops are stored (and the verifier trains) at this size
FP_CONF = 0.25  # cached detections at or above it that overlap no person are background crops
FP_IOU = 0.3  # below it (against every labelled person, any class) a detection is background
BACKGROUND_PER_FRAME = 2  # random person-sized patches of each training frame that hold no one
HELD_OUT_SHARE = 0.5
SEED = 0
CROPS_TABLE = "crops.parquet"
RECORD_FILE = "verifier_crops.json"
FIT, HELD_OUT = "train", "val"  # the crop folders' splits: what trains and what scores the verifier
VERIFIER_THRESHOLDS = (0.3, 0.5, 0.7)
DEFAULT_THRESHOLD = 0.5  # the verifier's headline row in gate_sweep


def held_out(frames: Sequence[str], share: float = HELD_OUT_SHARE, seed: int = SEED) -> list[str]:
    """The evaluation frames whose crops score the verifier: ``share`` of them (at least one, and
    one fewer than all), ranked by a seeded hash of their names, so a frame's side does not depend
    on the order it was listed in."""
    frames = sorted(set(frames))
    if len(frames) < 2:
        return []
    count = min(max(round(share * len(frames)), 1), len(frames) - 1)
    return sorted(sorted(frames, key=lambda f: zlib.crc32(f"{seed}:{f}".encode()))[:count])


def context_box(box: Sequence[float], margin: float = CONTEXT_MARGIN) -> tuple[int, int, int]:
    """The square (x, y, side) around a box, ``margin`` of its longer side added on every side."""
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * (1 + 2 * margin)
    side = max(int(round(side)), 8)
    return int(round((x1 + x2 - side) / 2)), int(round((y1 + y2 - side) / 2)), side


def square_crop(image: np.ndarray, box: Sequence[float], margin: float = CONTEXT_MARGIN,
                size: int = CROP_SIZE) -> np.ndarray:
    """The context square around ``box``, edge pixels repeated where it leaves the frame, at ``size`` px."""
    height, width = image.shape[:2]
    x, y, side = context_box(box, margin)
    left, top, right, bottom = max(x, 0), max(y, 0), min(x + side, width), min(y + side, height)
    if right <= left or bottom <= top:
        return np.zeros((size, size, 3), np.uint8)
    crop = cv2.copyMakeBorder(image[top:bottom, left:right], top - y, y + side - bottom, left - x, x + side - right,
                              cv2.BORDER_REPLICATE)
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise EvaluationError(f"{path}: cannot decode the frame to cut verifier crops from")
    return image


def false_positives(detections: pd.DataFrame, truth: pd.DataFrame, conf: float = FP_CONF,
                    iou: float = FP_IOU) -> pd.DataFrame:
    """Merged detections at ``conf`` or more overlapping no labelled person (any class) at ``iou``."""
    merged = postprocess_frames(at_conf(detections, conf), TEAM_POSTPROCESS).reset_index(drop=True)
    keep = np.ones(len(merged), bool)
    box = ["x1", "y1", "x2", "y2"]
    for image, rows in merged.groupby("image").groups.items():
        people = truth.loc[truth["image"] == image, box].to_numpy(np.float64)
        if len(people):
            keep[np.asarray(rows)] = box_iou(merged.loc[rows, box].to_numpy(np.float64), people).max(axis=1) < iou
    return merged[keep].reset_index(drop=True)


def _empty_patches(truth: pd.DataFrame, width: int, height: int, sizes: np.ndarray, count: int,
                   rng: np.random.Generator) -> list[tuple[float, float, float, float]]:
    """Up to ``count`` boxes of people's sizes in a frame, each overlapping no person's context square."""
    people = truth[["x1", "y1", "x2", "y2"]].to_numpy(np.float64)
    found = []
    for _ in range(count * 10):
        if len(found) == count or not len(sizes):
            break
        w, h = sizes[rng.integers(len(sizes))]
        if w >= width or h >= height:
            continue
        x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
        grown = np.array([[x - w, y - h, x + 2 * w, y + 2 * h]])  # clear of people with its context
        if not len(people) or box_iou(grown, people).max() == 0:
            found.append((x, y, x + w, y + h))
    return found


@dataclass(frozen=True)
class VerifierCropSettings:
    margin: float = CONTEXT_MARGIN
    size: int = CROP_SIZE
    fp_conf: float = FP_CONF
    fp_iou: float = FP_IOU
    background_per_frame: int = BACKGROUND_PER_FRAME
    held_out_share: float = HELD_OUT_SHARE
    seed: int = SEED

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def build_verifier_crops(dataset: Path, evaluation, out_dir: Path,
                         settings: VerifierCropSettings = VerifierCropSettings()) -> BuildReport:
    """The verifier's crops under ``out_dir/<train|val>/<class>/``, ``crops.parquet`` and the
    record of which evaluation frames are held out. ``dataset``: go2k_split (its train split's
    people train the verifier); ``evaluation``: a ``builds.Evaluation`` of the detector's cache
    on the dataset's val frames."""
    out_dir = Path(out_dir)
    classes = list(evaluation.classes)
    names = [*classes, BACKGROUND]
    if BACKGROUND in classes:
        raise EvaluationError(f"the detector has a class named {BACKGROUND!r}; the verifier needs that name for "
                              "'not a person'")
    scored = held_out(evaluation.frames, settings.held_out_share, settings.seed)
    if not scored:
        raise EvaluationError(f"{len(evaluation.frames)} evaluation frame(s) cannot be split into fit and held-out "
                              "frames: the verifier needs at least two (one to learn from, one to be scored on)")
    held = set(scored)
    rng = np.random.default_rng(settings.seed)
    train = evaluation_set(dataset, TRAIN)
    train_truth = train.truth
    sizes = np.column_stack([(train_truth["x2"] - train_truth["x1"]).to_numpy(),
                             (train_truth["y2"] - train_truth["y1"]).to_numpy()])
    fps = false_positives(evaluation.predictions.sliced, evaluation.truth, settings.fp_conf, settings.fp_iou)
    paths = evaluation.paths
    frames = []  # (image name, path, split, truth boxes, false positives, empty patches?)
    for image, path in train.images:
        frames.append((image, Path(path), FIT, train_truth[train_truth["image"] == image], fps.iloc[0:0], True))
    for image in evaluation.frames:
        split = HELD_OUT if image in held else FIT
        frames.append((image, paths[image], split, evaluation.truth[evaluation.truth["image"] == image],
                       fps[fps["image"] == image], False))
    rows = []
    for image, path, split, truth, negatives, patches in frames:
        picture = _read(path)
        boxes = [(row, classes[int(row.cls)], "labelled person") for row in truth.itertuples()]
        boxes += [(row, BACKGROUND, "detector false positive") for row in negatives.itertuples()]
        if patches:
            height, width = picture.shape[:2]
            for x1, y1, x2, y2 in _empty_patches(truth, width, height, sizes, settings.background_per_frame, rng):
                boxes.append((pd.Series({"x1": x1, "y1": y1, "x2": x2, "y2": y2}), BACKGROUND, "empty patch"))
        for row, label, origin in boxes:
            box = (float(row.x1), float(row.y1), float(row.x2), float(row.y2))
            relative = f"{split}/{label}/{len(rows):06d}_{Path(image).stem}.jpg"  # frames of two folders may share a stem
            target = out_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(target), square_crop(picture, box, settings.margin, settings.size),
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
            rows.append({"image": image, "split": split, "label": label, "origin": origin, "x1": box[0], "y1": box[1],
                         "x2": box[2], "y2": box[3], "path": relative})
    table = pd.DataFrame(rows, columns=["image", "split", "label", "origin", "x1", "y1", "x2", "y2", "path"])
    if not (table["label"] == BACKGROUND).any() or not (table["split"] == FIT).any():
        raise EvaluationError(f"{dataset}: no background or no training crops ({len(table)} crops in all): "
                              "the verifier cannot be trained")
    table.to_parquet(out_dir / CROPS_TABLE, index=False)
    (out_dir / RECORD_FILE).write_text(json.dumps({
        "classes": names, "held_out_frames": scored, "settings": settings.as_dict(),
        "fit_frames": sorted(set(evaluation.frames) - held)}, indent=2))
    counts = table.groupby(["split", "label"]).size()
    origins = table.groupby(["split", "origin"]).size()
    report = BuildReport(
        counts={"crops": len(table), "held_out_frames": len(scored), "fit_frames": len(evaluation.frames) - len(scored),
                **{f"{split}_{label}": int(n) for (split, label), n in counts.items()}},
        details={
            "crops per split and class": Table([{"split": s, "class": c, "crops": int(n)} for (s, c), n in counts.items()],
                                               ["split", "class", "crops"]),
            "crops per origin": Table([{"split": s, "origin": o, "crops": int(n)} for (s, o), n in origins.items()],
                                      ["split", "origin", "crops"]),
            "context_margin": settings.margin, "crop_px": settings.size, "false_positive_conf": settings.fp_conf,
            "held_out": f"{len(scored)} of {len(evaluation.frames)} evaluation frames score the verifier and its gate",
        },
    )
    for label in names:
        shown = table[(table["label"] == label) & (table["split"] == FIT)]
        if len(shown):
            sheet = contact_sheet([out_dir / p for p in shown["path"]], out_dir / f"contact_{label}.jpg",
                                  captions=shown["origin"].str.split().str[-1].tolist())
            report.details[f"contact sheet {label}"] = Picture(sheet.name, f"{label} training crops")
    return report


def read_verifier_record(crops_version: Path) -> dict:
    return json.loads((Path(crops_version) / RECORD_FILE).read_text())


def verifier_probabilities(classifier: Classifier, detections: pd.DataFrame, paths: dict[str, Path],
                           margin: float = CONTEXT_MARGIN, size: int = CROP_SIZE) -> tuple[np.ndarray, float]:
    """The verifier's probability of each detection's own class, and the seconds spent cropping and
    classifying (frames are decoded before the clock starts: a deployment has them decoded already)."""
    if not len(detections):
        return np.zeros(0), 0.0
    pictures = {image: _read(paths[image]) for image in detections["image"].unique()}
    started = time.perf_counter()
    crops = [square_crop(pictures[row.image], (row.x1, row.y1, row.x2, row.y2), margin, size)
             for row in detections.itertuples()]
    probabilities = classify_crops(classifier, crops)
    seconds = time.perf_counter() - started
    return probabilities, seconds


def own_class_probability(probabilities: np.ndarray, cls: np.ndarray, detector_classes: Sequence[str],
                          classifier: Classifier) -> np.ndarray:
    """Per detection, the verifier's probability of the detection's class (by name)."""
    missing = [name for name in detector_classes if name not in classifier.classes]
    if missing:
        raise EvaluationError(f"the verifier knows {classifier.classes}, not the detector's class(es) {missing}: "
                              "train crop_verifier on the detector's classes")
    column = np.array([classifier.classes.index(name) for name in detector_classes])
    return probabilities[np.arange(len(cls)), column[np.asarray(cls, int)]] if len(cls) else np.zeros(0)


@dataclass(frozen=True)
class VerifierGate:
    """What gate_sweep needs to add the verifier's rows: the classifier, the frames it was held
    out from, the thresholds to sweep and the one its headline figures are read at."""

    classifier: Classifier
    frames: list[str]
    thresholds: tuple[float, ...] = VERIFIER_THRESHOLDS
    threshold: float = DEFAULT_THRESHOLD

    def __post_init__(self) -> None:
        bad = [value for value in (*self.thresholds, self.threshold) if not 0 < value < 1]
        if bad:
            raise ValueError(f"verifier thresholds must lie in (0, 1), got {bad}")


@dataclass
class VerifierSweep:
    rows: pd.DataFrame  # gate, verifier_threshold, precision, recall, f1, tp, fp, fn, added_ms_per_frame
    sizes: pd.DataFrame  # gate, bucket, truth, matched, recall
    frames: list[str]


def verifier_sweep(evaluation, base: Setting, classifier: Classifier, frames: Sequence[str],
                   gate: Gate = TEAM_GATE, thresholds: Sequence[float] = VERIFIER_THRESHOLDS,
                   margin: float = CONTEXT_MARGIN, size: int = CROP_SIZE) -> VerifierSweep:
    """On ``frames`` (the verifier's held-out evaluation frames): no gate, the full-image ``gate``,
    the verifier at each threshold, and the gate and the verifier together, all at ``base``'s
    confidence and merge, with recall by size and the milliseconds each adds to a frame."""
    frames = sorted(set(frames) & set(evaluation.frames))
    if not frames:
        raise EvaluationError("none of the verifier's held-out frames is among this evaluation's frames: "
                              "rematerialize verifier_crops on the current go2k_split")
    predictions = evaluation.predictions.on(frames)
    truth = evaluation.truth[evaluation.truth["image"].isin(frames)].reset_index(drop=True)
    merged = postprocess_frames(at_conf(predictions.sliced, base.conf), base.postprocess).reset_index(drop=True)
    probabilities, seconds = verifier_probabilities(classifier, merged, evaluation.paths, margin, size)
    own = own_class_probability(probabilities, merged["cls"].to_numpy(), evaluation.classes, classifier)
    by_gate = gate_mask(merged, predictions.full, gate)
    speed = predictions.record.get("speed") or {}
    gate_ms = 1000 * speed["full_seconds"] / speed["frames"] if speed.get("frames") else float("nan")
    verifier_ms = 1000 * seconds / len(frames)
    settings = [("no gate", None, np.ones(len(merged), bool), 0.0), (f"gate {gate.name}", None, by_gate, gate_ms)]
    for threshold in sorted(set(thresholds)):
        verified = own >= threshold
        settings.append((f"verifier >= {threshold:g}", threshold, verified, verifier_ms))
        settings.append((f"gate {gate.name} + verifier >= {threshold:g}", threshold, by_gate & verified,
                         gate_ms + verifier_ms))
    rows, sizes = [], []
    for (name, threshold, _, added), scores in zip(settings, score_subsets(merged, truth, frames,
                                                                           [keep for _, _, keep, _ in settings])):
        rows.append({"gate": name, "verifier_threshold": threshold, "precision": scores.precision,
                     "recall": scores.recall, "f1": scores.f1, "tp": scores.tp, "fp": scores.fp, "fn": scores.fn,
                     "added_ms_per_frame": round(added, 2)})
        sizes += [{"gate": name, **bucket} for bucket in scores.sizes]
    return VerifierSweep(pd.DataFrame(rows), pd.DataFrame(sizes), frames)
