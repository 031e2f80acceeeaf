"""Benchmark of the CVAT reader on a generated, mask-heavy "CVAT for images 1.1" export.

The export imitates site CCTV labelled with masks: 1920x1080 frames, each with a dozen
person-shaped masks (head, torso, arms, legs) in CVAT's RLE, some with a loose crop box,
plus a helmet box per person. It is written line by line, so generation needs no memory;
reading runs in a fresh spawned process so its peak RSS is the reader's alone.

Run ``python -m hoban_pipelines.bench.cvat [size_mb]`` to print the numbers as JSON.
"""

from __future__ import annotations

import json
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hoban_pipelines.cvat import rle

FRAME_WIDTH, FRAME_HEIGHT = 1920, 1080
PEOPLE_PER_FRAME = 12
BLOB_VARIANTS = 32

_HEADER = """<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta>
    <task>
      <id>1</id>
      <name>bench masks</name>
      <mode>annotation</mode>
      <labels>
        <label>
          <name>person</name>
          <attributes>
            <attribute>
              <name>has_helmet</name>
              <mutable>False</mutable>
              <input_type>checkbox</input_type>
              <default_value>false</default_value>
              <values>false
true</values>
            </attribute>
          </attributes>
        </label>
        <label><name>helmet</name><attributes></attributes></label>
      </labels>
    </task>
  </meta>
"""


def run(size_mb: float = 20.0, workdir: Path | None = None) -> dict:
    """Generate a ~size_mb export, read it with read_export in a fresh process, return timings.

    Returns {"shapes", "seconds", "shapes_per_s", "peak_rss_mb"}; the export is written to
    ``workdir`` (kept) or to a temporary folder (removed).
    """
    if workdir is not None:
        return _generate_and_measure(size_mb, Path(workdir))
    with tempfile.TemporaryDirectory(prefix="hoban-bench-cvat-") as tmp:
        return _generate_and_measure(size_mb, Path(tmp))


def _generate_and_measure(size_mb: float, workdir: Path) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"cvat_masks_{size_mb:g}mb.xml"
    write_mask_export(path, size_mb)
    # spawn, not fork: a forked child would inherit the generator's memory in its RSS.
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_read_and_measure, (str(path),))


def write_mask_export(path: Path, size_mb: float, seed: int = 0) -> int:
    """Write a mask-heavy CVAT XML of about size_mb megabytes; return the number of shapes."""
    rng = np.random.default_rng(seed)
    blobs = [_person_blob(rng) for _ in range(BLOB_VARIANTS)]
    target_bytes = int(size_mb * 1_000_000)
    shapes = 0
    with path.open("w", encoding="utf-8") as out:
        out.write(_HEADER)
        frame = 0
        while out.tell() < target_bytes:
            out.write(
                f'  <image id="{frame}" name="cam{frame % 7:02d}/frame_{frame:06d}.jpg" '
                f'width="{FRAME_WIDTH}" height="{FRAME_HEIGHT}">\n'
            )
            for _ in range(PEOPLE_PER_FRAME):
                counts, crop_w, crop_h = blobs[rng.integers(len(blobs))]
                left = int(rng.integers(0, FRAME_WIDTH - crop_w))
                top = int(rng.integers(0, FRAME_HEIGHT - crop_h))
                helmet = bool(rng.random() < 0.7)
                out.write(
                    f'    <mask label="person" source="manual" occluded="0" rle="{counts}" '
                    f'left="{left}" top="{top}" width="{crop_w}" height="{crop_h}" z_order="0">\n'
                    f'      <attribute name="has_helmet">{str(helmet).lower()}</attribute>\n'
                    "    </mask>\n"
                )
                head_w = crop_w * 0.3
                out.write(
                    f'    <box label="helmet" source="manual" occluded="0" '
                    f'xtl="{left + crop_w / 2 - head_w / 2:.2f}" ytl="{top:.2f}" '
                    f'xbr="{left + crop_w / 2 + head_w / 2:.2f}" ybr="{top + head_w:.2f}" '
                    'z_order="1">\n    </box>\n'
                )
                shapes += 2
            out.write("  </image>\n")
            frame += 1
        out.write("</annotations>\n")
    return shapes


def _person_blob(rng: np.random.Generator) -> tuple[str, int, int]:
    """CVAT RLE of a standing person (head, torso, arms, two legs) in a crop, maybe loose."""
    height = int(rng.integers(160, 320))
    width = int(height * rng.uniform(0.35, 0.5))
    margin = int(rng.integers(0, 12))  # CVAT crops are not always tight
    crop_h, crop_w = height + 2 * margin, width + 2 * margin
    ys, xs = np.mgrid[0:crop_h, 0:crop_w]
    y, x = ys - margin, xs - margin
    centre = width / 2 + rng.uniform(-3, 3)
    head_r = height * 0.07
    head = (x - centre) ** 2 + (y - head_r * 1.1) ** 2 <= head_r**2
    torso = (abs(x - centre) <= width * 0.25) & (y >= head_r * 2.1) & (y <= height * 0.55)
    arm_swing = rng.uniform(0.0, 0.12) * width
    arms = (
        (abs(abs(x - centre) - width * 0.33 - arm_swing * (y / height)) <= width * 0.07)
        & (y >= head_r * 2.3)
        & (y <= height * 0.5)
    )
    stride = rng.uniform(0.05, 0.15) * width
    leg_offset = width * 0.12 + stride * (y - height * 0.55) / height
    legs = (
        (abs(abs(x - centre) - leg_offset) <= width * 0.09)
        & (y > height * 0.55)
        & (y < height)
    )
    mask = head | torso | arms | legs
    return rle.to_string(rle.encode(mask)), crop_w, crop_h


def _read_and_measure(path: str) -> dict:
    """Runs in the spawned child: read the export and report time and peak RSS."""
    from hoban_pipelines.cvat.reader import SHAPE_TAGS, read_export

    started = time.perf_counter()
    export = read_export(path)
    seconds = time.perf_counter() - started
    shapes = sum(export.element_counts[tag] for tag in SHAPE_TAGS)
    # ru_maxrss is in KiB on Linux.
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "shapes": shapes,
        "seconds": round(seconds, 3),
        "shapes_per_s": round(shapes / seconds, 1),
        "peak_rss_mb": round(peak_rss_mb, 1),
    }


if __name__ == "__main__":
    print(json.dumps(run(float(sys.argv[1]) if len(sys.argv) > 1 else 20.0), indent=2))
