"""Benchmark of mix assembly: list entries from a 10,000-image base dataset plus oversampled
domain images, timed from listing the base dataset to the written list files, and checked to
copy no image bytes. The near-duplicate search over 20,000 thumbnails rides along.

Run ``python -m hoban_pipelines.bench.mix`` to print the numbers as JSON.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from hoban_pipelines.bench import dedup as dedup_bench
from hoban_pipelines.datasets.mix import MixParameters, assemble_mix, write_mix
from hoban_pipelines.core.yolo_format import IMAGE_SUFFIXES, list_yolo_dataset

CLASSES = ["person_with_helmet", "person_without_helmet"]
# 8,000 + 900 base entries and 375 domain train images x 8 + 100 domain val: 12,000 entries
BASE_TRAIN, BASE_VAL = 9000, 1000
PARAMETERS = MixParameters(base_train=8000, base_val=900, domain_oversample=8)
DOMAIN_TRAIN, DOMAIN_VALID = 375, 100


def _write_dataset(root: Path) -> pd.DataFrame:
    """A base dataset in YOLO layout and the domain split's entries (tiny distinct JPEGs)."""
    rng = np.random.default_rng(0)
    rows = []
    total = BASE_TRAIN + BASE_VAL + DOMAIN_TRAIN + DOMAIN_VALID
    for index in range(total):
        if index < BASE_TRAIN + BASE_VAL:
            split = "train" if index < BASE_TRAIN else "val"
            image = root / "base" / "images" / split / f"{index:05d}.jpg"
        else:
            split = "train" if index < BASE_TRAIN + BASE_VAL + DOMAIN_TRAIN else "val"
            image = root / "go2k" / "images" / f"{index:05d}.jpg"
        label = Path(str(image).replace("/images/", "/labels/")).with_suffix(".txt")
        image.parent.mkdir(parents=True, exist_ok=True)
        label.parent.mkdir(parents=True, exist_ok=True)
        ok, data = cv2.imencode(".jpg", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
        image.write_bytes(data.tobytes())
        label.write_text(f"0 0.5 0.5 0.1 0.2\n{index % 2} 0.2 0.3 0.05 0.1\n")
        if index >= BASE_TRAIN + BASE_VAL:
            rows.append({"path": str(image), "label_path": str(label), "split": split})
    (root / "base" / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [person_with_helmet, person_without_helmet]\n")
    return pd.DataFrame(rows)


def _image_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def run(workdir: Path | None = None, dedup_images: int = 20_000) -> dict:
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root = Path(tmp)
        domain = _write_dataset(root)
        out = root / "mix"
        out.mkdir()
        start = time.perf_counter()
        result = assemble_mix(list_yolo_dataset(root / "base"), domain, PARAMETERS)
        counts = write_mix(result, CLASSES, out)
        seconds = time.perf_counter() - start
        entries = counts["train_entries"] + counts["val_entries"]
        copied = _image_bytes(out)
    dedup = dedup_bench.run(n=dedup_images)
    return {
        "entries": entries,
        "image_bytes_copied": copied,
        "seconds": round(seconds, 3),
        "dedup_images": dedup["dedup_images"],
        "dedup_seconds": dedup["dedup_seconds"],
    }


if __name__ == "__main__":
    print(json.dumps(run()))
