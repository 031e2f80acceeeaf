"""The general dataset builder: a recipe turns labelled sources into one YOLO training set.

This is the team's way of building training sets (seeds README, "dataset_building_timeline"):

1. remap every source's classes onto the recipe's classes (drop the rest, counted);
2. remove boxes below a per-class share of the image area; an image that loses all its boxes
   this way still shows people, so it is dropped, never used as a background;
3. pool the images with boxes and the true backgrounds (images without any box in their source);
4. remove exact copies (sha256) and near-duplicates (thumbnail cosine), keeping the copy
   with most boxes;
5. balance by BOX count per class, not image count: images are visited in a seeded order and
   taken while they add to a class that is still under its quota;
6. add empty backgrounds as negatives up to a share of the final images;
7. cap to a quick-experiment size, keeping the class proportions;
8. flag the largest boxes for review (kept: a person close to the camera is not an error);
9. split by groups (near-duplicates, frames of one camera seconds apart) so nothing similar
   straddles two splits;
10. write hard-linked images, new label files, ``./``-relative list files and manifests.

A source may be labelled ``hybrid`` (the team's vehicle-damage workflow): a model labels its
images first, and the source's own boxes fill in where the model found nothing (no model box
overlaps them). Every box records its ``origin``, ``model`` or ``source``. The caller runs the
model (the evaluation engine is a later stage) and hands its boxes in as ``ModelLabels``.

Every step is counted in the report; shortfalls are returned as warnings for the caller to log.
The source datasets' own train/val assignment is ignored: the recipe splits anew.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
import yaml

from hoban_pipelines.datasets import near_duplicates as dedup
from hoban_pipelines.core import pictures as reports
from hoban_pipelines.core.lake import link_or_copy
from hoban_pipelines.core.report import BuildReport, Picture, Table
from hoban_pipelines.core.yolo_format import (
    SPLIT_KEYS, label_path, list_yolo_dataset, with_normalised, write_data_yaml, write_label_files, write_list_files,
)
from hoban_pipelines.datasets.grouping import Grouping, leakage_links
from hoban_pipelines.datasets.split import grouped_stratified_split
from hoban_pipelines.labels.cleaning import pairwise_iou

SAMPLES_PER_CLASS = 3  # plus as many backgrounds
SAMPLE_TILE_WIDTH = 480  # px: keeps the PNG small enough to embed in Dagster metadata
OUTLIER_PICTURES = 9
AREA_FILTER_WARN_SHARE = 0.5  # warn when the area filter removes more than this share of a source's class
MAX_NAMED = 5  # names quoted in one message
SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# ultralytics finds a label by replacing the LAST "images" folder of the image path with "labels"
RESERVED_FOLDER = "images"


RECIPE_MANIFEST = "images.parquet"  # under manifests/, beside boxes.parquet
SOURCE_LABELS, HYBRID_LABELS = "source", "hybrid"  # a source's labels: its own, or the model's first
ORIGIN_MODEL, ORIGIN_SOURCE = "model", "source"  # where a box of a build came from


class RecipeError(ValueError):
    """A recipe or source data that cannot be built; the message names the field, file or source."""


@dataclass(frozen=True)
class SourceSpec:
    """One source a recipe draws on and how its class names map onto the recipe's classes.

    ``remap``: source class name -> target class name, or None to drop it. Classes not in
    ``remap`` keep their name when it is a target class and are dropped (and counted) otherwise.
    ``labels: hybrid``: the ``model`` asset's boxes scoring ``conf`` or more, and the source's
    boxes that no model box overlaps at IoU ``match_iou`` or more (whatever the classes).
    """

    name: str
    remap: dict[str, str | None] = field(default_factory=dict)
    labels: str = SOURCE_LABELS
    model: str | None = None
    conf: float = 0.5
    match_iou: float = 0.5

    @property
    def hybrid(self) -> bool:
        return self.labels == HYBRID_LABELS


@dataclass(frozen=True)
class SourceData:
    """One input dataset, already read into manifests (the columns ``core.yolo_format`` produces).

    ``images``: image (unique name, relative path inside the source), path (the file), width,
    height, sha256, optionally camera and timestamp. ``boxes``: image, cls (index into
    ``classes``), x1 y1 x2 y2 in pixels, img_w, img_h.
    """

    name: str
    classes: list[str]
    images: pd.DataFrame
    boxes: pd.DataFrame

    @classmethod
    def from_published(cls, name: str, root: Path) -> SourceData:
        """A dataset folder this project wrote (go2k_manual, a recipe build): the class names of
        its data.yaml and its ``manifests/*.parquet``, with image paths made absolute."""
        root = Path(root).resolve()
        classes = list_yolo_dataset(root).classes
        manifests = root / "manifests"
        try:
            images = pd.read_parquet(manifests / "images.parquet")
            boxes = pd.read_parquet(manifests / "boxes.parquet")
        except FileNotFoundError as exc:
            raise RecipeError(f"source {name!r}: {root} has no {Path(exc.filename).name} under manifests/") from None
        return cls(name, classes, images.assign(path=[str(root / p) for p in images["path"]]), boxes)


@dataclass(frozen=True)
class ModelLabels:
    """A model's boxes on a hybrid source's images: ``boxes`` has image (the source's image name),
    cls (index into ``classes``, the model's class names), score, x1 y1 x2 y2 in pixels;
    ``about`` says which model version made them, recorded in the build's report."""

    classes: list[str]
    boxes: pd.DataFrame
    about: dict[str, Any] = field(default_factory=dict)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class DatasetRecipe:
    """A ``recipes/*.yaml`` file: how to build one training dataset from labelled sources."""

    name: str
    classes: list[str]  # target classes, in YOLO index order
    sources: list[SourceSpec]
    box_quota: dict[str, int] | None = None  # per target class, counted in BOXES; None = take all
    min_area_pct: dict[str, float] = field(default_factory=dict)  # boxes below this % of the image are removed
    background_share: float = 0.0  # share of the final images that are empty backgrounds
    dedup_threshold: float | None = 0.994  # thumbnail cosine for keep-one dedup; None = off
    max_images: int | None = None  # quick-experiment size, class proportions kept
    splits: dict[str, float] = field(default_factory=lambda: {"train": 0.7, "val": 0.2, "test": 0.1})
    outlier_fraction: float = 0.001  # largest boxes flagged for review, not removed
    seed: int = 0
    # the split's leakage grouping is looser than keep-one dedup: a scene with one worker moved
    # must stay on one side of the split even though it is worth keeping (near_duplicates' notes)
    burst_seconds: float = Grouping.burst_seconds
    group_similarity: float = Grouping.similarity

    @property
    def grouping(self) -> Grouping:
        return Grouping(self.burst_seconds, self.group_similarity)

    @property
    def hybrid_sources(self) -> list[SourceSpec]:
        return [spec for spec in self.sources if spec.hybrid]

    def __post_init__(self) -> None:
        for field_name, problem in self._problems():
            raise RecipeError(f"recipe {self.name!r}: {field_name}: {problem}")

    def _problems(self) -> Iterator[tuple[str, str]]:
        """(field, problem) pairs; the first one is raised, so later checks may trust earlier types."""
        if not isinstance(self.name, str) or not self.name.strip():
            yield "name", "must be a non-empty string"
        classes = self.classes
        if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
            yield "classes", f"must be a non-empty list of class names, got {classes!r}"
        if len(set(classes)) != len(classes):
            yield "classes", f"names must be unique, got {classes}"
        yield from self._source_problems()
        if self.box_quota is not None:
            if not isinstance(self.box_quota, dict):
                yield "box_quota", f"must map each class to a number of boxes, got {self.box_quota!r}"
            missing = [c for c in classes if c not in self.box_quota]
            unknown = [c for c in self.box_quota if c not in classes]
            if missing or unknown:
                yield "box_quota", (f"must give a number for every class {classes} and no other "
                                    f"(missing {missing}, unknown {unknown})")
            bad = {c: n for c, n in self.box_quota.items() if not _is_int(n) or n < 1}
            if bad:
                yield "box_quota", f"quotas must be positive whole numbers of boxes, got {bad}"
        if not isinstance(self.min_area_pct, dict):
            yield "min_area_pct", f"must map classes to a percentage of the image area, got {self.min_area_pct!r}"
        unknown = [c for c in self.min_area_pct if c not in classes]
        if unknown:
            yield "min_area_pct", f"classes {unknown} are not among the recipe's classes {classes}"
        bad = {c: v for c, v in self.min_area_pct.items() if not _is_number(v) or not 0 <= v < 100}
        if bad:
            yield "min_area_pct", f"values are percentages of the image area in [0, 100), got {bad}"
        if not _is_number(self.background_share) or not 0 <= self.background_share < 1:
            yield "background_share", f"must be a share in [0, 1), got {self.background_share!r}"
        threshold = self.dedup_threshold
        if threshold is not None and (not _is_number(threshold) or not 0 < threshold <= 1):
            yield "dedup_threshold", f"must be a cosine similarity in (0, 1] or null for no dedup, got {threshold!r}"
        if self.max_images is not None and (not _is_int(self.max_images) or self.max_images < 1):
            yield "max_images", f"must be a positive whole number or null, got {self.max_images!r}"
        yield from self._split_problems()
        if not _is_number(self.outlier_fraction) or not 0 < self.outlier_fraction <= 1:
            yield "outlier_fraction", f"must be a share in (0, 1], got {self.outlier_fraction!r}"
        if not _is_int(self.seed):
            yield "seed", f"must be a whole number, got {self.seed!r}"
        if not _is_number(self.burst_seconds) or self.burst_seconds < 0:
            yield "burst_seconds", f"must be 0 or more seconds, got {self.burst_seconds!r}"
        if not _is_number(self.group_similarity) or not 0 < self.group_similarity <= 1:
            yield "group_similarity", f"must be a cosine similarity in (0, 1], got {self.group_similarity!r}"

    def _source_problems(self) -> Iterator[tuple[str, str]]:
        if not isinstance(self.sources, list) or not self.sources:
            yield "sources", "must list at least one source"
        if not all(isinstance(spec, SourceSpec) for spec in self.sources):
            yield "sources", "entries must be SourceSpec (DatasetRecipe.from_dict reads plain mappings)"
        names = [spec.name for spec in self.sources]
        if len(set(names)) != len(names):
            yield "sources", f"source names must be unique, got {names}"
        for spec in self.sources:
            if not isinstance(spec.name, str) or not SOURCE_NAME.fullmatch(spec.name) or spec.name == RESERVED_FOLDER:
                yield "sources", (f"source name {spec.name!r} must be letters, digits, '_', '-' or '.' "
                                  f"(it becomes a folder name) and not {RESERVED_FOLDER!r}")
            if not isinstance(spec.remap, dict):
                yield "sources", f"{spec.name}: remap must map source classes to target classes, got {spec.remap!r}"
            unknown = {k: v for k, v in spec.remap.items() if v is not None and v not in self.classes}
            if unknown:
                yield "sources", (f"{spec.name}: remap targets {unknown} are not among the recipe's classes "
                                  f"{self.classes} (use null to drop a class)")
            yield from (("sources", f"{spec.name}: {problem}") for problem in _labelling_problems(spec))

    def _split_problems(self) -> Iterator[tuple[str, str]]:
        splits = self.splits
        if not isinstance(splits, dict) or not all(_is_number(v) and v >= 0 for v in splits.values()):
            yield "splits", f"must map split names to non-negative fractions, got {splits!r}"
        unknown = [s for s in splits if s not in SPLIT_KEYS]
        if unknown:
            yield "splits", f"split names must be among {list(SPLIT_KEYS)}, got {unknown}"
        if not splits.get("train") or not splits.get("val"):
            yield "splits", f"train and val need fractions above 0 (ultralytics needs both), got {splits}"
        if abs(sum(splits.values()) - 1) > 1e-6:
            yield "splits", f"fractions must sum to 1, got {sum(splits.values()):g} from {splits}"

    @classmethod
    def from_dict(cls, raw: dict) -> DatasetRecipe:
        """A recipe from its YAML mapping; unknown or missing keys and bad values are errors naming the field."""
        if not isinstance(raw, dict):
            raise RecipeError(f"a recipe must be a mapping of field: value, got {type(raw).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in raw if k not in known)
        if unknown:
            raise RecipeError(f"unknown recipe key(s) {unknown}; the keys are {known}")
        missing = [k for k in ("name", "classes", "sources") if k not in raw]
        if missing:
            raise RecipeError(f"recipe is missing the required key(s) {missing}")
        return cls(**{**raw, "sources": _source_specs(raw["sources"])})

    @classmethod
    def load(cls, path: Path | str) -> DatasetRecipe:
        """A recipe from a YAML file; every error names the file."""
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise RecipeError(f"{path}: cannot read the recipe ({exc.strerror or exc})") from None
        except yaml.YAMLError as exc:
            raise RecipeError(f"{path}: not valid YAML: {exc}") from None
        try:
            return cls.from_dict(raw)
        except RecipeError as exc:
            raise RecipeError(f"{path}: {exc}") from None


def _labelling_problems(spec: SourceSpec) -> Iterator[str]:
    if spec.labels not in (SOURCE_LABELS, HYBRID_LABELS):
        yield f"labels must be {SOURCE_LABELS!r} or {HYBRID_LABELS!r}, got {spec.labels!r}"
    elif spec.hybrid and (not isinstance(spec.model, str) or not spec.model):
        yield "labels: hybrid needs model: the model asset that labels the source first, e.g. model_go2k_v2"
    elif not spec.hybrid and spec.model is not None:
        yield f"model {spec.model!r} labels a source only with labels: hybrid"
    if not _is_number(spec.conf) or not 0 < spec.conf < 1:
        yield f"conf must be a confidence in (0, 1), got {spec.conf!r}"
    if not _is_number(spec.match_iou) or not 0 < spec.match_iou <= 1:
        yield f"match_iou must be an IoU in (0, 1], got {spec.match_iou!r}"


SOURCE_KEYS = ("name", "remap", "labels", "model", "conf", "match_iou")


def _source_specs(raw: Any) -> list[SourceSpec]:
    """``sources`` entries: a source name, or a mapping with name, remap and how it is labelled."""
    if not isinstance(raw, list) or not raw:
        raise RecipeError(f"sources: must list at least one source (a name, or name + remap), got {raw!r}")
    specs = []
    for entry in raw:
        if isinstance(entry, str):
            specs.append(SourceSpec(entry))
            continue
        if not isinstance(entry, dict) or "name" not in entry:
            raise RecipeError(f"sources: each entry is a source name or a mapping with 'name', got {entry!r}")
        extra = sorted(set(entry) - set(SOURCE_KEYS))
        if extra:
            raise RecipeError(f"sources: {entry['name']}: unknown key(s) {extra}; a source has {list(SOURCE_KEYS)}")
        specs.append(SourceSpec(**{**entry, "remap": entry.get("remap") or {}}))
    return specs


# --------------------------------------------------------------------------- step 0: hybrid labels


def hybrid_source(source: SourceData, labels: ModelLabels, spec: SourceSpec) -> tuple[SourceData, dict[str, Any]]:
    """``source`` with the boxes ``spec`` asks for: the model's boxes scoring ``spec.conf`` or more
    (clipped to the image), and the source's boxes no model box overlaps at IoU ``spec.match_iou``
    or more. Model classes are matched to the source's by name; boxes gain ``origin`` and
    ``score`` (NaN for the source's own)."""
    unknown = [name for name in labels.classes if name not in source.classes]
    if unknown:
        raise RecipeError(
            f"source {spec.name!r}: the model {spec.model} predicts classes {unknown} that the source does not have "
            f"(model classes {labels.classes}, source classes {source.classes}); label it with a model of its classes"
        )
    missing = [c for c in ("image", "cls", "score", "x1", "y1", "x2", "y2") if c not in labels.boxes.columns]
    if missing:
        raise RecipeError(f"source {spec.name!r}: the model's boxes lack columns {missing}")
    sizes = source.images.set_index(source.images["image"].astype(str))[["width", "height"]]
    predicted = labels.boxes[labels.boxes["image"].astype(str).isin(sizes.index)]
    predicted = predicted[predicted["score"].to_numpy(np.float64) >= spec.conf]
    width = predicted["image"].astype(str).map(sizes["width"]).to_numpy(np.float64)
    height = predicted["image"].astype(str).map(sizes["height"]).to_numpy(np.float64)
    model = pd.DataFrame({
        "image": predicted["image"].astype(str).to_numpy(),
        "cls": [source.classes.index(labels.classes[c]) for c in predicted["cls"].astype(int)],
        "x1": np.clip(predicted["x1"].to_numpy(np.float64), 0, width),
        "y1": np.clip(predicted["y1"].to_numpy(np.float64), 0, height),
        "x2": np.clip(predicted["x2"].to_numpy(np.float64), 0, width),
        "y2": np.clip(predicted["y2"].to_numpy(np.float64), 0, height),
        "img_w": width, "img_h": height, "origin": ORIGIN_MODEL,
        "score": predicted["score"].to_numpy(np.float64),
    })
    model = model[(model["x2"] > model["x1"]) & (model["y2"] > model["y1"])]
    own = source.boxes.assign(image=source.boxes["image"].astype(str), origin=ORIGIN_SOURCE, score=np.nan)
    covered = np.zeros(len(own), dtype=bool)
    model_by_image = {image: group[["x1", "y1", "x2", "y2"]].to_numpy() for image, group in model.groupby("image")}
    for image, rows in own.groupby("image").indices.items():
        if image in model_by_image:
            boxes = own.iloc[rows][["x1", "y1", "x2", "y2"]].to_numpy(np.float64)
            covered[rows] = (pairwise_iou(boxes, model_by_image[image]) >= spec.match_iou).any(axis=1)
    kept = own[~covered]
    boxes = pd.concat([model.astype({"cls": int}), kept[list(model.columns)]], ignore_index=True)
    with_model = set(model["image"])
    counts = {
        "model": spec.model, **labels.about, "conf": spec.conf, "match_iou": spec.match_iou,
        "model_boxes": len(model), "source_boxes": len(own), "source_boxes_kept": len(kept),
        "source_boxes_replaced": int(covered.sum()),
        "images_labelled_by_model": len(with_model),
        "images_from_source_only": int(own.loc[~own["image"].isin(with_model), "image"].nunique()),
    }
    return SourceData(source.name, source.classes, source.images, boxes), counts


# --------------------------------------------------------------------------- step 1: remap


REQUIRED_IMAGE_COLUMNS = ("image", "path", "width", "height", "sha256")
REQUIRED_BOX_COLUMNS = ("image", "cls", "x1", "y1", "x2", "y2", "img_w", "img_h")


def _dataset_image_name(source: str, image: str) -> str:
    """Where a source image lives in the build, under ``images/``: ``<source>/<its relative path>``,
    with the source's own leading ``images/`` folder left out so the label rule still holds."""
    relative = PurePosixPath(image)
    parts = relative.parts[1:] if relative.parts[:1] == (RESERVED_FOLDER,) else relative.parts
    if not parts or relative.is_absolute() or ".." in parts:
        raise RecipeError(f"source {source!r}: image name {image!r} must be a path inside the source, without '..'")
    if RESERVED_FOLDER in parts:
        raise RecipeError(
            f"source {source!r}: image {image!r} has a nested {RESERVED_FOLDER!r} folder; ultralytics would look "
            "for its labels in the wrong place: rename that folder"
        )
    return "/".join((source, *parts))


def _check_source(source: SourceData) -> None:
    for frame, columns, what in ((source.images, REQUIRED_IMAGE_COLUMNS, "images"), (source.boxes, REQUIRED_BOX_COLUMNS, "boxes")):
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise RecipeError(f"source {source.name!r}: the {what} manifest lacks columns {missing}")
    repeated = source.images["image"][source.images["image"].duplicated()]
    if len(repeated):
        raise RecipeError(f"source {source.name!r}: image names appear twice: {repeated.head(MAX_NAMED).tolist()}")
    orphans = ~source.boxes["image"].isin(source.images["image"])
    if orphans.any():
        raise RecipeError(
            f"source {source.name!r}: {int(orphans.sum())} boxes belong to no listed image, "
            f"e.g. {source.boxes.loc[orphans, 'image'].head(MAX_NAMED).tolist()}"
        )
    bad = ~source.boxes["cls"].between(0, len(source.classes) - 1)
    if bad.any():
        raise RecipeError(
            f"source {source.name!r}: {int(bad.sum())} boxes have a class outside 0..{len(source.classes) - 1} "
            f"of its classes {source.classes}"
        )


def _check_label_files_distinct(source: str, names: dict[str, str]) -> None:
    """Two source images (``a.jpg`` and ``a.png``, ``images/a.jpg`` and ``a.jpg``) must not share a label file."""
    owner: dict[str, str] = {}
    for image, name in names.items():
        label = label_path(name)
        if label in owner:
            raise RecipeError(
                f"source {source!r}: images {owner[label]!r} and {image!r} would share the label file {label}; rename one"
            )
        owner[label] = image


def _class_mapping(spec: SourceSpec, source: SourceData, targets: list[str]) -> list[int | None]:
    """Target class index (or None: dropped) for each source class index."""
    unknown = [name for name in spec.remap if name not in source.classes]
    if unknown:
        raise RecipeError(
            f"source {spec.name!r}: remap names classes {unknown} that the source does not have; "
            f"its classes are {source.classes}"
        )
    mapping = []
    for name in source.classes:
        target = spec.remap[name] if name in spec.remap else (name if name in targets else None)
        mapping.append(None if target is None else targets.index(target))
    return mapping


def _remap_sources(sources: list[SourceData], recipe: DatasetRecipe, warnings: list[str]):
    """Step 1: one images frame and one boxes frame over all sources, in the recipe's classes."""
    by_name: dict[str, SourceData] = {}
    for source in sources:
        if source.name in by_name:
            raise RecipeError(f"two sources are named {source.name!r}; source names must be unique")
        by_name[source.name] = source
    missing = [spec.name for spec in recipe.sources if spec.name not in by_name]
    if missing:
        raise RecipeError(
            f"recipe {recipe.name!r} names source(s) {missing} that are not available; "
            f"available sources: {sorted(by_name)}"
        )
    image_frames, box_frames, counts = [], [], {}
    for spec in recipe.sources:
        source = by_name[spec.name]
        _check_source(source)
        mapping = _class_mapping(spec, source, recipe.classes)
        names = {image: _dataset_image_name(spec.name, image) for image in source.images["image"].astype(str)}
        _check_label_files_distinct(spec.name, names)
        box_counts = source.boxes["image"].astype(str).value_counts()
        images = pd.DataFrame({
            "source": spec.name,
            "source_image": source.images["image"].astype(str).to_numpy(),
            "image": [names[i] for i in source.images["image"].astype(str)],
            "source_path": source.images["path"].astype(str).to_numpy(),
            "width": source.images["width"].to_numpy(),
            "height": source.images["height"].to_numpy(),
            "sha256": source.images["sha256"].to_numpy(),
            # camera and time, where known, group frames seconds apart into one split
            "camera": source.images["camera"].to_numpy() if "camera" in source.images else None,
            "timestamp": pd.to_datetime(source.images["timestamp"]).to_numpy() if "timestamp" in source.images else pd.NaT,
        })
        images["source_boxes"] = images["source_image"].map(box_counts).fillna(0).astype(int)
        target = source.boxes["cls"].map(dict(enumerate(mapping)))
        dropped = source.boxes.loc[target.isna(), "cls"].map(dict(enumerate(source.classes))).value_counts()
        carried = [*REQUIRED_BOX_COLUMNS, *(c for c in ("origin", "score") if c in source.boxes)]
        kept = source.boxes.loc[target.notna(), carried].assign(
            source=spec.name, cls=target[target.notna()].astype(int),
            image=lambda frame: frame["image"].astype(str).map(names),
        )
        if "origin" not in kept:
            kept = kept.assign(origin=ORIGIN_SOURCE, score=np.nan)
        image_frames.append(images)
        box_frames.append(kept)
        counts[spec.name] = {
            "images": len(images),
            "boxes": len(source.boxes),
            "kept": {c: int((kept["cls"] == i).sum()) for i, c in enumerate(recipe.classes)},
            "dropped": {str(c): int(n) for c, n in dropped.items()},
        }
    images = pd.concat(image_frames, ignore_index=True)
    boxes = pd.concat(box_frames, ignore_index=True)
    for index, name in enumerate(recipe.classes):
        if not (boxes["cls"] == index).any():
            warnings.append(
                f"missing class: no source provides {name!r} boxes (sources {[s.name for s in recipe.sources]} "
                "after remapping); the dataset will not teach it"
            )
    return images, boxes, counts


# --------------------------------------------------------------------------- step 2: area filter


def _area_filter(images: pd.DataFrame, boxes: pd.DataFrame, recipe: DatasetRecipe, warnings: list[str]):
    """Step 2: boxes below their class's minimum area removed; images left without boxes dropped."""
    area = (boxes["x2"] - boxes["x1"]) * (boxes["y2"] - boxes["y1"])
    boxes = boxes.assign(area_pct=100 * area / (boxes["img_w"] * boxes["img_h"]))
    minimum = boxes["cls"].map({recipe.classes.index(c): v for c, v in recipe.min_area_pct.items()}).fillna(0)
    small = boxes["area_pct"] < minimum
    removed, boxes = boxes[small], boxes[~small]
    emptied = (images["source_boxes"] > 0) & ~images["image"].isin(boxes["image"])
    lost_to_area = images["image"].isin(removed["image"])
    emptied_by_area, emptied_by_remap = emptied & lost_to_area, emptied & ~lost_to_area
    removed_boxes: dict[str, dict[str, int]] = {}
    for spec in recipe.sources:
        removed_boxes[spec.name] = {}
        for index, name in enumerate(recipe.classes):
            lost = int(((removed["source"] == spec.name) & (removed["cls"] == index)).sum())
            total = lost + int(((boxes["source"] == spec.name) & (boxes["cls"] == index)).sum())
            removed_boxes[spec.name][name] = lost
            if total and lost / total > AREA_FILTER_WARN_SHARE:
                warnings.append(
                    f"area filter removed {lost} of {total} {name} boxes of {spec.name} ({100 * lost / total:.1f}%) "
                    f"below {recipe.min_area_pct[name]:g}% of the image area"
                )
    counts = {
        "removed_boxes": removed_boxes,
        "images_emptied_by_area_filter": int(emptied_by_area.sum()),
        "images_emptied_by_remap": int(emptied_by_remap.sum()),
    }
    # an image that lost its boxes still shows people: it is neither a positive nor a background
    return images[~(emptied_by_area | emptied_by_remap)].reset_index(drop=True), boxes, removed, counts


# --------------------------------------------------------------------------- steps 3-4: pool and dedup


def _per_image_boxes(images: pd.DataFrame, boxes: pd.DataFrame, n_classes: int) -> np.ndarray:
    """(images, classes) box counts, rows in ``images`` order."""
    rows = pd.Index(images["image"]).get_indexer(boxes["image"])
    matrix = np.zeros((len(images), n_classes), dtype=np.int64)
    inside = rows >= 0
    np.add.at(matrix, (rows[inside], boxes["cls"].to_numpy()[inside]), 1)
    return matrix


def _dedup(pool: pd.DataFrame, n_boxes: np.ndarray, recipe: DatasetRecipe, warnings: list[str]):
    """Step 4: keep mask over the pool, and the near-duplicate pairs that group images for the split."""
    thumbs = dedup.thumbnails(pool["source_path"])
    readable = np.zeros(len(pool), dtype=bool)
    readable[thumbs.positions] = True
    if thumbs.skipped:
        listed = "; ".join(f"{p} ({reason})" for p, reason in thumbs.skipped[:MAX_NAMED])
        warnings.append(f"{len(thumbs.skipped)} images could not be read and are left out: {listed}")
    threshold = min(recipe.group_similarity, recipe.dedup_threshold or recipe.group_similarity)
    # frames of one fixed camera all look alike to a thumbnail: never pair them (grouped by time instead)
    similar = dedup.near_duplicate_pairs(thumbs, threshold, cameras=pool["camera"].tolist())
    order = np.lexsort((np.arange(len(pool)), -n_boxes))  # the copy with most boxes is kept
    rank = np.empty(len(pool), dtype=np.int64)
    rank[order] = np.arange(len(pool))
    # byte copies go whatever the threshold; near-duplicates are then compared among unique images
    copy = pd.Series(pool["sha256"].to_numpy()[order]).duplicated().to_numpy()[rank]
    unique = np.flatnonzero(~copy)
    position = np.full(len(pool), -1)
    position[unique] = np.arange(len(unique))
    near = [(position[i], position[j]) for i, j, s in similar
            if recipe.dedup_threshold is not None and s >= recipe.dedup_threshold and not copy[i] and not copy[j]]
    kept_unique, _ = dedup.keep_one(len(unique), near, [position[i] for i in order if not copy[i]])
    keep = np.zeros(len(pool), dtype=bool)
    keep[unique] = kept_unique
    counts = {
        "unreadable": len(thumbs.skipped),
        "exact_duplicates_removed": int(copy.sum()),
        "near_duplicates_removed": int((~kept_unique).sum()),
        "threshold": recipe.dedup_threshold,
    }
    return keep & readable, similar, counts


# --------------------------------------------------------------------------- steps 5-7: selection


def _rng(recipe: DatasetRecipe, step: int) -> np.random.Generator:
    """One stream per step, so changing one step's inputs does not reshuffle the others."""
    return np.random.default_rng([recipe.seed, step])


def _select_by_quota(per_image: np.ndarray, recipe: DatasetRecipe, warnings: list[str]) -> np.ndarray:
    """Step 5: positions of the positive images taken, visiting them in a seeded order."""
    if recipe.box_quota is None:
        return np.arange(len(per_image))
    pool_boxes = per_image.sum(axis=0)
    quota = np.array([recipe.box_quota[c] for c in recipe.classes])
    for index, name in enumerate(recipe.classes):
        if pool_boxes[index] < quota[index]:
            warnings.append(
                f"quota {quota[index]} {name} boxes but the pool has {pool_boxes[index]} "
                f"(after remap, area filter and dedup); taking all {pool_boxes[index]}"
            )
    taken = np.zeros(len(recipe.classes), dtype=np.int64)
    chosen = []
    for position in _rng(recipe, 5).permutation(len(per_image)):
        if ((per_image[position] > 0) & (taken < quota)).any():
            chosen.append(position)
            taken += per_image[position]
    return np.sort(np.array(chosen, dtype=np.int64))


def _background_count(n_positives: int, available: int, recipe: DatasetRecipe, warnings: list[str]) -> tuple[int, int]:
    """Step 6: (wanted, taken) backgrounds for a final set of positives plus backgrounds."""
    share = recipe.background_share
    total = n_positives / (1 - share)
    if recipe.max_images is not None:
        total = min(total, recipe.max_images)
    wanted = int(round(share * total))
    if wanted > available:
        warnings.append(
            f"background_share {share:g} needs {wanted} background images but the pool has {available} "
            f"(after dedup); taking all {available}"
        )
    return wanted, min(wanted, available)


def _largest_remainder(weights: np.ndarray, total: int) -> np.ndarray:
    """Whole numbers proportional to ``weights`` that sum to ``total``."""
    exact = weights / weights.sum() * total
    whole = np.floor(exact).astype(np.int64)
    extra = total - whole.sum()
    whole[np.argsort(-(exact - whole), kind="stable")[:extra]] += 1
    return whole


def _cap_positives(per_image: np.ndarray, keep: int, recipe: DatasetRecipe) -> np.ndarray:
    """Step 7: positions of ``keep`` positive images, stratified by each image's rarest class
    so that the classes keep their proportions (the rare class is not diluted by chance)."""
    if keep >= len(per_image):
        return np.arange(len(per_image))
    totals = per_image.sum(axis=0)
    rarity = np.where(per_image > 0, totals[None, :], np.iinfo(np.int64).max)
    stratum = rarity.argmin(axis=1)
    sizes = np.bincount(stratum, minlength=per_image.shape[1])
    allocation = _largest_remainder(sizes.astype(float), keep)
    rng = _rng(recipe, 7)
    chosen = [rng.permutation(np.flatnonzero(stratum == s))[:n] for s, n in enumerate(allocation)]
    return np.sort(np.concatenate(chosen))


# --------------------------------------------------------------------------- steps 8-9


def _outliers(boxes: pd.DataFrame, recipe: DatasetRecipe) -> pd.DataFrame:
    """Step 8: the largest boxes by share of the image area, at least one if there are boxes."""
    if boxes.empty:
        return boxes.iloc[:0]
    count = max(1, math.ceil(recipe.outlier_fraction * len(boxes)))
    return boxes.sort_values("area_pct", ascending=False, kind="stable").head(count)


def _split(final: pd.DataFrame, boxes: pd.DataFrame, pairs: list[tuple[int, int, float]], recipe: DatasetRecipe):
    """Step 9: split names and group ids; ``pairs`` (near-duplicates found by dedup) index ``final`` rows."""
    links = leakage_links(final["source_path"], final["camera"], final["timestamp"], recipe.grouping, similar=pairs)
    groups = links.groups(len(final))
    # backgrounds count as one box of an extra class, so every split gets its share of them
    background_marks = pd.DataFrame({"image": final.loc[final["background"], "image"], "cls": len(recipe.classes)})
    stratify_by = pd.concat([boxes[["image", "cls"]], background_marks], ignore_index=True)
    split = grouped_stratified_split(final, stratify_by, groups, recipe.splits, len(recipe.classes) + 1, recipe.seed)
    return split.to_numpy(), groups


# --------------------------------------------------------------------------- step 10: write


def _write(out_dir: Path, final: pd.DataFrame, boxes: pd.DataFrame, removed: pd.DataFrame,
           outliers: pd.DataFrame, recipe: DatasetRecipe) -> dict[str, int]:
    linked = 0
    for source_path, path in zip(final["source_path"], final["path"]):
        linked += link_or_copy(Path(source_path), out_dir / path)
    write_label_files(out_dir, final, boxes)
    # "./" lines resolve against the list file's folder (ultralytics and core.yolo_format alike), so the
    # build stays valid after the staging folder is renamed into place
    splits = tuple(split for split, fraction in recipe.splits.items() if fraction > 0)
    listed = final.sort_values("path").assign(path=lambda frame: "./" + frame["path"])
    write_data_yaml(out_dir, write_list_files(out_dir, listed, splits), recipe.classes)
    manifests = out_dir / "manifests"
    manifests.mkdir(parents=True, exist_ok=True)
    final.drop(columns=["source_path", "source_boxes"]).to_parquet(manifests / RECIPE_MANIFEST, index=False)
    boxes.to_parquet(manifests / "boxes.parquet", index=False)
    outliers.to_parquet(out_dir / "outliers.parquet", index=False)
    _pictures(out_dir, final, boxes, removed, outliers, recipe)
    return {"images_linked": linked, "images_copied": len(final) - linked}


def _pictures(out_dir: Path, final: pd.DataFrame, boxes: pd.DataFrame, removed: pd.DataFrame,
              outliers: pd.DataFrame, recipe: DatasetRecipe) -> None:
    plots = out_dir / "plots"
    reports.box_size_histogram(boxes, recipe.classes, plots / "box_sizes.png", f"box heights in {recipe.name}")
    rng = _rng(recipe, 10)
    holding = [final.loc[final[f"boxes_{c}"] > 0, "image"] for c in recipe.classes]
    holding.append(final.loc[final["background"], "image"])
    chosen = list(dict.fromkeys(
        name for names in holding for name in rng.permutation(names.to_numpy())[:SAMPLES_PER_CLASS]
    ))
    path_of = dict(zip(final["image"], final["path"]))

    def tiles(names, drawn: pd.DataFrame, crossed: pd.DataFrame):
        return ((out_dir / path_of[n], drawn[drawn["image"] == n], crossed[crossed["image"] == n]) for n in names)

    # samples: kept boxes in class colours, boxes the area filter removed in magenta
    reports.sample_grid(tiles(chosen, boxes, removed), recipe.classes, plots / "samples.png",
                        tile_width=SAMPLE_TILE_WIDTH)
    outlier_images = list(dict.fromkeys(outliers["image"]))[:OUTLIER_PICTURES]
    reports.sample_grid(tiles(outlier_images, outliers, removed.iloc[:0]), recipe.classes, plots / "outliers.png",
                        tile_width=SAMPLE_TILE_WIDTH)


def _per_split(final: pd.DataFrame, classes: list[str], splits: list[str]) -> dict[str, dict[str, Any]]:
    table = {}
    for split in splits:
        rows = final[final["split"] == split]
        table[split] = {
            "images": len(rows),
            "backgrounds": int(rows["background"].sum()),
            "boxes": {c: int(rows[f"boxes_{c}"].sum()) for c in classes},
        }
    return table


# --------------------------------------------------------------------------- the build


def _select(images: pd.DataFrame, per_image: np.ndarray, keep: np.ndarray, recipe: DatasetRecipe,
            counts: dict[str, Any], warnings: list[str]) -> np.ndarray:
    """Steps 5-7: pool rows of the chosen positives and backgrounds."""
    background = images["background"].to_numpy()
    positives = np.flatnonzero(keep & ~background)
    pool_boxes = per_image[positives].sum(axis=0)
    positives = positives[_select_by_quota(per_image[positives], recipe, warnings)]
    counts["quota"] = {
        "quota": recipe.box_quota,
        "pool_boxes_after_dedup": dict(zip(recipe.classes, pool_boxes.tolist())),
        "images": len(positives),
        "boxes": dict(zip(recipe.classes, per_image[positives].sum(axis=0).tolist())),
    }
    candidates = np.flatnonzero(keep & background)
    wanted, n_backgrounds = _background_count(len(positives), len(candidates), recipe, warnings)
    backgrounds = np.sort(_rng(recipe, 6).permutation(candidates)[:n_backgrounds])
    counts["backgrounds"] = {"wanted": wanted, "available": len(candidates), "taken": n_backgrounds}
    room = len(positives) if recipe.max_images is None else recipe.max_images - n_backgrounds
    capped = positives[_cap_positives(per_image[positives], min(len(positives), room), recipe)]
    counts["max_images"] = {"limit": recipe.max_images, "before": len(positives) + n_backgrounds,
                            "after": len(capped) + n_backgrounds}
    return np.concatenate([capped, backgrounds])


def _pairs_within(pairs: list[tuple[int, int, float]], chosen: np.ndarray, pool_size: int) -> list[tuple]:
    """Pool pairs whose images were both chosen, re-indexed to positions in ``chosen``."""
    position = np.full(pool_size, -1)
    position[chosen] = np.arange(len(chosen))
    return [(int(position[i]), int(position[j]), s) for i, j, s in pairs if position[i] >= 0 and position[j] >= 0]


def _label_hybrid_sources(sources: list[SourceData], recipe: DatasetRecipe,
                          model_labels: dict[str, ModelLabels]) -> tuple[list[SourceData], dict[str, Any]]:
    """Step 0: each hybrid source with the model's boxes and its own where the model found none."""
    specs = {spec.name: spec for spec in recipe.hybrid_sources}
    unlabelled = sorted(set(specs) - set(model_labels))
    if unlabelled:
        raise RecipeError(f"recipe {recipe.name!r}: hybrid source(s) {unlabelled} come without the model's boxes")
    labelled, counts = [], {}
    for source in sources:
        if source.name in specs:
            _check_source(source)
            source, counts[source.name] = hybrid_source(source, model_labels[source.name], specs[source.name])
        labelled.append(source)
    return labelled, counts


def _boxes_by_origin(boxes: pd.DataFrame, classes: list[str]) -> dict[str, dict[str, int]]:
    return {origin: {c: int((group["cls"] == i).sum()) for i, c in enumerate(classes)}
            for origin, group in boxes.groupby("origin")}


def build_recipe(sources: list[SourceData], recipe: DatasetRecipe, out_dir: Path,
                 model_labels: dict[str, ModelLabels] | None = None) -> BuildReport:
    """Build ``recipe`` from ``sources`` into ``out_dir`` (an empty folder the caller publishes);
    ``model_labels``: the model's boxes for each hybrid source, by source name."""
    out_dir = Path(out_dir)
    warnings: list[str] = []
    counts: dict[str, Any] = {}
    if recipe.hybrid_sources:
        sources, counts["hybrid"] = _label_hybrid_sources(sources, recipe, model_labels or {})
    images, boxes, counts["remap"] = _remap_sources(sources, recipe, warnings)
    images, boxes, removed, counts["area_filter"] = _area_filter(images, boxes, recipe, warnings)

    # step 3: the pool; a true background never had a box in its source
    images["background"] = images["source_boxes"] == 0
    per_image = _per_image_boxes(images, boxes, len(recipe.classes))
    counts["pool"] = {
        "images_with_boxes": int((~images["background"]).sum()),
        "backgrounds": int(images["background"].sum()),
        "boxes": dict(zip(recipe.classes, per_image.sum(axis=0).tolist())),
    }
    keep, pairs, counts["dedup"] = _dedup(images, per_image.sum(axis=1), recipe, warnings)
    chosen = _select(images, per_image, keep, recipe, counts, warnings)
    if not len(chosen):
        raise RecipeError(
            f"recipe {recipe.name!r} selects no images; counts so far: {json.dumps(counts, default=str)}"
        )

    final = images.iloc[chosen].reset_index(drop=True)
    final["path"] = "images/" + final["image"]
    final["label_path"] = [label_path(name) for name in final["image"]]
    for index, name in enumerate(recipe.classes):
        final[f"boxes_{name}"] = per_image[chosen, index]
    final_boxes = with_normalised(boxes[boxes["image"].isin(final["image"])].reset_index(drop=True))

    outliers = _outliers(final_boxes, recipe)
    counts["outliers"] = {
        "flagged": len(outliers),
        "smallest_flagged_area_pct": round(float(outliers["area_pct"].min()), 3) if len(outliers) else None,
    }

    final["split"], final["group"] = _split(final, final_boxes, _pairs_within(pairs, chosen, len(images)), recipe)
    split_of = dict(zip(final["image"], final["split"]))
    final_boxes["split"] = final_boxes["image"].map(split_of)
    outliers = outliers.assign(path="images/" + outliers["image"], split=outliers["image"].map(split_of),
                               class_name=[recipe.classes[c] for c in outliers["cls"]])
    group_sizes = final["group"].value_counts()
    counts["split"] = {"groups": len(group_sizes), "images_in_shared_groups": int(group_sizes[group_sizes > 1].sum())}
    per_split = _per_split(final, recipe.classes, list(recipe.splits))
    for split, row in per_split.items():
        if recipe.splits[split] > 0 and row["images"] == 0:
            warnings.append(
                f"split {split!r} holds no images: {len(final)} images in {len(group_sizes)} groups were too few"
            )

    removed_from_final = removed[removed["image"].isin(final["image"])]
    counts["write"] = _write(out_dir, final, final_boxes, removed_from_final, outliers, recipe)
    counts["final"] = {"images": len(final), "backgrounds": int(final["background"].sum()),
                       "boxes": {c: int(final[f"boxes_{c}"].sum()) for c in recipe.classes},
                       "boxes_by_origin": _boxes_by_origin(final_boxes, recipe.classes)}
    (out_dir / "report.json").write_text(json.dumps(
        {"recipe": asdict(recipe), "counts": counts, "warnings": warnings, "per_split": per_split}, indent=2, default=str,
    ), encoding="utf-8")
    rows = [{"split": split, "images": row["images"], "backgrounds": row["backgrounds"],
             **{f"boxes_{c}": n for c, n in row["boxes"].items()}} for split, row in per_split.items()]
    return BuildReport(
        counts={f"{split}_images": row["images"] for split, row in per_split.items()},
        details={
            "splits": Table(rows, ["split", "images", "backgrounds", *[f"boxes_{c}" for c in recipe.classes]]),
            "boxes_by_origin": Table(
                [{"origin": origin, **{f"boxes_{c}": n for c, n in by_class.items()}}
                 for origin, by_class in counts["final"]["boxes_by_origin"].items()],
                ["origin", *[f"boxes_{c}" for c in recipe.classes]]),
            "steps": counts,
            "box_sizes": Picture("plots/box_sizes.png", "box heights"),
            "samples": Picture("plots/samples.png", "samples"),
            "outliers": Picture("plots/outliers.png", "largest boxes, flagged for review"),
        },
        warnings=warnings,
    )
