"""The evaluation metrics against pycocotools (mAP, per-detection matching) and against hand-worked scenes."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pandas as pd
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from hoban_pipelines.evaluation.metrics import (
    BOX,
    DETECTION_COLUMNS,
    FP_KINDS,
    TRUTH_COLUMNS,
    box_iou,
    counts_by_conf,
    match,
    score,
)

WIDTH, HEIGHT = 1920, 1080
CLASSES = ["person_with_helmet", "person_without_helmet"]


def _random_scene(seed: int, n_images: int = 40, n_classes: int = 2, decimals: int | None = None, shuffle: bool = True):
    """Site-camera-like frames: small upright people, some images empty, detections that are jittered truth
    (some missed, some twice as at tile borders, some of the wrong class) plus background alarms."""
    rng = np.random.default_rng(seed)
    images = [f"cam{seed}_{i:04d}.jpg" for i in range(n_images)]
    truth, detections = [], []

    def detect(name, cls, x1, y1, x2, y2):
        jitter = rng.normal(0.0, 0.12, 4) * [x2 - x1, y2 - y1, x2 - x1, y2 - y1]
        (a, b), (c, d) = sorted([x1 + jitter[0], x2 + jitter[2]]), sorted([y1 + jitter[1], y2 + jitter[3]])
        wrong = rng.random() < 0.1
        detections.append((name, int(rng.integers(n_classes)) if wrong else cls, rng.random(), a, c, b, d))

    for name in images:
        for _ in range(int(rng.choice([0, 0, 1, 3, 6, 12]))):
            side = float(np.exp(rng.uniform(np.log(6), np.log(220))))
            w, h = side * rng.uniform(0.4, 0.7), side * rng.uniform(1.2, 2.0)
            x, y = rng.uniform(0, WIDTH - w), rng.uniform(0, HEIGHT - h)
            cls = int(rng.integers(n_classes))
            box = (name, cls, x, y, x + w, y + h)
            truth.append(box)
            if rng.random() < 0.05:  # the same person annotated twice: an exact IoU tie between truth boxes
                truth.append(box)
            for _ in range(int(rng.choice([0, 1, 1, 1, 2]))):
                detect(*box)
        for _ in range(int(rng.poisson(3))):
            w, h = rng.uniform(5, 120, 2)
            x, y = rng.uniform(0, WIDTH - w), rng.uniform(0, HEIGHT - h)
            detections.append((name, int(rng.integers(n_classes)), rng.random(), x, y, x + w, y + h))
    detections = pd.DataFrame(detections, columns=DETECTION_COLUMNS)
    truth = pd.DataFrame(truth, columns=TRUTH_COLUMNS)
    if decimals is not None:
        detections["score"] = detections["score"].round(decimals)
    if shuffle:  # and index labels that are not positions
        detections = detections.sample(frac=1.0, random_state=seed).set_axis(np.arange(len(detections)) * 3 + 7)
        truth = truth.sample(frac=1.0, random_state=seed + 1).set_axis(np.arange(len(truth)) * 5 + 2)
    return detections, truth, images


def _coco(detections: pd.DataFrame, truth: pd.DataFrame, images: list[str], n_classes: int) -> COCOeval:
    """pycocotools' evaluation of the same scene: rows become annotation ids in order, nothing ignored or cut."""
    image_ids = {name: index + 1 for index, name in enumerate(images)}

    def annotation(row):
        x1, y1, x2, y2 = (float(row[column]) for column in BOX)
        box = [x1, y1, x2 - x1, y2 - y1]  # COCO's x, y, w, h
        return {"image_id": image_ids[row["image"]], "category_id": int(row["cls"]) + 1, "bbox": box}

    gt = COCO()
    gt.dataset = {
        "images": [{"id": image_id} for image_id in image_ids.values()],
        "categories": [{"id": k + 1, "name": str(k)} for k in range(n_classes)],
        "annotations": [
            # ids from 1: pycocotools reads a match to id 0 as no match; its area ranges read "area" (w * h here)
            {**annotation(row), "id": position + 1, "area": (row.x2 - row.x1) * (row.y2 - row.y1), "iscrowd": 0}
            for position, (_, row) in enumerate(truth.iterrows())
        ],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes([{**annotation(row), "score": float(row["score"])} for _, row in detections.iterrows()])
        evaluation = COCOeval(gt, dt, "bbox")
        evaluation.params.maxDets = [1, 10, 10000]
        evaluation.evaluate()
        evaluation.accumulate()
    return evaluation


def _coco_map(evaluation: COCOeval) -> tuple[float, float]:
    """mAP50 and mAP50-95 at area 'all' and the largest maxDets; -1 marks classes without truth."""
    precision = evaluation.eval["precision"][:, :, :, 0, -1]
    return float(precision[0][precision[0] > -1].mean()), float(precision[precision > -1].mean())


def _coco_taken(evaluation: COCOeval, n_detections: int) -> np.ndarray:
    """The truth position each detection position matched at IoU 0.5, -1 for none."""
    taken = np.full(n_detections, -1)
    for image in evaluation.evalImgs:
        if image is not None and image["aRng"] == evaluation.params.areaRng[0]:
            for detection_id, truth_id in zip(image["dtIds"], image["dtMatches"][0]):
                taken[detection_id - 1] = int(truth_id) - 1
    return taken


def _hand_scene():
    """Worked by hand: on a.jpg truth t100..t104, detections d10..d15; d16 on b.jpg (no truth); c.jpg is empty.

    d10 matches t100 exactly, d11 is its copy from the neighbouring tile (IoU 0.95, scored lower: duplicate), d12
    sits on t101 with the other class (wrong_class), d13 covers the top 30 % of t103 (IoU 0.3: localisation), d14
    matches t104 (16 px: the lower edge of "16-32"), d15 and d16 are background alarms, the 11 px t102 is missed."""
    truth = pd.DataFrame(
        [
            ("a.jpg", 0, 100, 100, 140, 200),
            ("a.jpg", 1, 500, 300, 530, 380),
            ("a.jpg", 0, 900, 500, 910, 512),
            ("a.jpg", 0, 1200, 200, 1300, 400),
            ("a.jpg", 1, 1500, 600, 1516, 616),
        ],
        columns=TRUTH_COLUMNS,
        index=[100, 101, 102, 103, 104],
    )
    detections = pd.DataFrame(
        [
            ("a.jpg", 0, 0.95, 100, 100, 140, 200, 0),
            ("a.jpg", 0, 0.60, 100, 100, 138, 200, 1),
            ("a.jpg", 0, 0.80, 500, 300, 530, 380, 0),
            ("a.jpg", 0, 0.70, 1200, 200, 1300, 260, 0),
            ("a.jpg", 1, 0.50, 1500, 600, 1516, 616, 1),
            ("a.jpg", 1, 0.40, 50, 900, 90, 1000, 1),
            ("b.jpg", 0, 0.90, 10, 10, 50, 110, 0),
        ],
        columns=[*DETECTION_COLUMNS, "tile"],
        index=[10, 11, 12, 13, 14, 15, 16],
    )
    return detections, truth, ["a.jpg", "b.jpg", "c.jpg"]


def _scenes():
    """The scenes held against pycocotools: (detections, truth, images, classes)."""
    scenes = [(*_random_scene(seed), CLASSES) for seed in range(4)]
    scenes.append((*_random_scene(4, decimals=2, shuffle=False), CLASSES))  # many score ties
    detections, truth, images = _random_scene(5, n_classes=3)
    # class 2 has truth boxes and no detections, class 3 detections and no truth boxes
    detections = detections[detections["cls"] != 2]
    alarms = detections.head(20).assign(cls=3)
    detections = pd.concat([detections, alarms.set_axis(alarms.index + 100_000)])
    scenes.append((detections, truth, images, ["a", "b", "c", "d"]))
    scenes.append((*_hand_scene(), CLASSES))
    return scenes


SCENES = _scenes()


@pytest.mark.parametrize("scene", range(len(SCENES)))
def test_map_agrees_with_pycocotools(scene):
    detections, truth, images, classes = SCENES[scene]
    coco50, coco50_95 = _coco_map(_coco(detections, truth, images, len(classes)))
    scores = score(detections, truth, images, classes)
    assert scores.map50 == pytest.approx(coco50, abs=0.005)
    assert scores.map50_95 == pytest.approx(coco50_95, abs=0.005)


@pytest.mark.parametrize("scene", range(len(SCENES)))
def test_matching_and_counts_agree_with_pycocotools(scene):
    detections, truth, images, classes = SCENES[scene]
    coco = _coco_taken(_coco(detections, truth, images, len(classes)), len(detections))
    matching = match(detections, truth, 0.5, images)
    truth_labels = truth.index.to_numpy()
    assert matching.detections["truth_index"].tolist() == [truth_labels[t] if t >= 0 else -1 for t in coco]
    matched = np.zeros(len(truth), bool)
    matched[coco[coco >= 0]] = True
    assert matching.truth["matched"].tolist() == matched.tolist()

    cls, truth_cls = detections["cls"].to_numpy(), truth["cls"].to_numpy()
    expected = []
    for k, name in enumerate(classes):
        tp = int(((cls == k) & (coco >= 0)).sum())
        expected.append((name, tp, int((cls == k).sum()) - tp, int(((truth_cls == k) & ~matched).sum())))
    scores = score(detections, truth, images, classes)
    assert [(row["class"], row["tp"], row["fp"], row["fn"]) for row in scores.per_class] == expected


def test_counts_by_conf_equal_scoring_at_each_conf():
    detections, truth, images = _random_scene(11, n_images=60)
    thresholds = [0.0, *np.linspace(0.05, 0.95, 19), *detections["score"].sample(5, random_state=0), 1.0]
    table = counts_by_conf(match(detections, truth), thresholds, CLASSES)
    columns = ["tp", "fp", "fn", "precision", "recall", "f1"]
    for conf in thresholds:
        scores = score(detections, truth, images, CLASSES, conf=conf)
        rows = table[table["conf"] == conf].set_index("class")
        for row in scores.per_class:
            assert rows.loc[row["class"], columns].tolist() == [row[column] for column in columns]
        assert rows.loc["all", columns].tolist() == [getattr(scores, column) for column in columns]


def test_hand_scene_scores():
    detections, truth, images = _hand_scene()
    scores = score(detections, truth, images, CLASSES)
    assert (scores.images, scores.tp, scores.fp, scores.fn) == (3, 2, 5, 3)
    assert scores.precision == pytest.approx(2 / 7)
    assert scores.recall == pytest.approx(2 / 5)
    assert scores.f1 == pytest.approx(1 / 3)
    assert scores.fp_kinds == {"duplicate": 1, "wrong_class": 1, "localisation": 1, "background": 2}
    helmet, bare = scores.per_class
    assert (helmet["truth"], helmet["tp"], helmet["fp"], helmet["fn"]) == (3, 1, 4, 2)
    assert (helmet["precision"], helmet["recall"], helmet["f1"]) == pytest.approx((1 / 5, 1 / 3, 1 / 4))
    assert (bare["truth"], bare["tp"], bare["fp"], bare["fn"]) == (2, 1, 1, 1)
    assert (bare["precision"], bare["recall"], bare["f1"]) == pytest.approx((1 / 2, 1 / 2, 1 / 2))
    # each class has one true positive at the top: recall 1/3 (34 of 101 points) and 1/2 (51 points) at precision 1
    assert (helmet["ap50"], bare["ap50"]) == pytest.approx((34 / 101, 51 / 101))
    assert scores.map50 == pytest.approx(85 / 202)
    assert scores.map50_95 == pytest.approx(85 / 202)  # both true positives are exact
    assert scores.sizes == [
        {"bucket": "<16", "truth": 1, "matched": 0, "recall": 0.0},
        {"bucket": "16-32", "truth": 1, "matched": 1, "recall": 1.0},
        {"bucket": "32-64", "truth": 2, "matched": 1, "recall": 0.5},
        {"bucket": "64-128", "truth": 0, "matched": 0, "recall": 0.0},
        {"bucket": ">=128", "truth": 1, "matched": 0, "recall": 0.0},
    ]
    # d12 takes the leftover t101 across classes; d11 (t100 is taken), d13 (IoU 0.3), d15 and d16 are background
    assert scores.confusion_labels == [*CLASSES, "background"]
    assert scores.confusion == [[1, 0, 2], [1, 1, 0], [3, 1, 0]]


def test_hand_scene_matching():
    detections, truth, images = _hand_scene()
    matching = match(detections, truth, images=images)
    result = matching.detections
    assert result.index.tolist() == detections.index.tolist()
    kinds = ["tp", "duplicate", "wrong_class", "localisation", "tp", "background", "background"]
    assert result["kind"].tolist() == kinds
    assert result["tp"].tolist() == [True, False, False, False, True, False, False]
    assert result["truth_index"].tolist() == [100, -1, -1, -1, 104, -1, -1]
    assert result["best_iou"].tolist() == pytest.approx([1.0, 0.95, 1.0, 0.3, 1.0, 0.0, 0.0])
    assert result["class_iou"].tolist() == pytest.approx([1.0, 0.95, 0.0, 0.3, 1.0, 0.0, 0.0])
    assert matching.truth["matched"].tolist() == [True, False, False, False, True]
    assert matching.truth["detection_index"].tolist() == [10, -1, -1, -1, 14]

    table = counts_by_conf(matching, [0.0, 0.65, 0.99], CLASSES)
    everything = table[table["class"] == "all"]
    assert everything[["tp", "fp", "fn"]].values.tolist() == [[2, 5, 3], [1, 3, 4], [0, 0, 5]]


def test_conf_keeps_scores_at_the_threshold():
    detections, truth, images = _hand_scene()
    scores = score(detections, truth, images, CLASSES, conf=0.5)  # d14 scores exactly 0.5
    assert (scores.tp, scores.fp, scores.fn) == (2, 4, 3)
    assert scores.fp_kinds == {"duplicate": 1, "wrong_class": 1, "localisation": 1, "background": 1}


def test_custom_size_edges():
    detections, truth, images = _hand_scene()
    sizes = score(detections, truth, images, CLASSES, size_edges=(0, 50, 100)).sizes
    # the 141 px t103 is outside every bucket
    assert sizes == [
        {"bucket": "<50", "truth": 3, "matched": 1, "recall": pytest.approx(1 / 3)},
        {"bucket": "50-100", "truth": 1, "matched": 1, "recall": 1.0},
    ]
    with pytest.raises(ValueError, match="increasing"):
        score(detections, truth, images, CLASSES, size_edges=(0, 32, 16))


def test_ties_follow_input_order():
    truth = pd.DataFrame([("a.jpg", 0, 0, 0, 10, 20), ("a.jpg", 0, 0, 0, 10, 20)], columns=TRUTH_COLUMNS, index=[5, 6])
    detections = pd.DataFrame(
        [("a.jpg", 0, 0.5, 0, 0, 10, 18), ("a.jpg", 0, 0.5, 0, 0, 10, 19), ("a.jpg", 0, 0.5, 0, 0, 10, 17)],
        columns=DETECTION_COLUMNS,
        index=[9, 3, 4],
    )
    matching = match(detections, truth)
    # equal scores: the earlier rows take the boxes; equal IoU: the later truth row first, as pycocotools
    assert matching.detections["truth_index"].tolist() == [6, 5, -1]
    assert matching.detections["kind"].tolist() == ["tp", "tp", "duplicate"]


def test_zero_over_zero_is_zero():
    empty_detections = pd.DataFrame(columns=DETECTION_COLUMNS)
    empty_truth = pd.DataFrame(columns=TRUTH_COLUMNS)
    nothing = score(empty_detections, empty_truth, ["a.jpg"], CLASSES)
    counts = (nothing.tp, nothing.fp, nothing.fn, nothing.precision, nothing.recall, nothing.f1)
    assert counts == (0, 0, 0, 0.0, 0.0, 0.0)
    assert (nothing.map50, nothing.map50_95) == (0.0, 0.0)
    assert nothing.per_class[0] == {
        "class": CLASSES[0], "truth": 0, "tp": 0, "fp": 0, "fn": 0, "precision": 0.0, "recall": 0.0, "f1": 0.0,
        "ap50": None, "ap50_95": None,
    }
    assert all(row["recall"] == 0.0 for row in nothing.sizes)
    assert nothing.fp_kinds == dict.fromkeys(FP_KINDS, 0)
    assert nothing.confusion == [[0, 0, 0]] * 3

    detections, truth, images = _hand_scene()
    alarms = score(detections, empty_truth, images, CLASSES)
    assert (alarms.tp, alarms.fp, alarms.fn, alarms.precision, alarms.recall, alarms.f1) == (0, 7, 0, 0.0, 0.0, 0.0)
    assert alarms.fp_kinds["background"] == 7 and alarms.map50 == 0.0
    misses = score(empty_detections, truth, images, CLASSES)
    assert (misses.tp, misses.fp, misses.fn, misses.precision, misses.recall) == (0, 0, 5, 0.0, 0.0)
    assert [row["ap50"] for row in misses.per_class] == [0.0, 0.0]
    assert misses.confusion == [[0, 0, 3], [0, 0, 2], [0, 0, 0]]


def test_unknown_images_and_classes_are_errors():
    detections, truth, images = _hand_scene()
    ghost = pd.concat([detections, detections.head(1).assign(image="ghost.jpg")], ignore_index=True)
    with pytest.raises(ValueError, match="ghost.jpg"):
        score(ghost, truth, images, CLASSES)
    with pytest.raises(ValueError, match="ghost.jpg"):
        match(ghost, truth, images=images)
    with pytest.raises(ValueError, match="cls outside"):
        score(detections.assign(cls=2), truth, images, CLASSES)
    with pytest.raises(ValueError, match="score"):
        score(detections.drop(columns="score"), truth, images, CLASSES)


def test_box_iou():
    a = np.array([[0, 0, 10, 10], [5, 5, 6, 6]])
    b = np.array([[0, 0, 10, 10], [0, 0, 10, 5], [5, 0, 15, 10], [20, 20, 30, 30], [3, 3, 3, 3]])
    assert box_iou(a, b) == pytest.approx(np.array([[1.0, 0.5, 1 / 3, 0.0, 0.0], [0.01, 0.0, 0.01, 0.0, 0.0]]))
    assert box_iou([[3, 3, 3, 3]], [[3, 3, 3, 3]]).tolist() == [[0.0]]
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 5)
