"""The demo's simulated reviewer: one review task's pre-annotations corrected to the site's exact truth, exported
as CVAT exports a task, so ``make demo`` runs a review round end to end with nobody at CVAT.

A capture (``captures/<camera>/<file>``) is checked against the workers its pixels show: ``SiteWorld.layout`` at
the moment the frame was taken, or, for a frozen capture, at the moment of the frame it repeats (the site's
``ground_truth/captures.json`` records both). The reviewer applies the rules ``review.changes.compare_review``
reads back, to the truth instead of to the reviewed boxes. Pre boxes in descending score order (ties by their
order in the task) each claim the free true box of highest IoU among those allowed:

- kept as it is: a true box of its class at IoU >= MATCH_IOU;
- then, among the rest, relabelled (its box, the true label): a pre box with no true box of its class at IoU >=
  MATCH_IOU claims a true box of another class at IoU >= MATCH_IOU;
- then moved (replaced by the true box): a pre box with no true box of any class at IoU >= MATCH_IOU claims a
  true box of its class at MOVE_IOU <= IoU < MATCH_IOU;
- every other pre box is deleted, and every true box nobody claimed is added.

Every worker ``layout`` places is visible and labelled, however small: the go2k labels and the site's ground truth
label them all (no minimum size), so the reviewer adds every one. go2k images keep their hand labels. A box the
reviewer drew or relabelled carries source "manual" and its label's declared attribute defaults, as CVAT gives a
drawn box (the score attribute's default, 1).
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from datetime import datetime
from pathlib import Path, PurePosixPath

import numpy as np

from hoban_pipelines.cvat.reader import ANNOTATIONS_MEMBER, CvatBox, CvatImage, read_export
from hoban_pipelines.cvat.writer import AttributeSpec, BoxShape, ImageEntry, LabelSpec, write_images_export
from hoban_pipelines.demo.crew import SITE_EPOCH
from hoban_pipelines.demo.install import SITE_FILE
from hoban_pipelines.demo.render import CLASSES, SiteWorld
from hoban_pipelines.demo.snapshots import _iou_matrix

CAPTURES_PREFIX = "captures/"  # review packages name a capture captures/<camera>/<file>
GO2K_PREFIX = "go2k/"
CAPTURES_TRUTH = Path("ground_truth") / "captures.json"  # as generate_site writes it
SCORE = "score"  # the review packages' score attribute
MATCH_IOU = 0.5
MOVE_IOU = 0.1  # the evaluation stage's LOCALISATION_IOU: below it a box is on something else
CHANGES = ("kept", "relabelled", "moved", "deleted", "added")
DRAWN = "manual"  # CVAT's source of a box a person drew
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # a fixed member time: the same review gives the same zip


def review_package(task_xml: Path, out_zip: Path, site: Path, seed: int = 7) -> dict:
    """Review the task whose pre-annotations are ``task_xml`` (a review package's ``<task>.xml``) against the demo
    site in ``site`` (generated with ``seed``) and write its "CVAT for images 1.1" export to ``out_zip``.

    Returns what the reviewer did: ``task``, ``images``, the count of each of CHANGES, and ``per_image``, each image
    name's count of each change. Raises ValueError when ``site`` was generated with another seed or an image is
    neither a capture of that site nor a go2k image; FileNotFoundError when ``site`` is not a demo site."""
    task = read_export(task_xml)
    moments = _capture_moments(Path(site), seed)
    world = SiteWorld(seed)
    defaults = {label: {name: spec["default_value"] for name, spec in attributes.items()}
                for label, attributes in task.labels.items()}
    entries, per_image = [], {}
    for frame, image in enumerate(task.images):
        if image.name.startswith(GO2K_PREFIX):
            shapes, changes = [_as_written(box) for box in image.boxes], _tally(kept=len(image.boxes))
        else:
            camera, moment = _moment(image, moments, task.file, Path(site))
            truth = [(CLASSES[worker.cls], tuple(map(float, worker.box))) for worker in world.layout(camera, moment)]
            shapes, changes = _correct(image.boxes, truth, defaults)
        entries.append(ImageEntry(frame, image.name, image.width, image.height, shapes))
        per_image[image.name] = changes
    labels = [LabelSpec(label, [AttributeSpec(name, input_type=spec["input_type"], values=spec["values"],
                                              default=spec["default_value"], mutable=spec["mutable"])
                                for name, spec in attributes.items()])
              for label, attributes in task.labels.items()]
    _write_task_export(Path(out_zip), Path(task_xml).stem, labels, entries)
    return {"task": Path(task_xml).stem, "images": len(per_image),
            **{change: sum(counts[change] for counts in per_image.values()) for change in CHANGES},
            "per_image": per_image}


def _capture_moments(site: Path, seed: int) -> dict[str, tuple[str, int]]:
    """Each capture file's name -> (camera, the site time its pixels show)."""
    if not (site / SITE_FILE).is_file():
        raise FileNotFoundError(f"{site / SITE_FILE} is missing: {site} is not a demo site; pass the folder "
                                "generate_site wrote")
    made_with = json.loads((site / SITE_FILE).read_text())["seed"]
    if made_with != seed:
        raise ValueError(f"the demo site {site} was generated with seed {made_with}, not {seed}: its captures show "
                         f"another world. Pass seed={made_with}")
    frames = json.loads((site / CAPTURES_TRUTH).read_text())["frames"]
    taken = {frame["file"]: _site_time(frame["timestamp"]) for frame in frames}
    return {PurePosixPath(frame["file"]).name: (frame["camera"], taken[frame["frozen_of"] or frame["file"]])
            for frame in frames}


def _site_time(timestamp: str) -> int:
    """The site clock's seconds at an ISO timestamp (the inverse of ``crew.iso_time``)."""
    return int((datetime.fromisoformat(timestamp) - SITE_EPOCH).total_seconds())


def _moment(image: CvatImage, moments: dict[str, tuple[str, int]], task_file: Path, site: Path) -> tuple[str, int]:
    found = moments.get(PurePosixPath(image.name).name) if image.name.startswith(CAPTURES_PREFIX) else None
    if found is None:
        raise ValueError(f"{task_file}: image {image.name!r} is neither {GO2K_PREFIX}... nor a capture of the demo "
                         f"site {site}; give a package built from that site's captures")
    return found


def _correct(pre: list[CvatBox], truth: list[tuple[str, tuple[float, ...]]],
             defaults: dict[str, dict[str, str]]) -> tuple[list[BoxShape], dict[str, int]]:
    """The reviewed boxes of one capture (in the order of the pre boxes they come from, then the added ones) and
    the count of each change; the rules are the module docstring's."""
    iou = _iou_matrix(np.array([box.xyxy for box in pre], np.float64).reshape(-1, 4),
                      np.array([xyxy for _, xyxy in truth], np.float64).reshape(-1, 4))
    same = np.array([[box.label == label for label, _ in truth] for box in pre], bool).reshape(iou.shape)
    own_match, other_match = (same & (iou >= MATCH_IOU)), (~same & (iou >= MATCH_IOU))
    # a box without a score of its own has the attribute's default, as CVAT gives it
    order = sorted(range(len(pre)), key=lambda i: -float({**defaults[pre[i].label], **pre[i].attributes}[SCORE]))
    free = set(range(len(truth)))
    kept = _claim(order, iou, own_match, free)
    rest = [i for i in order if i not in kept]
    relabelled = _claim([i for i in rest if not own_match[i].any()], iou, other_match, free)
    unmatched = [i for i in rest if not (own_match[i].any() or other_match[i].any())]
    moved = _claim(unmatched, iou, same & (iou >= MOVE_IOU), free)
    shapes = []
    for i, box in enumerate(pre):
        if i in kept:
            shapes.append(_as_written(box))
        elif i in relabelled:
            shapes.append(_drawn(truth[relabelled[i]][0], box.xyxy, defaults))
        elif i in moved:
            shapes.append(_drawn(*truth[moved[i]], defaults))
    shapes += [_drawn(*truth[j], defaults) for j in sorted(free)]
    changes = _tally(kept=len(kept), relabelled=len(relabelled), moved=len(moved),
                     deleted=len(pre) - len(kept) - len(relabelled) - len(moved), added=len(free))
    return shapes, changes


def _claim(candidates: list[int], iou: np.ndarray, allowed: np.ndarray, free: set[int]) -> dict[int, int]:
    """Greedy one-to-one claims in ``candidates`` order: pre box -> the free true box of highest allowed IoU (ties
    by the later true box, as pycocotools breaks them); claimed boxes leave ``free``."""
    claimed = {}
    for i in candidates:
        options = [j for j in free if allowed[i, j]]
        if options:
            claimed[i] = max(options, key=lambda j: (iou[i, j], j))
            free.discard(claimed[i])
    return claimed


def _tally(**counts: int) -> dict[str, int]:
    return {change: counts.get(change, 0) for change in CHANGES}


def _as_written(box: CvatBox) -> BoxShape:
    """A box the reviewer left alone, as the task holds it."""
    return BoxShape(box.label, *box.xyxy, attributes=dict(box.attributes), source=box.source or DRAWN,
                    occluded=box.occluded, z_order=box.z_order)


def _drawn(label: str, xyxy: tuple[float, ...], defaults: dict[str, dict[str, str]]) -> BoxShape:
    return BoxShape(label, *xyxy, attributes=dict(defaults[label]), source=DRAWN)


def _write_task_export(out_zip: Path, task_name: str, labels: list[LabelSpec], images: list[ImageEntry]) -> None:
    """``annotations.xml`` at the root of a zip (CVAT's task export without images), renamed onto ``out_zip``."""
    with tempfile.TemporaryDirectory(dir=out_zip.parent, prefix=f".{out_zip.name}.") as staging:
        xml, archive = Path(staging) / ANNOTATIONS_MEMBER, Path(staging) / out_zip.name
        write_images_export(xml, task_name=task_name, labels=labels, images=images)
        with zipfile.ZipFile(archive, "w") as export:
            export.writestr(zipfile.ZipInfo(ANNOTATIONS_MEMBER, date_time=_ZIP_TIME), xml.read_bytes(),
                            compress_type=zipfile.ZIP_DEFLATED)
        os.replace(archive, out_zip)
