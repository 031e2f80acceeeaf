"""The dataset ultralytics reads: a private view of a YOLO dataset in the run folder, whole
images or tiles.

Why a view and not the dataset itself: ultralytics writes ``labels/<split>.cache`` beside the
label files it reads, so training straight from a lake version or the user's own dataset would
write into folders that must never change. The view hard-links whole images (no bytes copied)
and writes its own label files and list files; ultralytics' caches land in the view.

Why tiles: CCTV people are 20-80 px tall in 1920x1080 frames; shrunk to a training size of
256-640 px they become a few pixels and a detector cannot learn them. Cutting frames into
tiles keeps people at ``imgsz / tile`` of their size. The tile grid is SAHI's own
(``sahi.slicing.get_slice_bboxes``, overlap 0.2 as the team slices), so training sees people
exactly as sliced inference will. A box cut by a tile edge is kept, clipped, when at least half
of it is inside; with 0.2 overlap every person up to 20% of a tile is whole in some tile.
Only images longer than ``tile_over`` px are tiled (the CCTV frames): a generic dataset's
640-960 px images, with people 60-300 px tall, train whole; cut into small tiles their people
would lose their heads to the tile edges while keeping their helmet class.

Most tiles of a CCTV frame hold nobody. ``background_tiles`` is the share of those kept (a
fixed choice per tile name, so a resumed run trains on the same files): a short run then spends
its samples on people while still seeing the site's empty ground and hung-up hi-vis jackets.
``max_train_entries`` keeps a fixed random sample of the training entries, for a run that is
allowed fewer samples than one epoch of the whole set.

Oversampling carries over: an image listed k times that becomes n tiles lists each tile
ceil(k / n) times, so a frame keeps at least its weight in the mix and the tiles do not
multiply a mix's oversampled share beyond what tiling itself adds.
"""

from __future__ import annotations

import math
import random
import zlib
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import yaml

from hoban_pipelines.core.lake import link_or_copy, publish_directory
from hoban_pipelines.core.yolo_format import YoloFormatError, image_size, list_yolo_dataset, parse_label_file, write_label_file

TILE_OVERLAP = 0.2
MIN_VISIBLE = 0.5
TILE_JPEG_QUALITY = 95
VIEW_RECORD = "view.yaml"
SAMPLE_SEED = 0
# the data.yaml keys of the two splits training reads, and the list file each becomes
SPLITS = {"train": "train.txt", "val": "val.txt"}


class TrainingDataError(ValueError):
    """A dataset that cannot be trained on; the message names the file and what to do."""


@dataclass(frozen=True)
class ViewSummary:
    data_yaml: Path
    tile: int
    tile_over: int  # only images longer than this are tiled
    background_tiles: float  # share of label-free tiles kept
    max_train_entries: int  # 0: every training entry
    entries: dict[str, int]  # list-file lines per split (oversampled copies included)
    images: dict[str, int]  # distinct source images per split
    tiles: dict[str, int]  # tiles written per split (0 when whole images)
    background_tiles_dropped: dict[str, int]  # label-free tiles left out per split
    sampled_out: dict[str, int]  # entries left out of the max_train_entries sample
    boxes: int  # boxes in the view's label files
    boxes_cut: int  # boxes dropped because less than MIN_VISIBLE of them was inside any one tile's crop

    def as_dict(self) -> dict:
        return {**asdict(self), "data_yaml": str(self.data_yaml)}


def tile_grid(width: int, height: int, tile: int, overlap: float = TILE_OVERLAP) -> list[tuple[int, int, int, int]]:
    """SAHI's slices (x1, y1, x2, y2) of a width x height image; one slice when it fits in a tile."""
    if width <= tile and height <= tile:
        return [(0, 0, width, height)]
    from sahi.slicing import get_slice_bboxes

    return [tuple(box) for box in get_slice_bboxes(
        image_height=height, image_width=width, slice_height=tile, slice_width=tile,
        overlap_height_ratio=overlap, overlap_width_ratio=overlap,
    )]


def clip_boxes(
    boxes: list[tuple[int, float, float, float, float]], width: int, height: int,
    crop: tuple[int, int, int, int], min_visible: float = MIN_VISIBLE,
) -> tuple[list[str], int]:
    """YOLO label lines of ``boxes`` (normalised to the image) inside ``crop``, and how many were cut."""
    x0, y0, x1, y1 = crop
    crop_w, crop_h = x1 - x0, y1 - y0
    lines, cut = [], 0
    for cls, cx, cy, w, h in boxes:
        bx1, by1, bx2, by2 = (cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height
        ix1, iy1, ix2, iy2 = max(bx1, x0), max(by1, y0), min(bx2, x1), min(by2, y1)
        if ix2 <= ix1 or iy2 <= iy1:
            continue  # elsewhere in the image
        if (ix2 - ix1) * (iy2 - iy1) < min_visible * (bx2 - bx1) * (by2 - by1):
            cut += 1
            continue
        lines.append(
            f"{cls} {((ix1 + ix2) / 2 - x0) / crop_w:.6f} {((iy1 + iy2) / 2 - y0) / crop_h:.6f} "
            f"{(ix2 - ix1) / crop_w:.6f} {(iy2 - iy1) / crop_h:.6f}"
        )
    return lines, cut


def build_training_view(
    data_yaml: Path | str, out_dir: Path | str, *, tile: int = 0, tile_over: int = 0,
    background_tiles: float = 1.0, max_train_entries: int = 0, splits: tuple[str, ...] = ("train", "val"),
) -> ViewSummary:
    """Write the view of the dataset at ``data_yaml`` into ``out_dir`` (published by rename).

    ``tile`` 0 keeps whole images; otherwise images longer than ``max(tile, tile_over)`` are cut
    into ``tile``-px tiles, of which label-free ones are kept at the ``background_tiles`` share.
    ``max_train_entries`` (0: all) caps the training list at a seeded sample. An existing
    complete view of the same dataset and settings is reused (a resumed run trains on the same
    files). An empty split, an unreadable image or a malformed label line is an error naming the
    file, raised before anything is published.
    """
    if not 0.0 <= background_tiles <= 1.0:
        raise TrainingDataError(f"background_tiles must be a share between 0 and 1, got {background_tiles!r}")
    data_yaml, out_dir = Path(data_yaml).expanduser().resolve(), Path(out_dir)
    settings = {"source": str(data_yaml), "tile": tile, "tile_over": tile_over, "background_tiles": background_tiles,
                "max_train_entries": max_train_entries}
    record = out_dir / VIEW_RECORD
    if record.is_file():
        earlier = yaml.safe_load(record.read_text())
        differs = [f"{key} {earlier.get(key)!r} there, {value!r} asked" for key, value in settings.items()
                   if earlier.get(key) != value]
        if sorted(earlier["counts"]) != sorted(splits):
            differs.append(f"splits {sorted(earlier['counts'])} there, {sorted(splits)} asked")
        if differs:
            raise TrainingDataError(f"{out_dir} holds another training view ({'; '.join(differs)}); give this run its own folder")
        return _summary_from_record(out_dir, earlier)
    try:
        listing = list_yolo_dataset(data_yaml, ("train", "val"))
    except YoloFormatError as exc:
        raise TrainingDataError(str(exc)) from None
    for split in splits:  # before any image is read: minutes of tiling must not end in this error
        if not (listing.entries["split"] == split).any():
            raise TrainingDataError(
                f"{data_yaml}: the {split} split is empty (no image paths in its folder or list file); "
                "a model cannot be trained or validated on nothing"
            )
    counts = {split: {"entries": 0, "images": 0, "tiles": 0, "background_tiles_dropped": 0, "sampled_out": 0}
              for split in splits}
    kept_total = cut_total = 0
    with publish_directory(out_dir) as staging:
        for split in splits:
            rows = listing.entries[listing.entries["split"] == split]
            label_of = dict(zip(rows["path"], rows["label_path"]))
            lines: list[str] = []
            for number, (source, copies) in enumerate(Counter(rows["path"]).items()):
                view = _view_image(
                    Path(source), Path(label_of[source]), len(listing.classes), tile, tile_over,
                    background_tiles, staging, split, f"{number:06d}_{Path(source).stem}",
                )
                kept_total, cut_total = kept_total + view.boxes, cut_total + view.cut
                lines += [f"./images/{split}/{name}" for name in view.names for _ in range(math.ceil(copies / view.pieces))]
                counts[split]["images"] += 1
                counts[split]["tiles"] += view.pieces if view.pieces > 1 else 0
                counts[split]["background_tiles_dropped"] += view.pieces - len(view.names)
            if split == "train" and 0 < max_train_entries < len(lines):
                keep = sorted(random.Random(SAMPLE_SEED).sample(range(len(lines)), max_train_entries))
                counts[split]["sampled_out"] = len(lines) - max_train_entries
                lines = [lines[index] for index in keep]
            counts[split]["entries"] = len(lines)
            (staging / SPLITS[split]).write_text("\n".join(lines) + "\n")
        spec = {
            # ultralytics requires both keys; an evaluation-only view validates its val split
            "train": SPLITS["train"] if "train" in splits else SPLITS["val"],
            "val": SPLITS["val"] if "val" in splits else SPLITS["train"],
            "names": dict(enumerate(listing.classes)),
        }
        (staging / "data.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        record_fields = {
            **settings, "overlap": TILE_OVERLAP, "min_visible": MIN_VISIBLE,
            "counts": counts, "boxes": kept_total, "boxes_cut": cut_total,
        }
        (staging / VIEW_RECORD).write_text(yaml.safe_dump(record_fields, sort_keys=False))
    return _summary_from_record(out_dir, record_fields)


@dataclass(frozen=True)
class _ViewedImage:
    names: list[str]  # its files in the view
    pieces: int  # tiles it was cut into (1: whole), kept or not
    boxes: int  # boxes written
    cut: int  # boxes dropped at tile edges


def keeps_background_tile(name: str, share: float) -> bool:
    """Whether a label-free tile stays in the view: a fixed draw per name, so reruns agree."""
    return zlib.crc32(name.encode()) < share * 2**32


def _view_image(
    source: Path, label_path: Path, n_classes: int, tile: int, tile_over: int, background_tiles: float,
    staging: Path, split: str, stem: str,
) -> _ViewedImage:
    try:
        boxes = parse_label_file(label_path, n_classes) if label_path.is_file() else []
    except YoloFormatError as exc:
        raise TrainingDataError(str(exc)) from None
    size = image_size(source)
    if isinstance(size, str):
        raise TrainingDataError(f"{source}: {size}; remove it from the dataset or replace the file")
    width, height = size
    whole = (0, 0, width, height)
    grid = tile_grid(width, height, tile) if tile and max(width, height) > tile_over else [whole]
    if len(grid) == 1:
        name = f"{stem}{source.suffix.lower()}"
        link_or_copy(source, staging / "images" / split / name)
        lines, cut = clip_boxes(boxes, width, height, whole)
        write_label_file(staging / "labels" / split / f"{stem}.txt", lines)
        return _ViewedImage([name], 1, len(lines), cut)
    pixels = cv2.imread(str(source), cv2.IMREAD_COLOR)
    if pixels is None:
        raise TrainingDataError(f"{source}: OpenCV cannot decode it; remove or replace the file")
    names, kept, cut = [], 0, 0
    (staging / "images" / split).mkdir(parents=True, exist_ok=True)
    for index, (x0, y0, x1, y1) in enumerate(grid):
        name = f"{stem}_t{index:02d}"
        lines, tile_cut = clip_boxes(boxes, width, height, (x0, y0, x1, y1))
        if not lines and not keeps_background_tile(name, background_tiles):
            continue
        cv2.imwrite(str(staging / "images" / split / f"{name}.jpg"), pixels[y0:y1, x0:x1],
                    [cv2.IMWRITE_JPEG_QUALITY, TILE_JPEG_QUALITY])
        write_label_file(staging / "labels" / split / f"{name}.txt", lines)
        names.append(f"{name}.jpg")
        kept, cut = kept + len(lines), cut + tile_cut
    return _ViewedImage(names, len(grid), kept, cut)


def _summary_from_record(out_dir: Path, view: dict) -> ViewSummary:
    counts = view["counts"]
    return ViewSummary(
        data_yaml=out_dir / "data.yaml",
        tile=int(view["tile"]),
        tile_over=int(view["tile_over"]),
        background_tiles=float(view["background_tiles"]),
        max_train_entries=int(view["max_train_entries"]),
        entries={split: c["entries"] for split, c in counts.items()},
        images={split: c["images"] for split, c in counts.items()},
        tiles={split: c["tiles"] for split, c in counts.items()},
        background_tiles_dropped={split: c["background_tiles_dropped"] for split, c in counts.items()},
        sampled_out={split: c["sampled_out"] for split, c in counts.items()},
        boxes=int(view["boxes"]),
        boxes_cut=int(view["boxes_cut"]),
    )


def longest_side(data_yaml: Path | str, split: str = "val") -> int:
    """The longest image side in a split of a dataset (the frame size an evaluation runs at)."""
    listing = list_yolo_dataset(Path(data_yaml), (split,))
    sizes = [image_size(Path(path)) for path in listing.entries["path"]]
    return max((max(size) for size in sizes if not isinstance(size, str)), default=0)

