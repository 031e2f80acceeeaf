"""The verifier's crops (``evaluation.verifier``): the seeded held-out split of the evaluation
frames, the context square cut around a box (edge pixels repeated where it leaves the frame),
the detector's background false positives, and the crop folder built from a small synthetic
YOLO dataset with a hand-written sliced-predictions cache (no detector is run)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from hoban_pipelines.evaluation.builds import Evaluation
from hoban_pipelines.evaluation.engine import DETECTION_COLUMNS, FRAME_COLUMNS, EvaluationError, InferenceSettings
from hoban_pipelines.evaluation.metrics import box_iou
from hoban_pipelines.evaluation.predictions import PREDICTIONS_FILE, write_predictions
from hoban_pipelines.evaluation.verifier import (
    BACKGROUND,
    BACKGROUND_PER_FRAME,
    CONTEXT_MARGIN,
    CROP_SIZE,
    CROPS_TABLE,
    FIT,
    FP_CONF,
    FP_IOU,
    HELD_OUT,
    RECORD_FILE,
    VerifierCropSettings,
    build_verifier_crops,
    context_box,
    false_positives,
    held_out,
    read_verifier_record,
    square_crop,
)

CLASSES = ["person_with_helmet", "person_without_helmet"]
BOX = ["x1", "y1", "x2", "y2"]


# --- held-out frames -----------------------------------------------------------------------


def frame_names(n: int) -> list[str]:
    return [f"cam{index % 3}/frame_{index:04d}.jpg" for index in range(n)]


def test_held_out_is_the_same_for_a_seed_whatever_the_order_or_repeats_of_the_frames():
    frames = frame_names(30)
    chosen = held_out(frames, 0.5, seed=0)
    assert held_out(frames, 0.5, seed=0) == chosen
    assert held_out(list(reversed(frames)) + frames[:5], 0.5, seed=0) == chosen
    assert chosen == sorted(chosen) and set(chosen) <= set(frames)


def test_held_out_takes_the_share_of_frames_and_leaves_at_least_one_on_each_side():
    assert held_out([]) == [] and held_out(["only.jpg"]) == [] and held_out(["a.jpg", "a.jpg"]) == []
    for n in range(2, 12):
        for share in (0.01, 0.3, 0.5, 0.99):
            count = len(held_out(frame_names(n), share))
            assert 1 <= count <= n - 1, (n, share, count)
    assert len(held_out(frame_names(2), 0.5)) == 1
    assert len(held_out(frame_names(5), 0.01)) == 1  # at least one frame scores the verifier
    assert len(held_out(frame_names(5), 0.99)) == 4  # at least one is left to learn from
    assert len(held_out(frame_names(100), 0.5)) == 50
    assert len(held_out(frame_names(100), 0.3)) == 30


def test_held_out_depends_on_the_seed():
    frames = frame_names(100)
    sets = {seed: frozenset(held_out(frames, 0.5, seed=seed)) for seed in (0, 1, 2)}
    assert len(set(sets.values())) == 3
    assert all(len(chosen) == 50 for chosen in sets.values())


# --- the context square ------------------------------------------------------------------


def test_context_box_is_a_square_around_the_box_grown_by_the_margin_of_its_longer_side():
    # a 40 x 80 box centred at (120, 140): side 80 * (1 + 2 * 0.25) = 120
    assert context_box((100, 100, 140, 180)) == (60, 80, 120)
    assert context_box((100, 100, 140, 180), margin=0.0) == (80, 100, 80)
    assert context_box((100, 100, 180, 140), margin=0.5) == (60, 40, 160)  # the longer side, lying down
    assert context_box((10, 10, 12, 12)) == (7, 7, 8)  # never under 8 px
    x, y, side = context_box((10.3, 20.6, 41.1, 50.2))
    assert isinstance(x, int) and isinstance(y, int) and isinstance(side, int)
    assert side == round(30.8 * (1 + 2 * CONTEXT_MARGIN))


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_square_crop_inside_the_frame_is_the_context_square_resized():
    image = noise(200, 300)
    box = (100, 60, 140, 140)  # 40 x 80: context square (60, 40) side 120, inside the frame
    x, y, side = context_box(box)
    assert (x, y, side) == (60, 40, 120)
    crop = square_crop(image, box)
    assert crop.shape == (CROP_SIZE, CROP_SIZE, 3) and crop.dtype == np.uint8
    expected = cv2.resize(image[y:y + side, x:x + side], (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_AREA)
    assert np.array_equal(crop, expected)
    # at its own size the crop is the frame's pixels themselves
    assert np.array_equal(square_crop(image, box, size=side), image[y:y + side, x:x + side])


def test_square_crop_at_the_top_left_corner_repeats_the_edge_pixels():
    image = noise(100, 120, seed=1)
    box = (0, 0, 20, 20)  # context square (-5, -5) side 30: 5 px outside on the top and the left
    assert context_box(box) == (-5, -5, 30)
    crop = square_crop(image, box, size=30)  # no resize: the padding can be read pixel by pixel
    assert crop.shape == (30, 30, 3)
    assert np.array_equal(crop[5:, 5:], image[:25, :25])
    assert np.array_equal(crop[:5, 5:], np.broadcast_to(image[0, :25], (5, 25, 3)))  # top rows: the frame's first row
    assert np.array_equal(crop[5:, :5], np.broadcast_to(image[:25, :1], (25, 5, 3)))  # left columns: its first column
    assert np.array_equal(crop[:5, :5], np.broadcast_to(image[0, 0], (5, 5, 3)))  # the corner: its corner pixel
    assert square_crop(image, box).shape == (CROP_SIZE, CROP_SIZE, 3)


def test_square_crop_at_the_bottom_right_edge_repeats_the_edge_pixels():
    image = noise(200, 300, seed=2)
    box = (280, 180, 300, 200)  # context square (275, 175) side 30: 5 px beyond the right and bottom edges
    crop = square_crop(image, box, size=30)
    assert np.array_equal(crop[:25, :25], image[175:, 275:])
    assert np.array_equal(crop[:25, 25:], np.broadcast_to(image[175:, 299:300], (25, 5, 3)))
    assert np.array_equal(crop[25:, :25], np.broadcast_to(image[199, 275:], (5, 25, 3)))
    assert np.array_equal(crop[25:, 25:], np.broadcast_to(image[199, 299], (5, 5, 3)))


@pytest.mark.parametrize("box", [(-30, 10, 15, 60), (280, -20, 330, 40), (5, 5, 35, 35), (0, 0, 40, 40),
                                 (39.5, 39.5, 40, 40), (-5, -5, 45, 45)],
                         ids=["past the left", "past the top right", "bigger than the frame", "the whole frame",
                              "a sliver at the corner", "around the frame"])
def test_square_crop_never_raises_and_always_gives_the_crop_size(box):
    image = noise(40, 40, seed=3) if box[2] <= 45 else noise(100, 300, seed=3)
    crop = square_crop(image, box)
    assert crop.shape == (CROP_SIZE, CROP_SIZE, 3) and crop.dtype == np.uint8


def test_square_crop_of_a_box_wholly_outside_the_frame_is_black():
    crop = square_crop(noise(100, 100), (500, 500, 520, 520))
    assert crop.shape == (CROP_SIZE, CROP_SIZE, 3) and not crop.any()


# --- false positives -----------------------------------------------------------------------


def detections(*rows) -> pd.DataFrame:
    """(image, cls, score, x1, y1, x2, y2) rows as cached sliced detections (float32 as the engine writes them)."""
    frame = pd.DataFrame(rows, columns=["image", "cls", "score", *BOX]).assign(**{"pass": "sliced", "tile": 0})
    return frame[DETECTION_COLUMNS].astype({"cls": "int16", "score": "float32", **{c: "float32" for c in BOX}})


def truth(*rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["image", "cls", *BOX])


PEOPLE = truth(("a.jpg", 0, 100, 100, 150, 200), ("c.jpg", 1, 0, 0, 100, 100))
SCENE = detections(
    ("a.jpg", 0, 0.9, 102, 102, 152, 198),  # the person on a: not a false positive
    ("a.jpg", 0, 0.8, 400, 300, 450, 400),  # nothing there: a false positive
    ("a.jpg", 1, 0.2, 250, 50, 300, 150),  # nothing there, but below FP_CONF
    ("a.jpg", 1, 0.25, 500, 50, 540, 130),  # exactly at FP_CONF: counted
    ("b.jpg", 0, 0.7, 100, 100, 150, 200),  # where a's person is, but on b, which has no one
    ("c.jpg", 0, 0.6, 30, 0, 130, 100),  # IoU 7000 / 13000 = 0.54 with c's person, another class: a person
    ("c.jpg", 1, 0.5, 60, 0, 160, 100),  # IoU 4000 / 16000 = 0.25 < FP_IOU: a false positive
    ("d.jpg", 1, 0.1, 10, 10, 50, 50),  # a frame of nothing but a weak box
)


def boxes_of(frame: pd.DataFrame) -> set[tuple]:
    return {(row.image, int(row.cls), round(float(row.score), 3), *map(float, (row.x1, row.y1, row.x2, row.y2)))
            for row in frame.itertuples()}


def test_false_positives_are_confident_detections_overlapping_no_person_of_their_frame():
    assert (FP_CONF, FP_IOU) == (0.25, 0.3)  # what the scene below is built around
    found = false_positives(SCENE, PEOPLE)
    assert boxes_of(found) == {("a.jpg", 0, 0.8, 400, 300, 450, 400), ("a.jpg", 1, 0.25, 500, 50, 540, 130),
                               ("b.jpg", 0, 0.7, 100, 100, 150, 200), ("c.jpg", 1, 0.5, 60, 0, 160, 100)}
    assert list(found.index) == list(range(len(found)))
    assert set(DETECTION_COLUMNS) <= set(found.columns)


def test_false_positives_follow_their_conf_and_iou_settings():
    # at IoU 0.6 the box overlapping c's person by 0.54 no longer counts as the person
    assert ("c.jpg", 0, 0.6, 30, 0, 130, 100) in boxes_of(false_positives(SCENE, PEOPLE, iou=0.6))
    # at conf 0.1 the weak boxes count too; at 0.75 only a's 0.8 is left
    assert {("a.jpg", 1, 0.2, 250, 50, 300, 150), ("d.jpg", 1, 0.1, 10, 10, 50, 50)} <= boxes_of(
        false_positives(SCENE, PEOPLE, conf=0.1))
    assert boxes_of(false_positives(SCENE, PEOPLE, conf=0.75)) == {("a.jpg", 0, 0.8, 400, 300, 450, 400)}


def test_false_positives_are_merged_before_they_are_counted():
    """Two tiles seeing the same empty spot give one background box (the team's NMS), not two."""
    twice = detections(("b.jpg", 0, 0.7, 100, 100, 150, 200), ("b.jpg", 0, 0.6, 104, 102, 152, 204))
    found = false_positives(twice, PEOPLE)
    assert boxes_of(found) == {("b.jpg", 0, 0.7, 100, 100, 150, 200)}


def test_false_positives_of_no_detections_or_with_no_truth():
    assert false_positives(SCENE.iloc[0:0], PEOPLE).empty
    assert len(false_positives(SCENE, PEOPLE.iloc[0:0])) == (SCENE["score"] >= FP_CONF).sum()


# --- the crop folder -----------------------------------------------------------------------

WIDTH, HEIGHT = 320, 240
# (name, split, people as (cls, x1, y1, x2, y2) in pixels)
FRAMES = [
    ("t0", "train", [(0, 40, 40, 80, 120), (1, 200, 100, 240, 180)]),
    ("t1", "train", [(1, 150, 20, 180, 80)]),
    ("t2", "train", []),  # no one: room for empty patches
    ("v0", "val", [(0, 30, 30, 70, 110)]),
    ("v1", "val", [(1, 100, 50, 140, 130), (0, 220, 120, 250, 180)]),
    ("v2", "val", [(0, 10, 100, 50, 180)]),
    ("v3", "val", [(1, 250, 20, 290, 100)]),
    ("v4", "val", [(0, 150, 150, 180, 210)]),
    ("v5", "val", [(1, 60, 60, 100, 140)]),
]


def write_frame(path: Path, people, seed: int) -> None:
    """A frame of smooth gradients (so its JPEG is close to its pixels) with a coloured block per person."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    image = np.stack([40 + 0.5 * xx, 60 + 0.6 * yy, 40 + 0.3 * (xx + yy) + 10 * seed], axis=-1)
    image = (image + np.random.default_rng(seed).normal(0, 1, image.shape)).clip(0, 255).astype(np.uint8)
    for cls, x1, y1, x2, y2 in people:
        cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), (0, 200, 255) if cls == 0 else (255, 80, 0), -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 95])


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A go2k-like YOLO dataset (3 train, 6 val frames) and a cache of sliced detections on its
    val frames: every person found, plus background alarms and boxes below FP_CONF."""
    root = tmp_path_factory.mktemp("verifier")
    dataset = root / "dataset"
    for seed, (name, split, people) in enumerate(FRAMES):
        write_frame(dataset / "images" / split / f"{name}.jpg", people, seed)
        label = dataset / "labels" / split / f"{name}.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("".join(f"{cls} {(x1 + x2) / 2 / WIDTH} {(y1 + y2) / 2 / HEIGHT} {(x2 - x1) / WIDTH} "
                                 f"{(y2 - y1) / HEIGHT}\n" for cls, x1, y1, x2, y2 in people))
    (dataset / "data.yaml").write_text(yaml.safe_dump({"path": ".", "train": "images/train", "val": "images/val",
                                                      "names": dict(enumerate(CLASSES))}))
    rows = []
    val = [(name, people) for name, split, people in FRAMES if split == "val"]
    for index, (name, people) in enumerate(val):
        image = f"images/val/{name}.jpg"
        for cls, x1, y1, x2, y2 in people:
            rows.append((image, "sliced", 0, cls, 0.9, x1 + 1, y1 + 1, x2 + 1, y2 - 1))
        if index % 2 == 0:  # a confident alarm on every other frame, clear of the people
            rows.append((image, "sliced", 1, (index // 2) % 2, 0.6, 270, 180, 310, 230))
        rows.append((image, "sliced", 2, 0, 0.1, 120, 190, 150, 230))  # a weak alarm: not background
        rows.append((image, "full", -1, 0, 0.8, 0, 200, 30, 240))  # the full pass: never a crop
    cache = pd.DataFrame(rows, columns=DETECTION_COLUMNS).astype(
        {"tile": "int32", "cls": "int16", "score": "float32", **{c: "float32" for c in BOX}})
    frames = pd.DataFrame([{"image": f"images/val/{name}.jpg", "path": str(dataset / "images" / "val" / f"{name}.jpg"),
                            "width": WIDTH, "height": HEIGHT, "channels": 3, "tiles": 2, "status": "ok"}
                           for name, _ in val], columns=FRAME_COLUMNS)
    record = {"classes": CLASSES, "settings": InferenceSettings(slice_size=160, imgsz=160, full_imgsz=320).as_dict(),
              "speed": {"backend": "torch", "frames": len(val), "full_seconds": 0.1}}
    write_predictions(root / PREDICTIONS_FILE, cache, frames, record)
    evaluation = Evaluation.load(root / PREDICTIONS_FILE, dataset)
    out = root / "crops"
    out.mkdir()
    report = build_verifier_crops(dataset, evaluation, out)
    return dataset, evaluation, out, report


def test_verifier_crops_of_held_out_frames_score_it_and_the_rest_train_it(scene):
    dataset, evaluation, out, report = scene
    table = pd.read_parquet(out / CROPS_TABLE)
    record = read_verifier_record(out)
    held = held_out(evaluation.frames)
    assert record["held_out_frames"] == held and len(held) == 3  # half of the 6 evaluation frames
    assert set(record["fit_frames"]) == set(evaluation.frames) - set(held)
    assert not set(record["fit_frames"]) & set(held)
    assert record["classes"] == [*CLASSES, BACKGROUND]
    assert record["settings"] == VerifierCropSettings().as_dict()
    assert (table.loc[table["image"].isin(held), "split"] == HELD_OUT).all()
    assert (table.loc[~table["image"].isin(held), "split"] == FIT).all()
    assert set(table.loc[table["image"].str.startswith("images/train/"), "split"]) == {FIT}
    assert set(table["split"]) == {FIT, HELD_OUT}
    assert report.counts["crops"] == len(table)
    assert (report.counts["held_out_frames"], report.counts["fit_frames"]) == (3, 3)
    for (split, label), count in table.groupby(["split", "label"]).size().items():
        assert report.counts[f"{split}_{label}"] == count


def test_every_labelled_person_is_cropped_with_its_class_name(scene):
    dataset, evaluation, out, report = scene
    table = pd.read_parquet(out / CROPS_TABLE)
    people = table[table["origin"] == "labelled person"]
    expected = sorted((f"images/{split}/{name}.jpg", CLASSES[cls], float(x1), float(y1), float(x2), float(y2))
                      for name, split, boxes in FRAMES for cls, x1, y1, x2, y2 in boxes)
    found = sorted((row.image, row.label, *(round(v, 3) for v in (row.x1, row.y1, row.x2, row.y2)))
                   for row in people.itertuples())
    assert found == expected
    assert set(people["label"]) == set(CLASSES)


def test_background_crops_are_the_detectors_false_positives_and_empty_patches_of_training_frames(scene):
    dataset, evaluation, out, report = scene
    table = pd.read_parquet(out / CROPS_TABLE)
    assert set(table.loc[table["label"] == BACKGROUND, "origin"]) == {"detector false positive", "empty patch"}
    assert set(table.loc[table["label"] != BACKGROUND, "origin"]) == {"labelled person"}
    # the false positives: the sliced pass's confident alarms, one per other frame; not the
    # people, not the weak boxes, not the full-image pass
    alarms = table[table["origin"] == "detector false positive"]
    expected = false_positives(evaluation.predictions.sliced, evaluation.truth)
    assert len(expected) == 3 and (alarms["label"] == BACKGROUND).all()
    assert sorted(alarms[["image", *BOX]].itertuples(index=False, name=None)) == \
        sorted(expected[["image", *BOX]].astype({c: float for c in BOX}).itertuples(index=False, name=None))
    assert alarms["image"].str.startswith("images/val/").all()
    assert set(alarms["split"]) == {FIT, HELD_OUT}  # alarms on fit frames train it, on held-out frames score it
    # empty patches: only on training frames, at most BACKGROUND_PER_FRAME each, people-sized, clear of people
    patches = table[table["origin"] == "empty patch"]
    assert patches["image"].str.startswith("images/train/").all()
    per_frame = patches.groupby("image").size()
    assert per_frame.max() <= BACKGROUND_PER_FRAME and per_frame["images/train/t2.jpg"] == BACKGROUND_PER_FRAME
    sizes = {(x2 - x1, y2 - y1) for name, split, boxes in FRAMES if split == "train" for _, x1, y1, x2, y2 in boxes}
    people = {f"images/train/{name}.jpg": np.array([b[1:] for b in boxes], float).reshape(-1, 4)
              for name, split, boxes in FRAMES if split == "train"}
    for row in patches.itertuples():
        w, h = row.x2 - row.x1, row.y2 - row.y1
        assert any(abs(w - sw) < 1e-6 and abs(h - sh) < 1e-6 for sw, sh in sizes)
        assert 0 <= row.x1 and row.x2 <= WIDTH and 0 <= row.y1 and row.y2 <= HEIGHT
        grown = np.array([[row.x1 - w, row.y1 - h, row.x2 + w, row.y2 + h]])
        if len(people[row.image]):
            assert box_iou(grown, people[row.image]).max() == 0


def test_crop_files_are_the_context_squares_at_the_crop_size(scene):
    dataset, evaluation, out, report = scene
    table = pd.read_parquet(out / CROPS_TABLE)
    assert table["path"].is_unique
    for row in table.itertuples():
        assert row.path.startswith(f"{row.split}/{row.label}/") and row.path.endswith(f"_{Path(row.image).stem}.jpg")
        crop = cv2.imread(str(out / row.path))
        assert crop is not None and crop.shape == (CROP_SIZE, CROP_SIZE, 3)
        frame = cv2.imread(str(dataset / row.image))
        error = np.abs(crop.astype(int) - square_crop(frame, (row.x1, row.y1, row.x2, row.y2))).mean()
        shift = (row.x2 - row.x1) / 2  # the same square half a box to the right: what a misplaced crop looks like
        misplaced = np.abs(crop.astype(int) - square_crop(frame, (row.x1 + shift, row.y1, row.x2 + shift, row.y2))).mean()
        assert error < 3.5 and error < misplaced / 2, (row.path, error, misplaced)  # JPEG twice, at quality 95
    on_disk = {str(p.relative_to(out)) for p in out.glob("*/*/*.jpg")}
    assert on_disk == set(table["path"])
    for label in [*CLASSES, BACKGROUND]:
        assert (out / f"contact_{label}.jpg").is_file()
    assert json.loads((out / RECORD_FILE).read_text()) == read_verifier_record(out)


def test_verifier_crops_are_the_same_when_built_again(scene, tmp_path):
    dataset, evaluation, out, report = scene
    build_verifier_crops(dataset, evaluation, tmp_path)
    assert pd.read_parquet(tmp_path / CROPS_TABLE).equals(pd.read_parquet(out / CROPS_TABLE))
    assert read_verifier_record(tmp_path) == read_verifier_record(out)


def test_verifier_crops_refuse_what_cannot_make_a_verifier(scene, tmp_path):
    dataset, evaluation, out, report = scene
    with pytest.raises(EvaluationError, match="cannot be split into fit and held-out frames"):
        build_verifier_crops(dataset, replace(evaluation, frames=evaluation.frames[:1]), tmp_path / "one")
    with pytest.raises(EvaluationError, match="has a class named 'background'"):
        build_verifier_crops(dataset, replace(evaluation, classes=[CLASSES[0], BACKGROUND]), tmp_path / "named")
    nothing = VerifierCropSettings(fp_conf=0.99, background_per_frame=0)  # no alarm counts, no patch is cut
    with pytest.raises(EvaluationError, match="no background or no training crops"):
        build_verifier_crops(dataset, evaluation, tmp_path / "none", nothing)
