"""The ultralytics YOLO detection dataset format: reading a folder into the project's
manifests, and writing label files, image-list files and ``data.yaml``.

The layout is ultralytics' own: ``data.yaml`` with ``path``, ``train``/``val``/``test`` (a folder
of images, a .txt list of image paths, or a list of either) and ``names``; each image's labels
sit at the same path with the last ``images`` folder replaced by ``labels`` and a ``.txt``
suffix, one ``cls cx cy w h`` line (normalised) per box. A missing label file is an image
without boxes. Malformed label lines are errors naming the file and line, since training on
them would silently teach the model nonsense; unreadable images are reported and skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml
from PIL import Image, UnidentifiedImageError

from hoban_pipelines.core.lake import file_sha256

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# ultralytics' split names; every dataset this project writes uses them, "val" included
TRAIN, VAL, TEST = "train", "val", "test"
SPLIT_KEYS = (TRAIN, VAL, TEST)


class YoloFormatError(ValueError):
    """A YOLO dataset that cannot be read; the message names the file (and line)."""


@dataclass
class YoloDataset:
    root: Path
    classes: list[str]
    images: pd.DataFrame  # image, path, split, label_path, width, height, sha256
    boxes: pd.DataFrame  # image, split, cls, x1 y1 x2 y2 (pixels), cx cy w h (normalised), img_w, img_h
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def _names(raw, data_yaml: Path) -> list[str]:
    if isinstance(raw, dict):
        keys = sorted(int(k) for k in raw)
        if keys != list(range(len(keys))):
            raise YoloFormatError(f"{data_yaml}: 'names' keys must be 0..{len(keys) - 1}, got {keys}")
        return [str(raw[k]) for k in keys]
    if isinstance(raw, list) and raw:
        return [str(n) for n in raw]
    raise YoloFormatError(f"{data_yaml}: 'names' must list the class names (a list or a {{index: name}} mapping)")


def image_size(path: Path) -> tuple[int, int] | str:
    """(width, height) from the image header, or why it cannot be read."""
    try:
        with Image.open(path) as probe:
            return probe.size
    except (OSError, UnidentifiedImageError) as exc:
        return str(exc) or type(exc).__name__


def read_class_names(data_yaml: Path) -> list[str]:
    """The class names a data.yaml lists."""
    try:
        spec = yaml.safe_load(Path(data_yaml).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise YoloFormatError(f"cannot read {data_yaml}: {exc}") from None
    return _names(spec.get("names") if isinstance(spec, dict) else None, Path(data_yaml))


def image_to_label_path(image: Path) -> Path:
    """ultralytics' rule: the last ``images`` folder becomes ``labels``, the suffix ``.txt``."""
    parts = list(image.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _split_images(entry, base: Path, data_yaml: Path) -> list[Path]:
    entries = entry if isinstance(entry, list) else [entry]
    images: list[Path] = []
    for item in entries:
        target = (base / str(item)).resolve()
        if target.is_dir():
            images += sorted(p for p in target.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif target.is_file() and target.suffix == ".txt":
            for line in target.read_text().splitlines():
                if line.strip():
                    path = Path(line.strip())
                    images.append(path if path.is_absolute() else (target.parent / path).resolve())
        else:
            raise YoloFormatError(f"{data_yaml}: split entry '{item}' is neither a folder nor a .txt list ({target})")
    return images


def parse_label_file(path: Path, n_classes: int) -> list[tuple[int, float, float, float, float]]:
    """Boxes of one label file; YoloFormatError naming file and line for a malformed line."""
    boxes = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            raise YoloFormatError(
                f"{path} line {number}: {len(fields)} columns, expected 5 (class cx cy w h); "
                "segmentation or keypoint labels are not detection labels"
            )
        try:
            cls, values = int(fields[0]), [float(v) for v in fields[1:]]
        except ValueError:
            raise YoloFormatError(f"{path} line {number}: '{line.strip()}' is not 'int float float float float'") from None
        if not 0 <= cls < n_classes:
            raise YoloFormatError(f"{path} line {number}: class {cls} is outside 0..{n_classes - 1} of data.yaml names")
        if not all(0.0 <= v <= 1.0 for v in values) or values[2] <= 0 or values[3] <= 0:
            raise YoloFormatError(
                f"{path} line {number}: values {values} must be normalised to 0..1 with positive width and height"
            )
        boxes.append((cls, *values))
    return boxes


@dataclass
class YoloListing:
    root: Path
    classes: list[str]
    entries: pd.DataFrame  # image (relative to root), path, split, label_path


def list_yolo_dataset(root: Path, splits: tuple[str, ...] = SPLIT_KEYS) -> YoloListing:
    """Every image of the dataset at ``root`` (a folder with data.yaml, or a dataset .yaml file), without opening any.

    Cheap even for 100k images, so a caller can subsample before paying for ``load_entries``.
    """
    root = Path(root).resolve()
    data_yaml = root if root.suffix in (".yaml", ".yml") else root / "data.yaml"
    root = data_yaml.parent
    if not data_yaml.is_file():
        raise YoloFormatError(f"{root} has no {data_yaml.name}: point the setting at the dataset's top folder")
    try:
        spec = yaml.safe_load(data_yaml.read_text()) or {}
    except yaml.YAMLError as exc:
        raise YoloFormatError(f"{data_yaml} is not valid YAML: {exc}") from None
    if not isinstance(spec, dict):
        raise YoloFormatError(f"{data_yaml} must be a mapping with path, train, val and names")
    classes = _names(spec.get("names"), data_yaml)
    # a relative 'path' is taken relative to data.yaml, which is what the dataset's author meant
    base = Path(str(spec.get("path") or "."))
    base = base if base.is_absolute() else (root / base).resolve()
    rows = [
        {"image": os.path.relpath(image, root), "path": str(image), "split": split,
         "label_path": str(image_to_label_path(image))}
        for split in splits if spec.get(split)
        for image in _split_images(spec[split], base, data_yaml)
    ]
    if not rows:
        raise YoloFormatError(f"{data_yaml}: no images in splits {list(splits)}")
    return YoloListing(root, classes, pd.DataFrame(rows))


BOX_COLUMNS = ["image", "split", "cls", "x1", "y1", "x2", "y2", "cx", "cy", "w", "h", "img_w", "img_h"]


def load_entries(listing: YoloListing, entries: pd.DataFrame | None = None) -> YoloDataset:
    """Sizes, sha256 and boxes of ``entries`` (default: all of the listing).

    Unreadable images are skipped and listed in ``unreadable``; a malformed label line raises.
    """
    entries = listing.entries if entries is None else entries
    image_rows, box_rows, unreadable = [], [], []
    for row in entries.itertuples(index=False):
        size = image_size(Path(row.path))
        if isinstance(size, str):
            unreadable.append((row.path, size))
            continue
        width, height = size
        label = Path(row.label_path)
        boxes = parse_label_file(label, len(listing.classes)) if label.is_file() else []
        image_rows.append({**row._asdict(), "width": width, "height": height, "sha256": file_sha256(Path(row.path))})
        for cls, cx, cy, w, h in boxes:
            box_rows.append({
                "image": row.image, "split": row.split, "cls": cls,
                "x1": (cx - w / 2) * width, "y1": (cy - h / 2) * height,
                "x2": (cx + w / 2) * width, "y2": (cy + h / 2) * height,
                "cx": cx, "cy": cy, "w": w, "h": h, "img_w": width, "img_h": height,
            })
    images = pd.DataFrame(image_rows, columns=[*entries.columns, "width", "height", "sha256"])
    return YoloDataset(listing.root, listing.classes, images, pd.DataFrame(box_rows, columns=BOX_COLUMNS), unreadable)


def read_yolo_dataset(root: Path, splits: tuple[str, ...] = SPLIT_KEYS) -> YoloDataset:
    """Manifests of every image and box in the dataset at ``root``."""
    return load_entries(list_yolo_dataset(root, splits))


def label_path(image: str) -> str:
    """Where a dataset written by this project keeps the labels of ``images/<image>``."""
    return str(Path("labels") / Path(image).with_suffix(".txt"))


def with_normalised(boxes: pd.DataFrame) -> pd.DataFrame:
    """Boxes in pixels (x1 y1 x2 y2 img_w img_h) with YOLO's normalised cx cy w h beside them."""
    return boxes.assign(
        cx=(boxes["x1"] + boxes["x2"]) / 2 / boxes["img_w"],
        cy=(boxes["y1"] + boxes["y2"]) / 2 / boxes["img_h"],
        w=(boxes["x2"] - boxes["x1"]) / boxes["img_w"],
        h=(boxes["y2"] - boxes["y1"]) / boxes["img_h"],
    )


def label_lines(boxes: pd.DataFrame) -> list[str]:
    """YOLO label lines (``cls cx cy w h``, normalised) of boxes in pixels (x1 y1 x2 y2 img_w img_h cls)."""
    b = with_normalised(boxes)
    return [f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}" for c, x, y, w, h in zip(b["cls"], b["cx"], b["cy"], b["w"], b["h"])]


def write_label_file(path: Path, lines: list[str]) -> None:
    """One image's label file (an empty file: an image without boxes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def write_label_files(out_dir: Path, images: pd.DataFrame, boxes: pd.DataFrame) -> None:
    """The label file of every image (``images``: image, label_path relative to ``out_dir``)
    from its boxes in pixels (``boxes``: image, cls, x1 y1 x2 y2 img_w img_h)."""
    by_image = dict(tuple(boxes.groupby("image", sort=False)))
    for image, label in zip(images["image"], images["label_path"]):
        write_label_file(Path(out_dir) / label, label_lines(by_image[image]) if image in by_image else [])


def write_list_files(out_dir: Path, entries: pd.DataFrame, splits: tuple[str, ...] = (TRAIN, VAL)) -> dict[str, str]:
    """``<split>.txt`` per split: each entry's ``path`` once, or ``copies`` times (oversampling).

    A path is absolute, or ``./``-relative to the list file's folder (as ultralytics reads it).
    Returns {split: list file name} for :func:`write_data_yaml`.
    """
    copies = entries["copies"] if "copies" in entries else pd.Series(1, index=entries.index)
    lists = {}
    for split in splits:
        chosen = entries["split"] == split
        lines = [path for path, k in zip(entries.loc[chosen, "path"], copies[chosen]) for _ in range(int(k))]
        (Path(out_dir) / f"{split}.txt").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        lists[split] = f"{split}.txt"
    return lists


def write_data_yaml(out_dir: Path, lists: dict[str, str], classes: list[str]) -> Path:
    """``data.yaml`` naming each split's folder or list file and the classes.

    No ``path`` key: ultralytics resolves a relative ``path`` against the working directory,
    and without one it takes the file's own folder, so the dataset stays valid when moved.
    """
    path = Path(out_dir) / "data.yaml"
    path.write_text(yaml.safe_dump({**lists, "names": dict(enumerate(classes))}, sort_keys=False), encoding="utf-8")
    return path
