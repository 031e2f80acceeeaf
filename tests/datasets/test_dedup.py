"""Near-duplicates and frozen frames (hoban_pipelines.datasets.near_duplicates) on the small demo site and on
synthetic data whose answer is known."""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pytest

from hoban_pipelines.datasets import near_duplicates as dedup
from hoban_pipelines.bench import dedup as dedup_bench

BURST_SECONDS = 10.0  # planted groups span <= 6 s; other snapshots of a camera are >= 30 s apart


@pytest.fixture(scope="module")
def snapshot_truth(small_site) -> dict:
    return json.loads((small_site / "ground_truth" / "go2k_labels.json").read_text())


@pytest.fixture(scope="module")
def capture_truth(small_site) -> list[dict]:
    return json.loads((small_site / "ground_truth" / "captures.json").read_text())["frames"]


def _same_camera_within(cameras: list[str], stamps: list[datetime], seconds: float) -> list[tuple[int, int]]:
    """Every pair of frames of one camera taken at most ``seconds`` apart (the grouping key
    that dataset building merges with the near-duplicate pairs)."""
    return [(i, j) for i, j in itertools.combinations(range(len(cameras)), 2)
            if cameras[i] == cameras[j] and abs((stamps[i] - stamps[j]).total_seconds()) <= seconds]


def _encode(image: np.ndarray, extension: str = ".jpg", quality: int = 90) -> bytes:
    ok, data = cv2.imencode(extension, image, [cv2.IMWRITE_JPEG_QUALITY, quality] if extension == ".jpg" else [])
    assert ok
    return data.tobytes()


# --------------------------------------------------------------------------- CCTV snapshots


def test_planted_near_duplicate_groups_are_grouped_and_kept_once(small_site, snapshot_truth):
    images = sorted(snapshot_truth["images"], key=lambda image: image["name"])
    names = [image["name"] for image in images]
    cameras = [image["camera"] for image in images]
    stamps = [datetime.fromisoformat(image["timestamp"]) for image in images]
    thumbs = dedup.thumbnails([small_site / "snapshots" / name for name in names])
    assert len(thumbs.skipped) == 0

    # Every pair of frames of one fixed camera is above the threshold, whatever moved: the
    # reason near_duplicate_pairs takes cameras= and bursts are grouped by time.
    same_camera = sum(a == b for a, b in itertools.combinations(cameras, 2))
    assert len(dedup.near_duplicate_pairs(thumbs)) == same_camera
    similar = dedup.near_duplicate_pairs(thumbs, cameras=cameras)
    assert similar == []  # no frame paired across the two cameras either

    bursts = _same_camera_within(cameras, stamps, BURST_SECONDS)
    groups = dedup.union_groups(len(names), similar, bursts)
    members = defaultdict(set)
    for name, group in zip(names, groups):
        members[group].add(name)
    found = sorted(sorted(group) for group in members.values() if len(group) > 1)
    assert found == sorted(sorted(group) for group in snapshot_truth["near_duplicate_groups"])

    keep, duplicate_of = dedup.keep_one(len(names), similar + bursts)
    index = {name: i for i, name in enumerate(names)}
    for group in snapshot_truth["near_duplicate_groups"]:
        first, *rest = sorted(group, key=lambda name: stamps[index[name]])
        assert keep[index[first]] and duplicate_of[index[first]] is None
        assert all(not keep[index[name]] and duplicate_of[index[name]] == index[first] for name in rest)
    planted = {name for group in snapshot_truth["near_duplicate_groups"] for name in group}
    assert all(keep[i] for i, name in enumerate(names) if name not in planted)


# --------------------------------------------------------------------------- varied images


def _base_images(site: Path) -> list[Path]:
    return sorted((site / "base_dataset" / "images").glob("*/*.jpg"))


def _biggest_box(image_path: Path, width: int, height: int) -> tuple[float, tuple[int, int, int, int]] | None:
    label = image_path.parent.parent.parent / "labels" / image_path.parent.name / f"{image_path.stem}.txt"
    boxes = [tuple(map(float, line.split()[1:])) for line in label.read_text().splitlines() if line.strip()]
    if not boxes:
        return None
    cx, cy, w, h = max(boxes, key=lambda box: box[2] * box[3])
    xyxy = (int((cx - w / 2) * width), int((cy - h / 2) * height),
            int((cx + w / 2) * width) + 1, int((cy + h / 2) * height) + 1)
    return w * h, xyxy


def test_copies_found_and_distinct_or_changed_images_not(small_site, tmp_path):
    originals = _base_images(small_site)
    copies = tmp_path / "copies"
    copies.mkdir()
    planted: list[tuple[Path, Path]] = []
    for number, (transform, extension) in enumerate([
        (lambda image: _encode(image, quality=40), ".jpg"),  # recompressed
        (lambda image: _encode(cv2.resize(image, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)), ".jpg"),
        (lambda image: _encode(image, ".png"), ".png"),  # another format
    ]):
        source = originals[number * 7]
        copy = copies / f"copy_{number}{extension}"
        copy.write_bytes(transform(cv2.imread(str(source))))
        planted.append((source, copy))

    # Hard negatives: a worker covering >= 10% of the image painted out.
    changed: list[tuple[Path, Path]] = []
    for source in originals:
        image = cv2.imread(str(source))
        biggest = _biggest_box(source, image.shape[1], image.shape[0])
        if biggest is None or biggest[0] < 0.10:
            continue
        x1, y1, x2, y2 = biggest[1]
        mask = np.zeros(image.shape[:2], np.uint8)
        mask[max(y1, 0):y2, max(x1, 0):x2] = 255
        edited = copies / f"without_worker_{source.stem}.jpg"
        edited.write_bytes(_encode(cv2.inpaint(image, mask, 3, cv2.INPAINT_TELEA)))
        changed.append((source, edited))
    assert changed, "the small site should hold an image with a big worker"

    paths = [*originals, *(copy for _, copy in planted), *(edited for _, edited in changed)]
    index = {path: i for i, path in enumerate(paths)}
    thumbs = dedup.thumbnails(paths)
    pairs = dedup.near_duplicate_pairs(thumbs)
    assert {(i, j) for i, j, _ in pairs} == {tuple(sorted((index[a], index[b]))) for a, b in planted}
    assert all(similarity >= dedup.DEFAULT_THRESHOLD for _, _, similarity in pairs)

    vectors = dict(zip(thumbs.positions.tolist(), thumbs.vectors))
    distinct = [float(vectors[i] @ vectors[j]) for i, j in itertools.combinations(range(len(originals)), 2)]
    assert max(distinct) < 0.95  # distinct scenes are far below the threshold
    for source, edited in changed:
        assert float(vectors[index[source]] @ vectors[index[edited]]) < dedup.DEFAULT_THRESHOLD


# --------------------------------------------------------------------------- pair logic


def test_keep_one_keeps_both_ends_of_a_chain():
    # A~B and B~C, but A and C are not similar: A and C are kept, B is A's duplicate.
    keep, duplicate_of = dedup.keep_one(3, [(0, 1, 0.99), (1, 2, 0.99)])
    assert keep.tolist() == [True, False, True]
    assert duplicate_of == [None, 0, None]

    # Visiting B first keeps B only.
    keep, duplicate_of = dedup.keep_one(3, [(0, 1, 0.99), (1, 2, 0.99)], order=[1, 0, 2])
    assert keep.tolist() == [False, True, False]
    assert duplicate_of == [1, None, 1]

    # A dropped item points at the first kept item it duplicates; singletons stay.
    keep, duplicate_of = dedup.keep_one(5, [(3, 0), (3, 2), (0, 1)], order=[2, 0, 1, 3, 4])
    assert keep.tolist() == [True, False, True, False, True]
    assert duplicate_of == [None, 0, None, 2, None]


def test_groups_are_connected_components_over_all_edge_lists():
    pairs = [(0, 1, 0.99), (1, 2, 0.99), (5, 6, 0.995)]
    assert dedup.union_groups(7, pairs) == [0, 0, 0, 1, 2, 3, 3]
    same_burst = [(2, 4), (6, 3)]
    assert dedup.union_groups(7, pairs, same_burst) == [0, 0, 0, 1, 0, 1, 1]
    assert dedup.union_groups(3) == [0, 1, 2]


def test_bad_input_gets_a_clear_error():
    with pytest.raises(ValueError, match="order"):
        dedup.keep_one(3, [(0, 1)], order=[0, 0, 2])
    with pytest.raises(ValueError, match=r"\(0, 3\)"):
        dedup.keep_one(3, [(0, 3)])
    with pytest.raises(ValueError, match=r"\(1, 1\)"):
        dedup.union_groups(3, [(1, 1)])
    thumbs, _ = dedup_bench.synthetic_thumbnails(60)
    with pytest.raises(ValueError, match="threshold"):
        dedup.near_duplicate_pairs(thumbs, threshold=1.5)
    with pytest.raises(ValueError, match="cameras"):
        dedup.near_duplicate_pairs(thumbs, cameras=["cam1"])
    with pytest.raises(ValueError, match="more than 10 near-duplicate pairs"):
        dedup.near_duplicate_pairs(thumbs, threshold=0.01, max_pairs=10)


def _random_thumbnails(n: int, dim: int, seed: int) -> dedup.Thumbnails:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    for copy in range(0, n, 7):  # near-copies of random earlier rows, some of them chained
        vectors[copy] = vectors[rng.integers(max(copy, 1))] + rng.normal(scale=0.2, size=dim)
    vectors -= vectors.mean(axis=1, keepdims=True)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    # Rows skip some positions, as when files were skipped: pairs must index the paths.
    positions = np.sort(rng.choice(n + n // 10, size=n, replace=False))
    paths = [f"image_{k}.jpg" for k in range(n + n // 10)]
    used = set(positions.tolist())
    skipped = [(path, "cannot decode as an image") for k, path in enumerate(paths) if k not in used]
    return dedup.Thumbnails(paths, vectors, positions, skipped)


def test_blockwise_pairs_equal_brute_force():
    thumbs = _random_thumbnails(700, 64, seed=3)
    rng = np.random.default_rng(4)
    cameras = [None if rng.random() < 0.3 else f"cam{rng.integers(3)}" for _ in thumbs.paths]
    similarity = thumbs.vectors @ thumbs.vectors.T
    for threshold, with_cameras in [(0.9, False), (0.2, False), (0.2, True)]:
        rows, cols = np.nonzero(np.triu(similarity >= threshold, k=1))
        expected = [(int(thumbs.positions[r]), int(thumbs.positions[c]), float(similarity[r, c]))
                    for r, c in zip(rows, cols)]
        if with_cameras:
            expected = [(i, j, s) for i, j, s in expected if cameras[i] is None or cameras[i] != cameras[j]]
        got = dedup.near_duplicate_pairs(thumbs, threshold, block=128, cameras=cameras if with_cameras else None)
        assert [(i, j) for i, j, _ in got] == [(i, j) for i, j, _ in expected]
        assert np.allclose([s for *_, s in got], [s for *_, s in expected], atol=1e-5)
        assert expected, "the threshold should leave pairs to compare"


# --------------------------------------------------------------------------- frozen frames


def test_frozen_copies_flagged_and_live_static_frames_not(small_site, capture_truth):
    root = small_site / "captures"
    per_camera: dict[str, list[dict]] = defaultdict(list)
    for frame in sorted(capture_truth, key=lambda frame: (frame["camera"], frame["timestamp"])):
        per_camera[frame["camera"]].append(frame)
    seen = defaultdict(int)
    for frames in per_camera.values():
        results = dedup.frozen_flags([root / frame["file"] for frame in frames])
        for frame, result in zip(frames, results, strict=True):
            assert result.error is None
            expected_reason = {"bytes": "bytes", "reencode": "pixels", None: None}[frame["copy"]]
            assert (result.is_frozen, result.reason) == (frame["frozen_of"] is not None, expected_reason), frame
            assert result.frozen_of == (str(root / frame["frozen_of"]) if frame["frozen_of"] else None)
            if frame["copy"] == "reencode":
                assert result.score < dedup.FROZEN_THRESHOLD
            if frame["static"]:
                assert result.score is not None and result.score >= dedup.FROZEN_THRESHOLD
            seen["static" if frame["static"] else frame["copy"]] += 1
    assert seen["bytes"] and seen["reencode"] and seen["static"], seen


# --------------------------------------------------------------------------- bad files


def test_undecodable_files_are_reported_skipped_and_counted(small_site, tmp_path):
    frame = sorted((small_site / "captures").rglob("*.jpg"))[0]
    garbage = tmp_path / "truncated.jpg"
    garbage.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    missing = tmp_path / "missing.jpg"
    blank = tmp_path / "blank.png"
    blank.write_bytes(_encode(np.full((90, 160), 128, np.uint8), ".png"))
    copy = tmp_path / "copy.jpg"
    copy.write_bytes(frame.read_bytes())

    thumbs = dedup.thumbnails([frame, garbage, missing, blank, copy])
    assert len(thumbs.skipped) == 3
    reasons = dict(thumbs.skipped)
    assert reasons[str(garbage)].startswith("truncated JPEG")  # a JPEG header with no end marker
    assert reasons[str(missing)].startswith("cannot read")
    assert reasons[str(blank)].startswith("blank image")
    assert thumbs.positions.tolist() == [0, 4]
    assert [(i, j) for i, j, _ in dedup.near_duplicate_pairs(thumbs)] == [(0, 4)]  # indices into the paths given

    results = dedup.frozen_flags([frame, garbage, missing, copy])
    assert [r.error is not None for r in results] == [False, True, True, False]
    assert not results[1].is_frozen and not results[2].is_frozen
    # The bad frames are no reference: the copy still repeats the first frame.
    assert (results[3].is_frozen, results[3].reason, results[3].frozen_of) == (True, "bytes", str(frame))


# --------------------------------------------------------------------------- fastdup, benchmark


def test_fastdup_backend_explains_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "fastdup", None)  # import fails as if not installed
    monkeypatch.setenv("SENTRY_OPT_OUT", "0")
    monkeypatch.setenv("FASTDUP_PRODUCTION", "0")
    with pytest.raises(RuntimeError) as error:
        dedup.near_duplicate_pairs_fastdup(["a.jpg"], threshold=0.99)
    message = str(error.value)
    assert "hoban_pipelines[fastdup]" in message and "CC BY-NC-ND" in message
    # Telemetry is switched off before fastdup is ever imported.
    assert os.environ["SENTRY_OPT_OUT"] == "1" and os.environ["FASTDUP_PRODUCTION"] == "1"


def test_benchmark_reports_its_figures():
    figures = dedup_bench.run(n=2000)
    assert figures["dedup_images"] == 2000 and figures["dedup_seconds"] >= 0
