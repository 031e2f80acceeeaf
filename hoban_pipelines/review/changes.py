"""What reviewers changed in a review round: the pseudo-labeller's real precision and recall, and the reviewed labels.

Every pre-annotation box (``before``) and every reviewed box (``after``) gets exactly one change, decided by the
evaluation stage's COCO matching (:func:`hoban_pipelines.evaluation.metrics.match`, the pre boxes as detections
in score order, the reviewed boxes as truth) and two claims after it:

- ``kept``: the matching pairs the pre box with a reviewed box of its class at IoU >= ``iou`` (kind ``tp``).
- ``relabelled``: a pre box of kind ``wrong_class`` (a reviewed box of another class overlaps it at IoU >= ``iou``)
  that claims one of the reviewed boxes the matching left over: a second COCO matching, class-agnostic at IoU >=
  ``iou``, of these pre boxes against the leftovers. Leftovers of its own class cannot reach ``iou`` (the first
  matching would have taken them), so a claimed box is always of another class.
- ``moved``: a pre box of kind ``localisation`` (a reviewed box of its class at LOCALISATION_IOU <= IoU < ``iou``)
  that claims, in a third COCO matching at IoU >= LOCALISATION_IOU, a leftover reviewed box of its class that no
  relabelled box claimed.
- ``deleted``: every other pre box: kinds ``background`` and ``duplicate``, and a ``wrong_class`` or
  ``localisation`` box whose reviewed box was already explained by another pre box (the reviewer removed it).
- ``added``: a reviewed box no pre box was kept, relabelled or moved onto: the reviewer drew it.

So before = kept + relabelled + moved + deleted and after = kept + relabelled + moved + added, overall and per
image. Precision = kept / before and recall = kept / after (the share of pre boxes the reviewer left as they were,
and the share of reviewed boxes the pre-annotations already had right); a zero denominator gives 0.0, as in the
evaluation stage. A person's box (go2k_manual, no score) ranks as CVAT scores it, at the score attribute's default.

Plain Python, no Dagster.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hoban_pipelines.core.report import BuildReport, Table
from hoban_pipelines.cvat.reader import CvatImage, read_export
from hoban_pipelines.evaluation.metrics import BOX, LOCALISATION_IOU, box_iou, match
from hoban_pipelines.review.packages import CAPTURES, MANIFEST, SCORE_ATTRIBUTE, PackageFiles, task_frames

CHANGES = ("kept", "relabelled", "moved", "deleted", "added")
KEPT, RELABELLED, MOVED, DELETED, ADDED = CHANGES
BEFORE_COLUMNS = ["image", "label", *BOX, "score"]
AFTER_COLUMNS = ["image", "label", *BOX]
IMAGE_COLUMNS = ["image", "camera", "source"]
CHANGE_COLUMNS = ["image", "camera", "source", "change", "label_before", "label_after", "score", "iou"]
COUNT_COLUMNS = ["boxes_before", "boxes_after", *CHANGES, "precision", "recall", "f1"]
CLASS_COLUMNS = ["class", "boxes_before", "boxes_after", KEPT, RELABELLED, "relabelled_to", MOVED, DELETED, ADDED,
                 "precision", "recall", "f1"]
BOXES = "boxes.parquet"  # the reviewed boxes: the labels the next model trains on
CHANGES_FILE = "changes.parquet"  # one row a box: ReviewChanges.boxes
IMAGES = "images.parquet"  # every reviewed image, with or without boxes: negatives train too
LABEL_COLUMNS = ["image", "path", "camera", "source", "cls", "label", *BOX]
REVIEWED_IMAGE_COLUMNS = ["image", "path", "camera", "source", "width", "height", "sha256", "task", "frame", "boxes"]
PERSON_SCORE = float(SCORE_ATTRIBUTE.default)
_CHANGE_OF_CLAIM = {"tp": KEPT, "wrong_class": RELABELLED, "localisation": MOVED}
_NAMES_SHOWN = 10


@dataclass(frozen=True)
class ReviewChanges:
    """``boxes``: one row per pre box (in input order) then per added box, CHANGE_COLUMNS; ``score`` is NaN for a
    person's box and an added one, ``iou`` that of the pre box with the reviewed box it became (NaN for deleted and
    added); a missing value (NA) is ``label_before`` of an added box, ``label_after`` of a deleted one and ``camera``
    of an image without one. ``overall``: images and COUNT_COLUMNS; ``per_class``: CLASS_COLUMNS,
    each change counted under the pre box's label (added under the reviewed label; ``relabelled_to`` counts the
    relabelled boxes that got this label); ``per_camera`` and ``per_source``: images and COUNT_COLUMNS per value
    (camera None for images without one)."""

    boxes: pd.DataFrame
    overall: dict
    per_class: list[dict]
    per_camera: list[dict]
    per_source: list[dict]


def compare_review(before: pd.DataFrame, after: pd.DataFrame, images: pd.DataFrame, classes: list[str],
                   iou: float = 0.5) -> ReviewChanges:
    """The change of every box between the pre-annotations ``before`` (BEFORE_COLUMNS, pixels; score NaN for a
    person's box) and the reviewed boxes ``after`` (AFTER_COLUMNS) over ``images`` (IMAGE_COLUMNS, every reviewed
    image once), and the counts and rates they give (see the module docstring).

    Raises ValueError for a missing column, an image named twice, a label not in ``classes`` and a box on an
    image outside ``images``."""
    for frame, columns, name in ((before, BEFORE_COLUMNS, "before"), (after, AFTER_COLUMNS, "after"),
                                 (images, IMAGE_COLUMNS, "images")):
        missing = [column for column in columns if column not in frame.columns]
        if missing:
            raise ValueError(f"{name} lacks columns {missing}")
    repeated = images["image"][images["image"].duplicated()].unique().tolist()
    if repeated:
        raise ValueError(f"images lists {repeated[:_NAMES_SHOWN]} more than once; give each reviewed image once")
    before, after = before.reset_index(drop=True), after.reset_index(drop=True)
    scores = before["score"].astype(float).fillna(PERSON_SCORE)
    detections = _with_classes(before, classes, "before").assign(score=scores)
    truth = _with_classes(after, classes, "after")
    change, partner, added = _pair(detections, truth, iou, images["image"])
    table = _change_table(before, after, images, change, partner, added)
    has_before, has_after = table["label_before"].notna(), table["label_after"].notna()
    return ReviewChanges(
        boxes=table,
        overall={"images": len(images), **_counts(table, has_before, has_after)},
        per_class=[_class_row(table, label) for label in classes],
        per_camera=_rows_by(table, images, "camera", has_before, has_after),
        per_source=_rows_by(table, images, "source", has_before, has_after),
    )


def _with_classes(boxes: pd.DataFrame, classes: Sequence[str], name: str) -> pd.DataFrame:
    """The boxes with ``cls``, the position of their label in ``classes``."""
    unknown = _unknown_labels(boxes["label"], classes)
    if unknown:
        raise ValueError(f"{name} has labels {unknown} that are not in classes ({', '.join(classes)})")
    return boxes.assign(cls=pd.Categorical(boxes["label"], categories=list(classes)).codes.astype(np.int64))


def _unknown_labels(labels: pd.Series, classes: Sequence[str]) -> list[str]:
    return sorted(set(labels) - set(classes))


def _pair(detections: pd.DataFrame, truth: pd.DataFrame, iou: float,
          images: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pre box its change and the position of the reviewed box it became (-1 for none); and the mask of the
    reviewed boxes no pre box became (added). Both frames have a RangeIndex, so index labels are positions."""
    matching = match(detections, truth, iou, images=images)
    kind = matching.detections["kind"].to_numpy()
    partner = matching.detections["truth_index"].to_numpy(np.int64).copy()
    unclaimed = ~matching.truth["matched"].to_numpy(bool)
    for claim_kind, threshold, any_class in (("wrong_class", iou, True), ("localisation", LOCALISATION_IOU, False)):
        claimants = np.flatnonzero(kind == claim_kind)
        claimed = _claim(detections.iloc[claimants], truth[unclaimed], threshold, any_class)
        partner[claimants] = claimed
        unclaimed[claimed[claimed >= 0]] = False
    change = np.array([_CHANGE_OF_CLAIM[k] if p >= 0 else DELETED for k, p in zip(kind, partner, strict=True)],
                      dtype=object)
    return change, partner, unclaimed


def _claim(detections: pd.DataFrame, truth: pd.DataFrame, threshold: float, any_class: bool) -> np.ndarray:
    """The reviewed box (index label, -1 for none) each pre box takes in a COCO matching at ``threshold``."""
    if any_class:
        detections, truth = detections.assign(cls=0), truth.assign(cls=0)
    return match(detections, truth, threshold).detections["truth_index"].to_numpy(np.int64)


def _change_table(before: pd.DataFrame, after: pd.DataFrame, images: pd.DataFrame, change: np.ndarray,
                  partner: np.ndarray, added: np.ndarray) -> pd.DataFrame:
    paired = partner >= 0
    pair_iou = np.full(len(before), np.nan)
    pair_iou[paired] = [box_iou(a, b)[0, 0] for a, b in zip(before.loc[paired, BOX].to_numpy(np.float64),
                                                            after.loc[partner[paired], BOX].to_numpy(np.float64),
                                                            strict=True)]
    label_after = np.full(len(before), None, dtype=object)
    label_after[paired] = after["label"].to_numpy(object)[partner[paired]]
    n_added = int(added.sum())
    table = pd.DataFrame({
        "image": np.concatenate([before["image"].to_numpy(object), after["image"].to_numpy(object)[added]]),
        "change": np.concatenate([change, np.full(n_added, ADDED, dtype=object)]),
        "label_before": np.concatenate([before["label"].to_numpy(object), np.full(n_added, None, dtype=object)]),
        "label_after": np.concatenate([label_after, after["label"].to_numpy(object)[added]]),
        "score": np.concatenate([before["score"].to_numpy(np.float64), np.full(n_added, np.nan)]),
        "iou": np.concatenate([pair_iou, np.full(n_added, np.nan)]),
    })
    where = images.set_index("image")
    for column in ("camera", "source"):
        table[column] = table["image"].map(where[column])
    return table[CHANGE_COLUMNS]


def _counts(table: pd.DataFrame, before: pd.Series, after: pd.Series) -> dict:
    """COUNT_COLUMNS of the pre boxes ``before`` selects and the reviewed boxes ``after`` selects."""
    change = table["change"]
    counts = {"boxes_before": int(before.sum()), "boxes_after": int(after.sum())}
    counts.update({name: int(((after if name == ADDED else before) & (change == name)).sum()) for name in CHANGES})
    kept, n_before, n_after = counts[KEPT], counts["boxes_before"], counts["boxes_after"]
    precision = kept / n_before if n_before else 0.0
    recall = kept / n_after if n_after else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {**counts, "precision": precision, "recall": recall, "f1": f1}


def _class_row(table: pd.DataFrame, label: str) -> dict:
    after = table["label_after"] == label
    return {"class": label, **_counts(table, table["label_before"] == label, after),
            "relabelled_to": int((after & (table["change"] == RELABELLED)).sum())}


def _rows_by(table: pd.DataFrame, images: pd.DataFrame, column: str, has_before: pd.Series,
             has_after: pd.Series) -> list[dict]:
    """One row per value of ``column`` (None for a missing one, last): its images, even those without boxes."""
    rows = []
    for value, members in images.groupby(column, dropna=False, sort=True):
        inside = table["image"].isin(members["image"])
        rows.append({column: None if pd.isna(value) else value, "images": len(members),
                     **_counts(table, inside & has_before, inside & has_after)})
    return rows


def build_reviewed_labels(export_path: Path, package_dir: Path, out_dir: Path, classes: list[str]) -> BuildReport:
    """Read one reviewed CVAT export ("CVAT for images 1.1", XML or zip) of tasks created from the review packages
    in ``package_dir``, compare it with their pre-annotations, and write into ``out_dir`` the reviewed labels
    (BOXES, IMAGES) and every box's change (CHANGES_FILE).

    Only the export's images are compared: a task image missing from it (old CVAT leaves out images without
    boxes, a job export holds its own frames) is named in a warning, not taken for an image emptied by review.
    Raises CvatFormatError (from the reader) for an export that cannot be read, ValueError for an export image
    in no task of the packages, an image named twice, a size that is not the packaged one, or a label not in
    ``classes``; FileNotFoundError when ``package_dir`` is not a package folder."""
    package_dir = Path(package_dir)
    manifest = _manifest(package_dir)
    export = read_export(export_path, frame_names=lambda task: task_frames(package_dir, task))
    reviewed = _reviewed_images(export.file, export.images, manifest, package_dir)
    after = _boxes(export.images)
    _refuse_unknown_labels(after, classes, export.file,
                           "relabel those boxes in CVAT and export again, or add the label to the classes")
    before = _pre_annotations(package_dir, reviewed, classes)
    changes = compare_review(before, after, reviewed[IMAGE_COLUMNS], classes)
    _write_labels(Path(out_dir), reviewed, after, classes)
    changes.boxes.to_parquet(Path(out_dir) / CHANGES_FILE, index=False)
    overall = changes.overall
    # the headline rates are the pseudo-labeller's: go2k_manual's hand labels, mostly kept, would flatter it
    labeller = next((row for row in changes.per_source if row["source"] == CAPTURES), overall)
    return BuildReport(
        counts={"images": overall["images"], "boxes_before": overall["boxes_before"],
                "boxes_after": overall["boxes_after"], **{name: overall[name] for name in CHANGES}},
        details={"precision": labeller["precision"], "recall": labeller["recall"], "f1": labeller["f1"],
                 "classes": Table(changes.per_class, CLASS_COLUMNS),
                 "cameras": Table(changes.per_camera, ["camera", "images", *COUNT_COLUMNS]),
                 "sources": Table(changes.per_source, ["source", "images", *COUNT_COLUMNS])},
        warnings=_missing_from_export(reviewed, manifest),
    )


def _manifest(package_dir: Path) -> pd.DataFrame:
    path = package_dir / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {package_dir} is not a folder build_review_packages wrote; "
                                "pass the review package version the CVAT tasks were created from")
    return pd.read_parquet(path).rename(columns={"name": "image"})


def _reviewed_images(export_file: Path, images: list[CvatImage], manifest: pd.DataFrame,
                     package_dir: Path) -> pd.DataFrame:
    """The manifest rows of the export's images, in the export's order."""
    names = pd.Series([image.name for image in images], dtype=object)
    repeated = names[names.duplicated()].unique().tolist()
    if repeated:
        raise ValueError(f"{export_file}: images {repeated[:_NAMES_SHOWN]} appear more than once (one package "
                         "in two tasks of a project?); export each task on its own")
    unknown = names[~names.isin(manifest["image"])].tolist()
    if unknown:
        more = f" and {len(unknown) - _NAMES_SHOWN} more" if len(unknown) > _NAMES_SHOWN else ""
        raise ValueError(f"{export_file}: {len(unknown)} images are in no task of the review packages in "
                         f"{package_dir}: {unknown[:_NAMES_SHOWN]}{more}. Export a CVAT task created from these "
                         "packages, or pass the package folder its task was created from")
    reviewed = manifest.set_index("image").loc[names].reset_index()
    for image, row in zip(images, reviewed.itertuples(), strict=True):
        if (image.width, image.height) != (row.width, row.height):
            raise ValueError(f"{export_file}: image {image.name!r} is {image.width}x{image.height} in the export but "
                             f"{row.width}x{row.height} in the package, so its boxes would land in the wrong place. "
                             "Export the task that was created from this package")
    return reviewed


def _boxes(images: Sequence[CvatImage], scored: bool = False) -> pd.DataFrame:
    """AFTER_COLUMNS of every box, and with ``scored`` the score attribute (NaN on a box without one)."""
    rows = [(image.name, box.label, *box.xyxy) for image in images for box in image.boxes]
    boxes = pd.DataFrame(rows, columns=AFTER_COLUMNS).astype({column: np.float64 for column in BOX})
    if scored:
        boxes["score"] = [float(box.attributes.get(SCORE_ATTRIBUTE.name, np.nan))
                          for image in images for box in image.boxes]
    return boxes


def _pre_annotations(package_dir: Path, reviewed: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """The pre-annotation boxes of the reviewed images, read from their tasks' XML files."""
    names = set(reviewed["image"])
    parts = []
    for task in reviewed["task"].unique():
        xml = PackageFiles.of(package_dir, task).annotations
        if not xml.is_file():
            raise FileNotFoundError(f"{xml} (the pre-annotations of task {task}) is missing; build the packages again")
        boxes = _boxes([image for image in read_export(xml).images if image.name in names], scored=True)
        _refuse_unknown_labels(boxes, classes, xml, "the packages were built with other classes: compare with those")
        parts.append(boxes)
    return pd.concat(parts, ignore_index=True) if parts else _boxes([], scored=True)


def _refuse_unknown_labels(boxes: pd.DataFrame, classes: Sequence[str], file: Path, fix: str) -> None:
    unknown = _unknown_labels(boxes["label"], classes)
    if unknown:
        first = boxes.loc[boxes["label"] == unknown[0], "image"].iloc[0]
        raise ValueError(f"{file}: label {unknown[0]!r} (on image {first!r}) is not one of the classes "
                         f"({', '.join(classes)}); {fix}")


def _write_labels(out_dir: Path, reviewed: pd.DataFrame, after: pd.DataFrame, classes: list[str]) -> None:
    """BOXES and IMAGES: the reviewed boxes with their files, and every reviewed image with its box count."""
    where = reviewed.set_index("image")[["path", "camera", "source"]]
    labels = after.join(where, on="image").assign(cls=[classes.index(label) for label in after["label"]])
    labels[LABEL_COLUMNS].to_parquet(out_dir / BOXES, index=False)
    boxes = reviewed["image"].map(after["image"].value_counts()).fillna(0).astype(int)
    reviewed.assign(boxes=boxes)[REVIEWED_IMAGE_COLUMNS].to_parquet(out_dir / IMAGES, index=False)


def _missing_from_export(reviewed: pd.DataFrame, manifest: pd.DataFrame) -> list[str]:
    warnings = []
    for task in reviewed["task"].unique():
        missing = manifest.loc[(manifest["task"] == task) & ~manifest["image"].isin(reviewed["image"]), "image"]
        if len(missing):
            warnings.append(f"{len(missing)} images of task {task} are not in the export (e.g. {missing.iloc[0]!r}) "
                            "and were not compared: old CVAT leaves out images without boxes, and a job export "
                            "holds only its job's frames")
    return warnings
