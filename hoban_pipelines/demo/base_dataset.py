"""The generic helmet dataset ("v13") in ultralytics YOLO layout.

Stands in for the large public-style helmet set the user's base checkpoint was trained on:
closer and bigger people (about 60-300 px tall) on varied site backgrounds, mostly 640x640,
about 5% background-only images with an empty label file. The label files are the ground
truth: each line is the tight box of a drawn worker's mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hoban_pipelines.demo.render import (
    CLASSES,
    PlacedWorker,
    add_sensor_noise,
    apply_gains,
    boxes_touch,
    composite,
    encode_jpeg,
    gaussian_noise_table,
    place_sprite,
)
from hoban_pipelines.demo.scene import base_backdrop
from hoban_pipelines.demo.seeding import Stream, stream_rng
from hoban_pipelines.demo.workers import Pose, draw_worker, random_look

SPLITS = ("train", "val")
# Most images are 640x640 like the public sets; a few keep their camera's shape.
_OTHER_SIZES = ((640, 480), (800, 600), (960, 540), (512, 640))
_OTHER_SIZE_RATE = 0.12
_BACKGROUND_EVERY = 20  # every 20th image has nobody in it (5%)
_NO_HELMET_RATE = 0.3
_NOISE_TABLE = gaussian_noise_table(2.0)


@dataclass(frozen=True, eq=False)
class BaseImage:
    image: np.ndarray
    workers: tuple[PlacedWorker, ...]


def image_stem(split: str, index: int) -> str:
    return f"v13_{split}_{index:05d}"


def is_background(index: int) -> bool:
    return index % _BACKGROUND_EVERY == _BACKGROUND_EVERY // 2


def render_base_image(seed: int, split: str, index: int) -> BaseImage:
    """Image ``index`` of ``split``: a pure function of its arguments."""
    rng = stream_rng(seed, Stream.BASE_DATASET, SPLITS.index(split), index)
    if rng.random() < _OTHER_SIZE_RATE:
        width, height = _OTHER_SIZES[rng.integers(len(_OTHER_SIZES))]
    else:
        width, height = 640, 640
    image = base_backdrop(rng, width, height)
    workers = () if is_background(index) else _place_people(rng, width, height)
    composite(image, workers)
    gains = rng.uniform(0.7, 1.2) * rng.uniform(0.94, 1.06, 3)
    image = add_sensor_noise(apply_gains(image, gains), rng, _NOISE_TABLE)
    return BaseImage(image, workers)


def _place_people(rng: np.random.Generator, width: int, height: int) -> tuple[PlacedWorker, ...]:
    wanted = int(rng.integers(1, 7))
    placed: list[PlacedWorker] = []
    for attempt in range(wanted * 8):
        if len(placed) == wanted:
            break
        person_height = int(rng.uniform(60, min(300, 0.9 * height)))
        walking = rng.random() < 0.5
        working = not walking and rng.random() < 0.4
        pose = Pose(stride_phase=float(rng.uniform(0, 2 * np.pi)), stride=1.0 if walking else 0.0,
                    bend=float(rng.uniform(0.3, 0.9)) if working else 0.0,
                    facing=1 if rng.random() < 0.5 else -1, working_arms=working)
        helmet = bool(rng.random() >= _NO_HELMET_RATE)
        sprite = draw_worker(person_height, random_look(rng), pose, helmet=helmet)
        sprite_h, sprite_w = sprite.mask.shape
        if sprite_w >= width - 4 or sprite_h >= height - 4:
            continue
        left = int(rng.integers(2, width - sprite_w - 1))
        top = int(rng.integers(2, height - sprite_h - 1))
        feet = (left + sprite.feet[0], top + sprite.feet[1])
        worker = place_sprite(attempt, sprite, feet, helmet)
        if any(boxes_touch(worker.box, other.box, 3) for other in placed):
            continue
        placed.append(worker)
    return tuple(placed)


def yolo_label_lines(workers: tuple[PlacedWorker, ...], width: int, height: int) -> list[str]:
    lines = []
    for worker in workers:
        x1, y1, x2, y2 = worker.box
        lines.append(
            f"{worker.cls} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} "
            f"{(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}"
        )
    return lines


def write_base_dataset(root: Path, seed: int, counts: dict[str, int]) -> dict:
    """Write ``data.yaml``, ``images/<split>/`` and ``labels/<split>/`` under ``root``."""
    summary: dict = {"background_images": 0, "boxes": {name: 0 for name in CLASSES}}
    for split in SPLITS:
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for index in range(counts[split]):
            rendered = render_base_image(seed, split, index)
            height, width = rendered.image.shape[:2]
            stem = image_stem(split, index)
            (root / "images" / split / f"{stem}.jpg").write_bytes(encode_jpeg(rendered.image))
            lines = yolo_label_lines(rendered.workers, width, height)
            (root / "labels" / split / f"{stem}.txt").write_text(
                "".join(line + "\n" for line in lines), encoding="utf-8"
            )
            summary["background_images"] += not rendered.workers
            for worker in rendered.workers:
                summary["boxes"][CLASSES[worker.cls]] += 1
        summary[f"{split}_images"] = counts[split]
    names = "".join(f"  {i}: {name}\n" for i, name in enumerate(CLASSES))
    (root / "data.yaml").write_text(
        f"train: images/train\nval: images/val\nnames:\n{names}", encoding="utf-8"
    )
    return summary
