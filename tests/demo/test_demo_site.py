"""The demo site generator: determinism, exact ground truth, and the planted quirks the
pipeline's tests rely on (recurring false boxes, cross-part duplicates, one conflict,
frozen captures, static stretches)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from defusedxml import ElementTree

from hoban_pipelines.cvat import rle
from hoban_pipelines.demo import PROFILES, generate_site
from hoban_pipelines.demo.base_dataset import image_stem, render_base_image
from hoban_pipelines.demo.render import SiteWorld
from hoban_pipelines.demo.scene import PLANT_JITTER

SEED = 7
PROFILE = "small"
CLASSES = ["person_with_helmet", "person_without_helmet"]
FRAME_W, FRAME_H = 1920, 1080


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("site")
    return out, generate_site(out, seed=SEED, profile=PROFILE)


@pytest.fixture(scope="module")
def root(site) -> Path:
    return site[0]


@pytest.fixture(scope="module")
def world() -> SiteWorld:
    return SiteWorld(SEED)


@pytest.fixture(scope="module")
def truth(root) -> dict:
    return json.loads((root / "ground_truth" / "go2k_labels.json").read_text())


@pytest.fixture(scope="module")
def captures(root) -> list[dict]:
    return json.loads((root / "ground_truth" / "captures.json").read_text())["frames"]


@pytest.fixture(scope="module")
def parts(root) -> dict[int, dict[str, list[dict]]]:
    """part -> image name -> shapes, each {"label", "xyxy" (floats)} and for masks the mask."""
    return {part: _read_part(root / "cvat_exports" / f"go2k_part{part}.xml") for part in (1, 2, 3, 4)}


def _read_part(path: Path) -> dict[str, list[dict]]:
    tree = ElementTree.parse(path)
    assert tree.getroot().findtext("version") == "1.1"
    images: dict[str, list[dict]] = {}
    for image in tree.getroot().iter("image"):
        assert (int(image.get("width")), int(image.get("height"))) == (FRAME_W, FRAME_H)
        shapes = []
        for box in image.findall("box"):
            xyxy = [float(box.get(k)) for k in ("xtl", "ytl", "xbr", "ybr")]
            shapes.append({"label": box.get("label"), "xyxy": xyxy})
        for mask in image.findall("mask"):
            width, height = int(mask.get("width")), int(mask.get("height"))
            counts = [int(c) for c in mask.get("rle").split(",")]
            assert sum(counts) == width * height
            crop = rle.decode(counts, width, height)
            ys, xs = np.nonzero(crop)
            left, top = int(mask.get("left")), int(mask.get("top"))
            xyxy = [left + xs.min(), top + ys.min(), left + xs.max() + 1, top + ys.max() + 1]
            shapes.append({"label": mask.get("label"), "xyxy": [float(v) for v in xyxy],
                           "crop": crop, "left": left, "top": top})
        assert image.get("name") not in images, "an image is listed twice in one part"
        images[image.get("name")] = shapes
    return images


def _digests(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*")) if path.is_file()
    }


def _site_seconds(image: dict) -> int:
    """The site clock (seconds since 2026-02-11 00:00) of a ground-truth image."""
    return int((datetime.fromisoformat(image["timestamp"]) - datetime(2026, 2, 11)).total_seconds())


def _gray(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float32)


def _block_max_mad(a: np.ndarray, b: np.ndarray) -> float:
    """Mean abs diff over a 32x18 grid of blocks, the largest block (the dedup metric)."""
    diff = np.abs(a - b)
    return float(diff.reshape(18, diff.shape[0] // 18, 32, diff.shape[1] // 32).mean(axis=(1, 3)).max())


def _assert_disjoint(boxes) -> None:
    """Workers never overlap, so every worker's pixels are its own."""
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1]), (a, b)


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes_and_another_seed_differs(root, tmp_path):
    again = tmp_path / "again"
    again.mkdir()
    generate_site(again, seed=SEED, profile=PROFILE)
    first, second = _digests(root), _digests(again)
    assert first == second

    other = tmp_path / "other"
    other.mkdir()
    generate_site(other, seed=SEED + 1, profile=PROFILE)
    third = _digests(other)
    images = [name for name in first if name.startswith("base_dataset/images/")]
    assert images and all(first[name] != third.get(name) for name in images)
    assert first["cvat_exports/go2k_part1.xml"] != third["cvat_exports/go2k_part1.xml"]
    assert {n for n in first if n.startswith("snapshots/")} != {n for n in third if n.startswith("snapshots/")}


def test_summary_is_written_and_counts_the_files(site, truth, captures):
    root, summary = site
    assert json.loads((root / "site.json").read_text()) == summary
    assert summary["seed"] == SEED and summary["profile"] == PROFILE
    profile = PROFILES[PROFILE]
    counts = summary["counts"]
    snapshot_files = sorted(p.relative_to(root / "snapshots").as_posix()
                            for p in (root / "snapshots").rglob("*.jpg"))
    assert counts["snapshots"] == len(snapshot_files) == 2 * profile.snapshots_per_camera
    assert snapshot_files == sorted(image["name"] for image in truth["images"])
    assert counts["snapshots_labelled"] == 2 * profile.labelled_per_camera
    assert counts["captures"]["frames"] == len(captures) == len(list((root / "captures").rglob("*.jpg")))
    assert len(captures) == 4 * profile.captures_per_camera_per_day
    assert counts["base_dataset"]["train_images"] == profile.base_train_images


def test_unknown_profile_is_rejected_with_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="demo.*small"):
        generate_site(tmp_path, profile="huge")


def test_output_directory_must_be_empty(tmp_path):
    (tmp_path / "leftover.txt").write_text("x")
    with pytest.raises(FileExistsError):
        generate_site(tmp_path, profile=PROFILE)


def test_demo_modules_do_not_import_dagster():
    code = "import sys, hoban_pipelines.demo, hoban_pipelines.cvat.writer; print('dagster' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# --------------------------------------------------------------------------- snapshots and CVAT


def test_frames_are_1080p_and_named_by_camera_and_time(root, truth, captures):
    for image in truth["images"]:
        frame = cv2.imread(str(root / "snapshots" / image["name"]), cv2.IMREAD_GRAYSCALE)
        assert frame.shape == (FRAME_H, FRAME_W)
        stamp = datetime.fromisoformat(image["timestamp"])
        assert image["name"] == f"{image['camera']}/{image['camera']}_{stamp:%Y%m%d_%H%M%S}.jpg"
        assert stamp.date().isoformat() in ("2026-02-11", "2026-02-12")
        assert 7 <= stamp.hour < 19
    for frame in captures:
        image = cv2.imread(str(root / "captures" / frame["file"]), cv2.IMREAD_GRAYSCALE)
        assert image.shape == (FRAME_H, FRAME_W)


def test_ground_truth_boxes_are_the_rendered_workers(truth, world):
    for image in truth["images"]:
        workers = world.layout(image["camera"], _site_seconds(image))
        assert sorted((w.cls, list(w.box)) for w in workers) == sorted(
            (box["cls"], box["xyxy"]) for box in image["boxes"])
        _assert_disjoint([box["xyxy"] for box in image["boxes"]])
        for worker in workers:
            x1, y1, x2, y2 = worker.box
            ys, xs = np.nonzero(worker.mask)  # the box is the mask's tight box
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (0, 0, x2 - x1, y2 - y1)


def test_cvat_parts_hold_the_true_labels_plus_planted_boxes(truth, parts):
    conflict = truth["conflicts"][0]
    by_name = {image["name"]: image for image in truth["images"]}
    for part, images in parts.items():
        for name, shapes in images.items():
            image = by_name[name]
            assert part in image["parts"]
            expected = [(CLASSES[box["cls"]], [float(v) for v in box["xyxy"]]) for box in image["boxes"]]
            if name == conflict["name"]:
                wrong = next(label["cls"] for label in conflict["labels"] if label["part"] == part)
                expected = [(CLASSES[wrong] if xyxy == conflict["xyxy"] else label, xyxy)
                            for label, xyxy in expected]
            expected += [(CLASSES[0], planted["xyxy"]) for planted in image["planted_false"]
                         if planted["part"] == part]
            actual = [(shape["label"], shape["xyxy"]) for shape in shapes]
            assert sorted(actual) == sorted(expected), (part, name)
        labelled_here = {image["name"] for image in truth["images"] if part in image["parts"]}
        assert set(images) == labelled_here
    assert all("crop" in shape for shapes in parts[2].values() for shape in shapes)
    assert all("crop" not in shape for part in (1, 3, 4) for shapes in parts[part].values() for shape in shapes)


def test_masks_decode_to_the_renderers_worker_masks(truth, parts, world):
    by_name = {image["name"]: image for image in truth["images"]}
    padded = 0
    for name, shapes in parts[2].items():
        image = by_name[name]
        workers = {tuple(w.box): w for w in world.layout(image["camera"], _site_seconds(image))}
        assert len(shapes) == len(workers)
        for shape in shapes:
            worker = workers[tuple(int(v) for v in shape["xyxy"])]
            x1, y1, x2, y2 = worker.box
            crop, left, top = shape["crop"], shape["left"], shape["top"]
            padded += crop.shape != worker.mask.shape
            inside = crop[y1 - top:y2 - top, x1 - left:x2 - left]
            assert np.array_equal(inside, worker.mask)
            assert crop.sum() == worker.mask.sum()  # nothing outside the tight box
    assert padded > 0, "some mask crops should be padded, not tight"


def test_planted_false_boxes_are_small_fixed_and_recurring(truth, world):
    per_spot: Counter = Counter()
    box_part_frames: Counter = Counter()
    for image in truth["images"]:
        if set(image["parts"]) & {1, 3, 4} and 2 not in image["parts"]:
            box_part_frames[image["camera"]] += 1
        spots = world.scene(image["camera"]).planted_spots
        seen = set()
        for planted in image["planted_false"]:
            assert planted["part"] in (1, 3, 4)
            x1, y1, x2, y2 = planted["xyxy"]
            assert (x2 - x1) / FRAME_W < 0.03 and (y2 - y1) / FRAME_H < 0.05
            spot = next(s for s in spots
                        if all(abs(a - b) <= PLANT_JITTER + 1e-6 for a, b in zip(planted["xyxy"], s)))
            seen.add((image["camera"], spot))
            for box in image["boxes"]:  # never on top of a real worker
                assert _iou(box["xyxy"], planted["xyxy"]) == 0
        per_spot.update(seen)
    for camera, frames in box_part_frames.items():
        for spot in world.scene(camera).planted_spots:
            assert per_spot[(camera, spot)] >= max(3, 0.7 * frames), (camera, spot)


def test_real_workers_do_not_recur_at_a_fixed_spot(truth):
    """A real worker's spot is in at most two labelled images of a camera, or in one
    near-duplicate group only, so a "recurring at one spot" rule removes planted boxes only."""
    group_of = {name: i for i, group in enumerate(truth["near_duplicate_groups"]) for name in group}
    labelled = [image for image in truth["images"] if image["parts"]]
    for image in labelled:
        unit = group_of.get(image["name"], image["name"])
        for box in image["boxes"]:
            matching_units = {group_of.get(other["name"], other["name"]) for other in labelled
                              if other["camera"] == image["camera"]
                              and any(_iou(box["xyxy"], o["xyxy"]) >= 0.2 for o in other["boxes"])}
            others = matching_units - {unit}
            assert len(others) <= 1, (image["name"], box, others)
            if image["name"] in group_of or any(other in group_of.values() for other in others):
                assert not others, (image["name"], box, others)


def test_duplicates_across_parts_agree_and_the_one_conflict_disagrees(truth, parts):
    multi = [image for image in truth["images"] if len(image["parts"]) > 1]
    conflict = truth["conflicts"][0]
    assert len(multi) == PROFILES[PROFILE].cross_part_duplicates + 1
    assert sorted(image["name"] for image in multi if image["name"] != conflict["name"]) == \
        truth["cross_part_duplicates"]
    for image in multi:
        copies = [{(s["label"], tuple(s["xyxy"])) for s in parts[part][image["name"]]}
                  for part in image["parts"]]
        assert len(copies) == 2
        if image["name"] == conflict["name"]:
            differing = copies[0] ^ copies[1]
            assert {box for _, box in differing} == {tuple(float(v) for v in conflict["xyxy"])}
            assert {label for label, _ in differing} == set(CLASSES)
            assert {label["cls"] for label in conflict["labels"]} == {0, 1}
        else:
            assert copies[0] == copies[1]
    assert any(2 in image["parts"] for image in multi), "a box part should share an image with the mask part"


def test_negatives_and_near_duplicates(truth):
    labelled = [image for image in truth["images"] if image["parts"]]
    negatives = [image for image in labelled if not image["boxes"]]
    assert 1 <= len(negatives) <= 0.2 * len(labelled)
    by_name = {image["name"]: image for image in truth["images"]}
    assert truth["near_duplicate_groups"]
    assert any(by_name[g[0]]["parts"] for g in truth["near_duplicate_groups"])
    assert any(not by_name[g[0]]["parts"] for g in truth["near_duplicate_groups"])
    for group in truth["near_duplicate_groups"]:
        stamps = [datetime.fromisoformat(by_name[name]["timestamp"]) for name in group]
        assert len({by_name[name]["camera"] for name in group}) == 1
        assert all(1 <= (b - a).total_seconds() <= 3 for a, b in zip(stamps, stamps[1:]))


def test_class_mix_leans_heavily_to_helmets(site):
    boxes = site[1]["counts"]["labelled_boxes"]
    share = boxes["person_without_helmet"] / (boxes["person_with_helmet"] + boxes["person_without_helmet"])
    assert 0.03 < share < 0.35


# --------------------------------------------------------------------------- base dataset


def test_base_dataset_labels_are_the_drawn_workers(root):
    data = yaml.safe_load((root / "base_dataset" / "data.yaml").read_text())
    assert data == {"train": "images/train", "val": "images/val",
                    "names": {0: "person_with_helmet", 1: "person_without_helmet"}}
    profile = PROFILES[PROFILE]
    backgrounds = 0
    for split, count in (("train", profile.base_train_images), ("val", profile.base_val_images)):
        assert len(list((root / "base_dataset" / "images" / split).glob("*.jpg"))) == count
        for index in range(count):
            stem = image_stem(split, index)
            rendered = render_base_image(SEED, split, index)
            height, width = rendered.image.shape[:2]
            on_disk = cv2.imread(str(root / "base_dataset" / "images" / split / f"{stem}.jpg"))
            assert on_disk.shape[:2] == (height, width)
            lines = (root / "base_dataset" / "labels" / split / f"{stem}.txt").read_text().splitlines()
            backgrounds += not lines
            labelled = []
            for line in lines:
                cls, cx, cy, w, h = line.split()
                assert all(len(v.split(".")[1]) == 6 for v in (cx, cy, w, h))
                cx, cy, w, h = float(cx) * width, float(cy) * height, float(w) * width, float(h) * height
                labelled.append((int(cls), [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]))
            assert len(labelled) == len(rendered.workers)
            _assert_disjoint([worker.box for worker in rendered.workers])
            for (cls, xyxy), worker in zip(labelled, rendered.workers):
                assert cls == worker.cls
                assert np.abs(np.array(xyxy) - np.array(worker.box)).max() <= 1.0
                ys, xs = np.nonzero(worker.mask)  # the box is the mask's tight box
                x1, y1, x2, y2 = worker.box
                assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (0, 0, x2 - x1, y2 - y1)
    assert backgrounds >= 1


# --------------------------------------------------------------------------- captures


def test_frozen_captures_repeat_their_source_as_recorded(root, captures):
    kinds = Counter(frame["copy"] for frame in captures)
    assert kinds["bytes"] > 0 and kinds["reencode"] > 0
    by_file = {frame["file"]: frame for frame in captures}
    for frame in captures:
        if frame["frozen_of"] is None:
            assert frame["copy"] is None
            continue
        source = by_file[frame["frozen_of"]]
        assert source["frozen_of"] is None and source["camera"] == frame["camera"]
        assert source["timestamp"] < frame["timestamp"]
        data = (root / "captures" / frame["file"]).read_bytes()
        source_data = (root / "captures" / source["file"]).read_bytes()
        if frame["copy"] == "bytes":
            assert data == source_data
        else:
            assert data != source_data
            assert _block_max_mad(_gray(root / "captures" / frame["file"]),
                                  _gray(root / "captures" / source["file"])) <= 1.5
        # A frozen run is contiguous: only frozen copies of the same source lie between.
        same_camera = [f for f in captures if f["camera"] == frame["camera"]]
        between = [f for f in same_camera if source["timestamp"] < f["timestamp"] < frame["timestamp"]]
        assert all(f["frozen_of"] == frame["frozen_of"] for f in between)


def test_static_stretches_are_live_not_frozen(root, captures):
    static = [frame for frame in captures if frame["static"]]
    assert static
    for frame in static:
        assert frame["frozen_of"] is None
        same_camera = [f for f in captures if f["camera"] == frame["camera"] and f["timestamp"] < frame["timestamp"]]
        previous = same_camera[-1]
        if previous["frozen_of"] is None:
            a, b = root / "captures" / frame["file"], root / "captures" / previous["file"]
            assert a.read_bytes() != b.read_bytes()
            assert _block_max_mad(_gray(a), _gray(b)) >= 2.5  # sensor noise alone is this far


def test_capture_schedule_has_bursts_and_snapshot_timestamps(root, captures, truth):
    per_camera: dict[str, list[datetime]] = defaultdict(list)
    for frame in captures:
        stamp = datetime.fromisoformat(frame["timestamp"])
        assert frame["file"] == f"{frame['camera']}/{stamp:%Y%m%d}/{frame['camera']}_{stamp:%Y%m%d_%H%M%S}.jpg"
        per_camera[frame["camera"]].append(stamp)
    gaps = [(b - a).total_seconds() for stamps in per_camera.values() for a, b in zip(stamps, stamps[1:])]
    assert min(gaps) >= 1 and sum(gap <= 5 for gap in gaps) >= 2
    snapshot_stamps = {(image["camera"], image["timestamp"]): image["name"] for image in truth["images"]}
    matches = [frame for frame in captures if (frame["camera"], frame["timestamp"]) in snapshot_stamps]
    assert matches and all(frame["snapshot"] == snapshot_stamps[(frame["camera"], frame["timestamp"])]
                           for frame in matches)
    assert sum(frame["snapshot"] is not None for frame in captures) == len(matches)
    for frame in matches:  # the same second of the same camera is the same picture
        assert (root / "captures" / frame["file"]).read_bytes() == \
            (root / "snapshots" / frame["snapshot"]).read_bytes()
