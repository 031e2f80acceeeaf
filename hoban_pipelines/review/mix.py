"""The retraining mix after review rounds: go2k_v2's recipe plus every capture reviewed so far.

go2k_manual's split and the base subsample are chosen exactly as for go2k_v2 (the same
``MixParameters``), and the reviewed captures join the training side: their reviewed labels,
never the pseudo-labels, and only images a reviewer has seen. An image reviewed in two rounds
keeps its latest review. The validation side stays go2k's, so a retrained model is scored on the
same frames as every model before it; a reviewed capture taken within the split's burst window
of a validation image of its camera is left out (it would be that scene again, in training).
Captures are hard-linked into the version (``reviewed/
images``) beside their label files, because ultralytics finds a label by the image's path, and a
capture folder is never written to.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hoban_pipelines.core.lake import link_or_copy
from hoban_pipelines.core.report import BuildReport, Table
from hoban_pipelines.captures.ingest import Timestamping
from hoban_pipelines.core.yolo_format import (
    TRAIN, VAL, YoloFormatError, label_lines, list_yolo_dataset, write_label_file,
)
from hoban_pipelines.datasets.grouping import Grouping
from hoban_pipelines.datasets.mix import MixParameters, assemble_mix, write_mix
from hoban_pipelines.datasets.split import SPLIT_MANIFEST
from hoban_pipelines.review.changes import BOXES as REVIEWED_BOXES
from hoban_pipelines.review.changes import IMAGES as REVIEWED_IMAGES
from hoban_pipelines.review.packages import CAPTURES

REVIEWED = "reviewed"  # the mix's source name of reviewed captures


def reviewed_captures(reviews: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The captures of ``reviews`` (reviewed_labels versions, oldest first), each at its latest
    review: (images, boxes)."""
    images, boxes = [], []
    for order, folder in enumerate(reviews):
        images.append(pd.read_parquet(Path(folder) / REVIEWED_IMAGES).assign(review=order))
        boxes.append(pd.read_parquet(Path(folder) / REVIEWED_BOXES).assign(review=order))
    if not images:
        return pd.DataFrame(columns=["path", "camera", "width", "height", "review"]), pd.DataFrame()
    images = pd.concat(images, ignore_index=True)
    images = images[images["source"] == CAPTURES].drop_duplicates("path", keep="last")
    boxes = pd.concat(boxes, ignore_index=True).merge(images[["path", "review"]], on=["path", "review"])
    return images.reset_index(drop=True), boxes


def capture_times(paths: pd.Series, rule: Timestamping) -> pd.Series:
    """Each capture's local time from its file name (naive, as go2k's manifests keep them); NaT without one."""
    stamps = [rule.from_name(Path(path).name) for path in paths]
    return pd.to_datetime(pd.Series([s.replace(tzinfo=None) if s else None for s in stamps], index=paths.index,
                                    dtype=object))


def without_validation_bursts(images: pd.DataFrame, go2k: pd.DataFrame, burst_seconds: float) -> pd.DataFrame:
    """The reviewed captures not taken by a camera within ``burst_seconds`` of one of go2k's val
    images of that camera: those would join a validation scene's burst group, which the mix's
    leakage check refuses to see in two splits."""
    val = go2k[go2k["split"] == VAL]
    near = pd.Series(False, index=images.index)
    for camera, mine in images.groupby("camera"):
        anchors = pd.to_datetime(val.loc[val["camera"] == camera, "timestamp"]).dropna().to_numpy()
        if len(anchors):
            times = pd.to_datetime(mine["timestamp"]).to_numpy()
            gaps = np.abs(times[:, None] - anchors[None, :]).min(axis=1) / np.timedelta64(1, "s")
            near.loc[mine.index] = gaps <= burst_seconds
    return images[~near]


def build_reviewed_mix(base_root: Path, split_root: Path, reviews: list[Path], classes: list[str],
                       params: MixParameters, out_dir: Path, grouping: Grouping, reviewed_oversample: int = 1,
                       timestamping: Timestamping | None = None) -> BuildReport:
    """go2k_v2's mix of ``base_root`` and ``split_root`` with the reviewed captures of ``reviews``
    added to training, each listed ``reviewed_oversample`` times; captures in a burst of a go2k
    validation image (``grouping``: the split's own) are left out and counted."""
    if reviewed_oversample < 1:
        raise ValueError(f"reviewed_oversample must be at least 1, got {reviewed_oversample}")
    base = list_yolo_dataset(base_root)
    if base.classes != classes:
        raise YoloFormatError(f"{base.root / 'data.yaml'} names {base.classes} but the project's classes are {classes}")
    out_dir = Path(out_dir)
    go2k = pd.read_parquet(Path(split_root) / "manifests" / SPLIT_MANIFEST)
    images, boxes = reviewed_captures(reviews)
    images = images.assign(timestamp=capture_times(images["path"], timestamping or Timestamping()))
    reviewed = len(images)
    images = without_validation_bursts(images, go2k, grouping.burst_seconds)
    boxes = boxes[boxes["path"].isin(images["path"])] if len(boxes) else boxes
    by_path = dict(tuple(boxes.groupby("path", sort=False))) if len(boxes) else {}
    rows = []
    for image in images.itertuples():
        # relative to the version, as ultralytics reads a "./" entry of a list file: the version is renamed
        # into place after it is built
        name = Path(REVIEWED) / "images" / image.camera / Path(image.path).name
        label = Path(REVIEWED) / "labels" / image.camera / Path(image.path).with_suffix(".txt").name
        link_or_copy(Path(image.path), out_dir / name)
        mine = by_path.get(image.path)
        lines = label_lines(mine.assign(img_w=image.width, img_h=image.height)) if mine is not None else []
        write_label_file(out_dir / label, lines)
        rows.append({"path": f"./{name.as_posix()}", "label_path": label.as_posix(), "split": TRAIN,
                     "camera": image.camera, "timestamp": image.timestamp, "source": REVIEWED,
                     "copies": reviewed_oversample})
    domain = pd.concat([go2k, pd.DataFrame(rows, columns=list(rows[0]) if rows else None)], ignore_index=True)
    result = assemble_mix(base, domain, params)
    counts = write_mix(result, classes, out_dir)
    table = [{"split/source": key, **values} for key, values in counts["per_split_source"].items()]
    return BuildReport(
        counts={"train_entries": counts["train_entries"], "val_entries": counts["val_entries"],
                "reviewed_images": len(images), "reviewed_boxes": len(boxes),
                "reviewed_left_out_near_validation": reviewed - len(images)},
        details={
            "mix": Table(table, ["split/source", "entries", *[f"boxes_{c}" for c in classes]]),
            "domain_share_of_training": counts["domain_share_of_training"],
            "reviews": len(reviews),
        },
        warnings=result.warnings + ([] if len(images) else ["no reviewed capture yet: this is go2k_v2's mix"]),
    )
