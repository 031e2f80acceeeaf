"""CVAT exports (one per labelling part) become one checked YOLO dataset.

Parts are merged by image name (an image in several parts is one image; differing labels are
reported as conflicts and the part read last wins), unlabelled images stay as negatives, boxes
are mapped to classes and cleaned, and the result is written as images (hard links where the
filesystem allows), YOLO labels, ``data.yaml`` and Parquet manifests. The same function serves
the ``go2k_manual`` asset and ``hoban cvat to-yolo``.
"""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from hoban_pipelines.labels import cleaning
from hoban_pipelines.core import pictures as reports
from hoban_pipelines.labels.cleaning import CleaningRule
from hoban_pipelines.cvat.reader import IMAGES_PREFIX, CvatFormatError, read_export
from hoban_pipelines.labels.label_map import LabelMap
from hoban_pipelines.core.lake import file_sha256, link_or_copy
from hoban_pipelines.core.report import BuildReport, Picture, Table
from hoban_pipelines.core.yolo_format import TRAIN, VAL, label_path, with_normalised, write_data_yaml, write_label_files

# <camera>_<YYYYmmdd_HHMMSS> anywhere in the file name, as the team's recorders write it
CAMERA_STAMP = re.compile(r"(?P<camera>[A-Za-z0-9-]+)_(?P<stamp>\d{8}_\d{6})")
CVAT_BOX_COLUMNS = ["image", "part", "label", "cls", "x1", "y1", "x2", "y2", "img_w", "img_h", "shape", "camera", "timestamp"]


class DatasetError(ValueError):
    """Exports that cannot become a dataset: missing images, size mismatches, empty input."""


@dataclass
class ImportReport:
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    would_remove: dict[str, int] = field(default_factory=dict)
    removed: int = 0
    linked: int = 0
    copied: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "parts": self.parts,
            "conflicts": self.conflicts,
            "cleaning_would_remove": self.would_remove,
            "removed_by_cleaning": self.removed,
            "images_linked": self.linked,
            "images_copied": self.copied,
        }


@dataclass
class ImportedParts:
    images: pd.DataFrame  # one row per unique image name
    boxes: pd.DataFrame  # CVAT_BOX_COLUMNS, only the winning part's boxes per image, cleaned
    removed: pd.DataFrame  # boxes the cleaning rule removed, from every part
    report: ImportReport
    zips: dict[str, tuple[Path, frozenset[str]]]  # part -> (export zip, image names it carries)
    cvat_names: dict[str, str] = field(default_factory=dict)  # image -> CVAT's name, where they differ


def camera_and_time(name: str) -> tuple[str, pd.Timestamp | None]:
    """Camera and capture time from a file name like ``cam1_20260211_101500.jpg``."""
    match = CAMERA_STAMP.search(Path(name).name)
    if not match:
        first = Path(name).parts[0] if len(Path(name).parts) > 1 else "unknown"
        return first, None
    return match["camera"], pd.Timestamp(datetime.strptime(match["stamp"], "%Y%m%d_%H%M%S"))


def _check_relative(name: str, export: Path) -> None:
    """Image names become paths inside the dataset: they must stay inside it."""
    parts = Path(name).parts
    if not name or Path(name).is_absolute() or ".." in parts:
        raise DatasetError(f"{export}: image name '{name}' is absolute or climbs out with '..'; rename it in CVAT")


def _canonical(boxes: pd.DataFrame) -> tuple:
    rounded = boxes[["cls", "x1", "y1", "x2", "y2"]].round(1)
    return tuple(sorted(map(tuple, rounded.itertuples(index=False))))


def read_parts(files: list[Path], label_map: LabelMap, rule: CleaningRule) -> ImportedParts:
    """Read every export, map labels, clean, and merge the parts by image name.

    Cleaning runs over every part's boxes before the merge, so a part that still carries the
    pre-annotation false boxes does not count as a conflict with one that does not.
    """
    if not files:
        raise DatasetError("no CVAT exports given: put one XML or export .zip per labelling part in the folder")
    report = ImportReport()
    sizes: dict[str, dict[str, tuple[int, int]]] = {}  # image name -> {part: (width, height)}
    cvat_names: dict[str, str] = {}
    rows: list[tuple] = []
    zips: dict[str, tuple[Path, frozenset[str]]] = {}
    for path in sorted(files, key=lambda p: p.name):
        export = read_export(path)
        part = path.stem
        if part in report.parts:
            raise DatasetError(f"{path}: two exports share the part name '{part}'; rename one")
        if export.zip_images:
            zips[part] = (path, frozenset(export.zip_images))
        label_map.check_covers({box.label for image in export.images for box in image.boxes}, str(path))
        boxes_by_class = dict.fromkeys(label_map.classes, 0)
        ignored = 0
        for image in export.images:
            # A project export repeats names across subsets and writes images/<subset>/<name>.
            name = f"{image.subset}/{image.name}" if image.subset else image.name
            _check_relative(name, path)
            sizes.setdefault(name, {})[part] = (image.width, image.height)
            if name != image.name:
                cvat_names[name] = image.name
            camera, stamp = camera_and_time(image.name)
            for box in image.boxes:
                cls = label_map.class_of(box.label, box.attributes)
                if cls is None:
                    ignored += 1
                    continue
                boxes_by_class[label_map.classes[cls]] += 1
                rows.append((name, part, box.label, cls, *box.xyxy, image.width, image.height, box.shape, camera, stamp))
        report.parts[part] = {
            "file": str(path),
            "images": len(export.images),
            "images_with_boxes": sum(1 for image in export.images if image.boxes),
            "boxes_by_class": boxes_by_class,
            "ignored_boxes": ignored,
            "shapes": {k: v for k, v in export.element_counts.items() if v},
            "clipped": export.clipped,
            "dropped_empty": export.dropped_empty,
        }
    all_boxes = pd.DataFrame(rows, columns=CVAT_BOX_COLUMNS)
    all_boxes["timestamp"] = pd.to_datetime(all_boxes["timestamp"])
    kept, removed, report.would_remove = cleaning.apply(all_boxes, rule)
    report.removed = len(removed)
    kept_by_key = dict(tuple(kept.groupby(["image", "part"], sort=False)))
    empty = kept.iloc[0:0]
    image_rows, winners = [], []
    for name in sorted(sizes):
        parts = sizes[name]
        if len(set(parts.values())) > 1:
            raise DatasetError(f"image '{name}' has different sizes in parts {sorted(parts)}: {sorted(set(parts.values()))}")
        winner = sorted(parts)[-1]  # parts are read in name order; the last labelling round wins
        labels = {part: kept_by_key.get((name, part), empty) for part in sorted(parts)}
        if len({_canonical(frame) for frame in labels.values()}) > 1:
            report.conflicts.append(
                {"image": name, "parts": sorted(parts), "kept": winner,
                 "boxes_per_part": {part: len(frame) for part, frame in labels.items()}}
            )
        winners.append(labels[winner])
        camera, stamp = camera_and_time(cvat_names.get(name, name))
        width, height = parts[winner]
        image_rows.append({"image": name, "parts": ",".join(sorted(parts)), "source_part": winner,
                           "width": width, "height": height, "camera": camera, "timestamp": stamp})
    images = pd.DataFrame(image_rows)
    images["timestamp"] = pd.to_datetime(images["timestamp"])
    boxes = pd.concat(winners, ignore_index=True) if winners else empty
    return ImportedParts(images=images, boxes=boxes, removed=removed, report=report, zips=zips, cvat_names=cvat_names)


def _image_source(name: str, part: str, parts: ImportedParts, image_root: Path | None) -> tuple[Path, str | None]:
    """(zip, member) when the part's export zip carries the image, else (file, None); DatasetError if neither."""
    zip_path, carried = parts.zips.get(part, (None, frozenset()))
    if name in carried:  # the reader has already refused members that escape the folder
        return zip_path, IMAGES_PREFIX + name
    source = image_root / name if image_root else None
    if source is not None and not source.is_file() and name in parts.cvat_names:
        source = image_root / parts.cvat_names[name]  # a project's image outside its zip
    if source is None or not source.is_file():
        where = f"under {image_root}" if image_root else "anywhere (no image folder given)"
        raise DatasetError(
            f"image '{name}' of part '{part}' is not {where}"
            + (f" nor in {zip_path}" if zip_path else "")
            + ": point the 'snapshots' setting (or --images) at the folder the export's names are relative to"
        )
    return source, None


def _place_image(source: Path, member: str | None, dest: Path, report: ImportReport) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if member is not None:
        with zipfile.ZipFile(source) as archive, archive.open(member) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out)
        report.copied += 1
        return
    if link_or_copy(source, dest):
        report.linked += 1
    else:
        report.copied += 1


def build_dataset(
    files: list[Path],
    out_dir: Path,
    *,
    label_map: LabelMap,
    rule: CleaningRule,
    image_root: Path | None,
    samples: int = 6,
) -> tuple[pd.DataFrame, pd.DataFrame, ImportReport]:
    """Write the dataset into ``out_dir`` (which the caller publishes); returns manifests and report."""
    parts = read_parts(files, label_map, rule)
    kept, removed, report = parts.boxes, parts.removed, parts.report
    images = parts.images.copy()
    # every image is located before anything is written
    sources = [_image_source(row.image, row.source_part, parts, image_root) for row in images.itertuples()]
    paths, hashes = [], []
    for row, (source, member) in zip(images.itertuples(), sources):
        dest = out_dir / "images" / row.image
        _place_image(source, member, dest, report)
        with Image.open(dest) as probe:
            if probe.size != (row.width, row.height):
                raise DatasetError(
                    f"image '{row.image}' is {probe.size[0]}x{probe.size[1]} but part '{row.source_part}' says "
                    f"{row.width}x{row.height}: the export and the image folder do not match"
                )
        paths.append(str(Path("images") / row.image))
        hashes.append(file_sha256(dest))
    images["path"], images["sha256"], images["split"] = paths, hashes, None
    images["label_path"] = [label_path(name) for name in images["image"]]
    write_label_files(out_dir, images, kept)
    boxes = with_normalised(kept).assign(origin="cvat:" + kept["part"] + ":" + kept["shape"])
    manifests = out_dir / "manifests"
    manifests.mkdir(parents=True, exist_ok=True)
    images.to_parquet(manifests / "images.parquet", index=False)
    boxes.to_parquet(manifests / "boxes.parquet", index=False)
    removed.to_parquet(manifests / "removed_boxes.parquet", index=False)
    write_data_yaml(out_dir, {TRAIN: "images", VAL: "images"}, label_map.classes)
    (out_dir / "report.json").write_text(json.dumps(report.as_dict(), indent=2, sort_keys=True, default=str))
    _pictures(out_dir, images, boxes, removed, label_map.classes, samples)
    return images, boxes, report


def _pictures(out_dir: Path, images: pd.DataFrame, boxes: pd.DataFrame, removed: pd.DataFrame, classes: list[str], samples: int) -> None:
    reports.box_size_histogram(boxes, classes, out_dir / "plots" / "box_sizes.png", "box heights after cleaning")
    # show images where cleaning acted first, then the busiest ones
    order = list(dict.fromkeys([*removed["image"].tolist(), *boxes["image"].value_counts().index.tolist()]))
    chosen = (order or images["image"].tolist())[:samples]
    reports.sample_grid(
        (
            (out_dir / "images" / name, boxes[boxes["image"] == name], removed[removed["image"] == name])
            for name in chosen
        ),
        classes,
        out_dir / "plots" / "samples.png",
    )


def build_labelled_set(
    files: list[Path], out_dir: Path, *, label_map: LabelMap, rule: CleaningRule, image_root: Path | None, samples: int = 6,
) -> BuildReport:
    """:func:`build_dataset`, reported: counts per class, the parts, cleaning, conflicts, pictures."""
    images, boxes, report = build_dataset(files, out_dir, label_map=label_map, rule=rule, image_root=image_root,
                                          samples=samples)
    classes = label_map.classes
    per_class = boxes["cls"].value_counts().reindex(range(len(classes)), fill_value=0)
    parts = [
        {"part": part, "images": info["images"], "with boxes": info["images_with_boxes"], **info["boxes_by_class"]}
        for part, info in report.parts.items()
    ]
    return BuildReport(
        counts={
            "images": len(images),
            "negatives": int((~images["image"].isin(boxes["image"])).sum()),
            "boxes": len(boxes),
            "removed_by_cleaning": report.removed,
            **{f"boxes_{name}": int(per_class.iloc[i]) for i, name in enumerate(classes)},
        },
        details={
            "parts": Table(parts, ["part", "images", "with boxes", *classes]),
            "classes": dict(enumerate(classes)),
            "cleaning": {"rule": rule.rule, "removed": report.removed, "would_remove_by_rule": report.would_remove},
            "conflicts": report.conflicts,
            "images_linked": report.linked,
            "images_copied": report.copied,
            "box_sizes": Picture("plots/box_sizes.png", "box sizes"),
            "samples": Picture("plots/samples.png", "samples"),
        },
        warnings=[f"conflicting labels for {c['image']} in parts {c['parts']}; kept {c['kept']}" for c in report.conflicts],
    )


def export_files(folder: Path) -> list[Path]:
    """The CVAT exports in a drop folder: XML and .zip files, hidden files ignored."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in (".xml", ".zip"))
    if not files:
        raise DatasetError(f"{folder} holds no CVAT export (.xml or .zip); export each labelling part from CVAT into it")
    return files


__all__ = ["CvatFormatError", "DatasetError", "build_dataset", "build_labelled_set", "export_files", "read_parts", "camera_and_time"]
