"""The user's CCTV snapshots and their manual labelling ("go2k").

Picks snapshot timestamps per camera, chooses which of them were labelled, deals the
labelled ones into four CVAT parts (part 2 as masks, the others as boxes, with the planted
recurring false boxes of the user's pre-annotations), and writes the snapshots, the four
CVAT exports and the ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hoban_pipelines.cvat.writer import BoxShape, ImageEntry, LabelSpec, MaskShape, write_images_export
from hoban_pipelines.demo.crew import DAY, HOUR, SITE_DAYS, file_stamp, iso_time
from hoban_pipelines.demo.profiles import SiteProfile
from hoban_pipelines.demo.render import CLASSES, PlacedWorker, SiteWorld
from hoban_pipelines.demo.scene import (
    CAMERAS,
    FRAME_HEIGHT,
    FRAME_WIDTH,
    PLANT_JITTER,
    camera_index,
)
from hoban_pipelines.demo.seeding import Stream, stream_rng

PARTS = (1, 2, 3, 4)
MASK_PART = 2
BOX_PARTS = (1, 3, 4)
CVAT_LABELS = [LabelSpec(CLASSES[0], color="#33ddff"), LabelSpec(CLASSES[1], color="#fa3253")]
NEGATIVE_RATE = 0.1  # labelled snapshots taken while the site is empty (lunch)
PLANTED_PRESENCE = 0.75  # share of a camera's box-part frames in which each spot fires
# Boxes overlapping this much are "the same spot" when keeping real workers from recurring:
# looser than any recurrence rule the pipeline would use, so the guarantee carries over.
RECURRENCE_IOU = 0.2
MASK_PADDING_RATE = 0.35  # masks whose crop is not the tight box

_LABELLED_WINDOWS = ((8 * HOUR, 11 * HOUR + 50 * 60), (13 * HOUR + 15 * 60, 17 * HOUR + 30 * 60))
_LUNCH_WINDOW = (12 * HOUR + 5 * 60, 12 * HOUR + 55 * 60)  # everyone is away (see crew.LUNCH)
_SNAPSHOT_WINDOW = (7 * HOUR + 45 * 60, 17 * HOUR + 45 * 60)
_LABELLED_GAP = 90  # s between labelled snapshots (except near-duplicates)
_SNAPSHOT_GAP = 30


@dataclass
class Snapshot:
    camera: str
    t: int
    labelled: bool
    group: int | None = None  # near-duplicate group
    parts: list[int] = field(default_factory=list)
    planted: dict[int, list[tuple[float, float, float, float]]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The path relative to ``snapshots/``, which is also the CVAT image name."""
        return f"{self.camera}/{self.camera}_{file_stamp(self.t)}.jpg"


@dataclass(frozen=True)
class Conflict:
    name: str
    home_part: int
    other_part: int
    worker_id: int


@dataclass
class Labelling:
    snapshots: list[Snapshot]
    groups: list[list[Snapshot]]
    duplicates: list[Snapshot]
    conflict: Conflict


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter)


class _LabelledPicker:
    """Chooses labelled timestamps of one camera so that no real worker recurs at one spot.

    The unit is a labelled frame or a whole near-duplicate group. Afterwards every real box
    overlaps (IoU >= RECURRENCE_IOU) real boxes of at most one other unit, and a group's
    boxes overlap none outside the group: a real worker's spot shows up in at most two
    labelled images, or in one near-duplicate group, while a planted spot shows up in most.
    """

    def __init__(self, world: SiteWorld, camera: str, rng: np.random.Generator,
                 taken: set[int]) -> None:
        self._world, self._camera, self._rng, self._taken = world, camera, rng, taken
        self._boxes = np.zeros((0, 4))
        self._in_group = np.zeros(0, bool)  # the box belongs to a near-duplicate group
        self._other_units = np.zeros(0, int)  # other units with a box on the same spot

    def _try_accept(self, times: list[int]) -> bool:
        boxes = np.array([w.box for t in times for w in self._world.layout(self._camera, t)],
                         np.float64).reshape(-1, 4)
        is_group = len(times) > 1
        same_spot = _iou_matrix(self._boxes, boxes) >= RECURRENCE_IOU  # (existing, candidate)
        touched = same_spot.any(axis=1)
        if touched.any() and (is_group or self._in_group[touched].any()
                              or (self._other_units[touched] >= 1).any()):
            return False
        # Each existing box is one unit, so a candidate box touching two boxes may touch two units.
        if (same_spot.sum(axis=0) >= 2).any():
            return False
        self._other_units = np.concatenate([self._other_units + touched, same_spot.sum(axis=0)])
        self._boxes = np.concatenate([self._boxes, boxes])
        self._in_group = np.concatenate([self._in_group, np.full(len(boxes), is_group)])
        self._taken.update(times)
        return True

    def _free(self, t: int, gap: int) -> bool:
        return all(abs(t - other) >= gap for other in self._taken)

    def pick_negative(self) -> int:
        for _ in range(10_000):
            t = int(self._rng.integers(SITE_DAYS)) * DAY + int(self._rng.integers(*_LUNCH_WINDOW))
            if self._free(t, _LABELLED_GAP):
                if self._world.layout(self._camera, t):
                    raise RuntimeError(f"{self._camera}: workers on site at lunch, t={t}")
                self._taken.add(t)
                return t
        raise RuntimeError(f"{self._camera}: no free lunch-time slot for a negative snapshot")

    def pick_positive(self, group_size: int) -> list[int]:
        """One labelled timestamp with workers, or a near-duplicate group of them (1-3 s apart)."""
        for _ in range(20_000):
            window = _LABELLED_WINDOWS[int(self._rng.integers(len(_LABELLED_WINDOWS)))]
            start = int(self._rng.integers(SITE_DAYS)) * DAY + int(self._rng.integers(*window))
            times = [start]
            for _ in range(group_size - 1):
                times.append(times[-1] + int(self._rng.integers(1, 4)))
            if not all(self._free(t, _LABELLED_GAP) for t in times):
                continue
            if not all(self._world.layout(self._camera, t) for t in times):
                continue
            if self._try_accept(times):
                return times
        raise RuntimeError(f"{self._camera}: could not find enough distinct labelled frames")


def plan_snapshots(world: SiteWorld, profile: SiteProfile) -> tuple[list[Snapshot], list[list[Snapshot]]]:
    """Snapshot timestamps of both cameras, which are labelled, and the near-duplicate groups."""
    snapshots: list[Snapshot] = []
    groups: list[list[Snapshot]] = []
    for cam_number, camera in enumerate(CAMERAS):
        rng = stream_rng(world.seed, Stream.SNAPSHOT_SCHEDULE, camera_index(camera))
        taken: set[int] = set()
        picker = _LabelledPicker(world, camera, rng, taken)
        # Groups alternate between cameras, so both cameras get some when there are several.
        labelled_groups = _share(profile.labelled_near_duplicate_groups, cam_number)
        unlabelled_groups = _share(profile.unlabelled_near_duplicate_groups, cam_number)
        negatives = max(1, round(NEGATIVE_RATE * profile.labelled_per_camera))
        labelled = [Snapshot(camera, picker.pick_negative(), True) for _ in range(negatives)]
        for _ in range(labelled_groups):
            times = picker.pick_positive(group_size=int(rng.integers(2, 4)))
            group = [Snapshot(camera, t, True, group=len(groups)) for t in times]
            groups.append(group)
            labelled.extend(group)
        while len(labelled) < profile.labelled_per_camera:
            labelled.append(Snapshot(camera, picker.pick_positive(group_size=1)[0], True))
        if len(labelled) > profile.labelled_per_camera:
            raise ValueError(f"profile {profile.name}: too many near-duplicates for the labelled set")

        unlabelled: list[Snapshot] = []
        for _ in range(unlabelled_groups):
            times = _free_times(rng, taken, group_size=int(rng.integers(2, 4)))
            group = [Snapshot(camera, t, False, group=len(groups)) for t in times]
            groups.append(group)
            unlabelled.extend(group)
        while len(labelled) + len(unlabelled) < profile.snapshots_per_camera:
            unlabelled.extend(Snapshot(camera, t, False) for t in _free_times(rng, taken, 1))
        snapshots.extend(labelled + unlabelled)
    snapshots.sort(key=lambda s: s.name)
    return snapshots, groups


def _share(total: int, cam_number: int) -> int:
    """Camera ``cam_number``'s share when ``total`` items alternate between the cameras."""
    return len(range(cam_number, total, len(CAMERAS)))


def _free_times(rng: np.random.Generator, taken: set[int], group_size: int) -> list[int]:
    for _ in range(10_000):
        start = int(rng.integers(SITE_DAYS)) * DAY + int(rng.integers(*_SNAPSHOT_WINDOW))
        times = [start]
        for _ in range(group_size - 1):
            times.append(times[-1] + int(rng.integers(1, 4)))
        if all(abs(t - other) >= _SNAPSHOT_GAP for t in times for other in taken):
            taken.update(times)
            return times
    raise RuntimeError("no free snapshot timestamp left")


def assign_parts(world: SiteWorld, profile: SiteProfile, snapshots: list[Snapshot],
                 groups: list[list[Snapshot]]) -> Labelling:
    """Deal labelled snapshots into the four parts, add cross-part duplicates, the one
    conflict, and the planted false boxes."""
    rng = stream_rng(world.seed, Stream.LABELLING)
    labelled = [s for s in snapshots if s.labelled]
    units: list[list[Snapshot]] = [g for g in groups if g[0].labelled]
    units += [[s] for s in labelled if s.group is None]
    part_sizes = dict.fromkeys(PARTS, 0)
    for index in rng.permutation(len(units)):
        part = min(PARTS, key=lambda p: (part_sizes[p], p))
        for snapshot in units[index]:
            snapshot.parts.append(part)
        part_sizes[part] += len(units[index])

    candidates = [s for s in labelled if s.group is None and world.layout(s.camera, s.t)]
    order = [candidates[i] for i in rng.permutation(len(candidates))]
    if len(order) < profile.cross_part_duplicates + 1:
        raise ValueError(f"profile {profile.name}: too few labelled frames for the duplicates")
    conflict_image = next(s for s in order if s.parts[0] != MASK_PART)
    others = [p for p in BOX_PARTS if p != conflict_image.parts[0]]
    conflict_image.parts.append(others[int(rng.integers(len(others)))])
    conflict = Conflict(conflict_image.name, conflict_image.parts[0], conflict_image.parts[1],
                        world.layout(conflict_image.camera, conflict_image.t)[0].worker_id)

    duplicates = [s for s in order if s is not conflict_image][: profile.cross_part_duplicates]
    for number, snapshot in enumerate(duplicates):
        home = snapshot.parts[0]
        # The first duplicate pairs a box part with the mask part, so box/mask agreement is
        # exercised; the rest pair box parts.
        if number == 0:
            choices = [MASK_PART] if home != MASK_PART else list(BOX_PARTS)
        else:
            choices = [p for p in BOX_PARTS if p != home] if home != MASK_PART else list(BOX_PARTS)
        snapshot.parts.append(choices[int(rng.integers(len(choices)))])
    for snapshot in labelled:
        snapshot.parts.sort()
    _plant_false_boxes(world, labelled)
    return Labelling(snapshots, groups, duplicates, conflict)


def _plant_false_boxes(world: SiteWorld, labelled: list[Snapshot]) -> None:
    """The pre-annotator's recurring boxes on static clutter, in the box parts only. Images
    that also appear in the mask part get none, so their copies carry identical labels."""
    for camera in CAMERAS:
        spots = world.scene(camera).planted_spots
        frames = [s for s in labelled if s.camera == camera and MASK_PART not in s.parts]
        rng = stream_rng(world.seed, Stream.PLANTED_BOXES, camera_index(camera))
        for spot_number, spot in enumerate(spots):
            absent = set(rng.choice(len(frames), int(len(frames) * (1 - PLANTED_PRESENCE)),
                                    replace=False).tolist())
            for index, snapshot in enumerate(frames):
                if index in absent:
                    continue
                # Seeded by image and spot, so an image's copies in two parts agree.
                jitter_rng = stream_rng(world.seed, Stream.PLANTED_BOXES, camera_index(camera),
                                        snapshot.t, spot_number)
                jitter = jitter_rng.uniform(-PLANT_JITTER, PLANT_JITTER, 4)
                box = tuple(round(float(c + j), 2) for c, j in zip(spot, jitter))
                for part in snapshot.parts:
                    snapshot.planted.setdefault(part, []).append(box)


def _mask_crop(worker: PlacedWorker, rng: np.random.Generator) -> tuple[np.ndarray, int, int]:
    """The worker's mask crop; some crops are padded by 1-3 px so they are not tight."""
    x1, y1, x2, y2 = worker.box
    if rng.random() >= MASK_PADDING_RATE:
        return worker.mask, x1, y1
    pad = rng.integers(0, 4, 4)
    pad[int(rng.integers(4))] = int(rng.integers(1, 4))
    left, top = max(0, x1 - int(pad[0])), max(0, y1 - int(pad[1]))
    right, bottom = min(FRAME_WIDTH, x2 + int(pad[2])), min(FRAME_HEIGHT, y2 + int(pad[3]))
    crop = np.zeros((bottom - top, right - left), bool)
    crop[y1 - top:y2 - top, x1 - left:x2 - left] = worker.mask
    return crop, left, top


def _labels_in_part(snapshot: Snapshot, part: int, conflict: Conflict,
                    workers: tuple[PlacedWorker, ...]) -> list[tuple[PlacedWorker, str]]:
    """Each worker with the label written in ``part``: the true one, except for the
    conflicting box in the conflict image's second part."""
    in_conflict_copy = snapshot.name == conflict.name and part == conflict.other_part
    return [
        (worker, CLASSES[1 - worker.cls if in_conflict_copy and worker.worker_id == conflict.worker_id
                         else worker.cls])
        for worker in workers
    ]


def write_cvat_exports(world: SiteWorld, labelling: Labelling, out_dir: Path) -> dict:
    out_dir.mkdir(parents=True)
    summary = {}
    for part in PARTS:
        members = sorted((s for s in labelling.snapshots if part in s.parts), key=lambda s: s.name)
        images, counts = [], {"images": len(members), "boxes": 0, "masks": 0, "planted_false": 0}
        for image_id, snapshot in enumerate(members):
            workers = world.layout(snapshot.camera, snapshot.t)
            shapes: list[BoxShape | MaskShape] = []
            for worker, label in _labels_in_part(snapshot, part, labelling.conflict, workers):
                if part == MASK_PART:
                    rng = stream_rng(world.seed, Stream.MASK_CROPS, camera_index(snapshot.camera),
                                     snapshot.t, worker.worker_id)
                    crop, left, top = _mask_crop(worker, rng)
                    shapes.append(MaskShape(label, crop, left, top))
                    counts["masks"] += 1
                else:
                    shapes.append(BoxShape(label, *map(float, worker.box)))
                    counts["boxes"] += 1
            for box in snapshot.planted.get(part, []):
                shapes.append(BoxShape(CLASSES[0], *box))
                counts["planted_false"] += 1
            # Pre-annotations and manual boxes come interleaved, not planted ones last.
            shapes.sort(key=_shape_position)
            images.append(ImageEntry(image_id, snapshot.name, FRAME_WIDTH, FRAME_HEIGHT, shapes))
        name = f"go2k_part{part}"
        write_images_export(out_dir / f"{name}.xml", task_name=name, labels=CVAT_LABELS,
                            images=images, task_id=part)
        summary[f"{name}.xml"] = counts
    return summary


def _shape_position(shape: BoxShape | MaskShape) -> tuple[float, float]:
    if isinstance(shape, MaskShape):
        return (float(shape.left), float(shape.top))
    return (shape.xtl, shape.ytl)


def ground_truth(world: SiteWorld, labelling: Labelling) -> dict:
    images = []
    for snapshot in labelling.snapshots:
        workers = world.layout(snapshot.camera, snapshot.t)
        images.append({
            "name": snapshot.name,
            "camera": snapshot.camera,
            "timestamp": iso_time(snapshot.t),
            "width": FRAME_WIDTH,
            "height": FRAME_HEIGHT,
            "parts": snapshot.parts,
            "boxes": [{"cls": w.cls, "xyxy": list(w.box)} for w in sorted(workers, key=lambda w: w.box)],
            "planted_false": [{"part": part, "xyxy": list(box)}
                              for part in sorted(snapshot.planted) for box in snapshot.planted[part]],
        })
    conflict = labelling.conflict
    snapshot = next(s for s in labelling.snapshots if s.name == conflict.name)
    worker = next(w for w in world.layout(snapshot.camera, snapshot.t) if w.worker_id == conflict.worker_id)
    return {
        "classes": list(CLASSES),
        "box_convention": "pixel edges [min_x, min_y, max_x + 1, max_y + 1]",
        "images": images,
        "conflicts": [{
            "name": conflict.name,
            "xyxy": list(worker.box),
            "true_cls": worker.cls,
            "labels": [
                {"part": conflict.home_part, "cls": worker.cls},
                {"part": conflict.other_part, "cls": 1 - worker.cls},
            ],
        }],
        "cross_part_duplicates": sorted(s.name for s in labelling.duplicates),
        "near_duplicate_groups": [[s.name for s in group] for group in labelling.groups],
    }


def write_snapshots(world: SiteWorld, snapshots: list[Snapshot], out_dir: Path) -> None:
    for camera in CAMERAS:
        (out_dir / camera).mkdir(parents=True)
    for snapshot in snapshots:
        data, _ = world.encode(snapshot.camera, snapshot.t)
        (out_dir / snapshot.name).write_bytes(data)
