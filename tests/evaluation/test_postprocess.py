"""The vectorised postprocesses against sahi 0.12's own NMS, NMM and GREEDYNMM classes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sahi.postprocess.backends import get_postprocess_backend, set_postprocess_backend
from sahi.postprocess.combine import GreedyNMMPostprocess, NMMPostprocess, NMSPostprocess
from sahi.prediction import ObjectPrediction

from hoban_pipelines.evaluation.postprocess import METHODS, METRICS, Postprocess, postprocess, postprocess_frames

SAHI = {"NMS": NMSPostprocess, "NMM": NMMPostprocess, "GREEDYNMM": GreedyNMMPostprocess}
SETTINGS = [
    Postprocess(method, metric, threshold, agnostic)
    for method in METHODS
    for metric in METRICS
    for threshold in (0.3, 0.4, 0.5)
    for agnostic in (False, True)
]
WIDTH, HEIGHT = 1920, 1080
BOX = ["x1", "y1", "x2", "y2"]


@pytest.fixture(scope="module", autouse=True)
def numpy_backend():
    """sahi's reference backend; on a CUDA machine "auto" would pick torchvision, whose IOU NMS uses ``>``."""
    previous = get_postprocess_backend()
    set_postprocess_backend("numpy")
    yield
    set_postprocess_backend(previous)


def sahi_postprocess(boxes, scores, classes, setting: Postprocess):
    """The same frame through sahi's class for the setting."""
    predictions = [
        ObjectPrediction(bbox=box.tolist(), score=float(score), category_id=int(cls))
        for box, score, cls in zip(np.asarray(boxes, float).reshape(-1, 4), scores, classes)
    ]
    merged = SAHI[setting.method](
        match_threshold=setting.threshold, match_metric=setting.metric, class_agnostic=setting.class_agnostic
    )(predictions)
    return (
        np.array([p.bbox.to_xyxy() for p in merged], float).reshape(-1, 4),
        np.array([p.score.value for p in merged], float),
        np.array([p.category.id for p in merged], int),
    )


def assert_same(actual, expected):
    """Same set of detections: boxes within 1e-6, identical scores and classes."""

    def rows(boxes, scores, classes):
        table = np.column_stack([classes, scores, boxes]).astype(float)
        return table[np.lexsort(table.T[::-1])]

    got, want = rows(*actual), rows(*expected)
    assert got.shape == want.shape, f"{len(got)} detections, expected {len(want)}"
    np.testing.assert_array_equal(got[:, :2], want[:, :2])
    np.testing.assert_allclose(got[:, 2:], want[:, 2:], rtol=0, atol=1e-6)


def random_frame(rng: np.random.Generator, objects: int, region=(0, 0, WIDTH, HEIGHT)):
    """Detections as sliced inference leaves them: jittered duplicates, halves cut at a tile border,
    exact copies (same or other class, same or lower score), overlap chains, rare zero-width boxes.
    Quarter-pixel coordinates and two-decimal scores give exact ties and stay exact in sahi's float32."""
    boxes, scores, classes = [], [], []
    rx1, ry1, rx2, ry2 = region
    for _ in range(objects):
        w, h = rng.uniform(8, 150, 2)
        x, y = rng.uniform(rx1, rx2 - w), rng.uniform(ry1, ry2 - h)
        base = np.array([x, y, x + w, y + h])
        kind = rng.choice(["single", "jitter", "border", "copy", "chain", "flat"], p=[0.2, 0.25, 0.2, 0.15, 0.18, 0.02])
        if kind == "single":
            copies = [base]
        elif kind == "jitter":
            copies = [base + rng.uniform(-0.15, 0.15, 4) * [w, h, w, h] for _ in range(rng.integers(2, 5))]
        elif kind == "border":
            axis = rng.integers(2)
            cut = base[axis] + rng.uniform(0.2, 0.8) * (base[axis + 2] - base[axis])
            first, second = base.copy(), base.copy()
            first[axis + 2] = cut + rng.uniform(0, 4)
            second[axis] = cut - rng.uniform(0, 4)
            copies = [base, first, second]
        elif kind == "copy":
            copies = [base] * rng.integers(2, 4)
        elif kind == "chain":
            axis = rng.integers(2)
            step = np.zeros(4)
            step[[axis, axis + 2]] = rng.uniform(0.3, 0.6) * (base[axis + 2] - base[axis])
            copies = [base + k * step for k in range(rng.integers(3, 6))]
        else:
            copies = [np.array([x, y, x, y + h])]
        score, cls = np.round(rng.uniform(0.05, 1.0), 2), rng.integers(2)
        for copy in copies:
            boxes.append(copy)
            tied = rng.random() < 0.35
            scores.append(score if tied else max(0.01, np.round(score - rng.uniform(0, 0.3), 2)))
            classes.append(cls if rng.random() < 0.8 else 1 - cls)
    boxes = np.round(np.clip(boxes, 0, [WIDTH, HEIGHT, WIDTH, HEIGHT]) * 4) / 4
    return boxes.reshape(-1, 4), np.array(scores, float), np.array(classes, int)


@pytest.fixture(scope="module")
def frames() -> list:
    rng = np.random.default_rng(20240612)
    sparse = [random_frame(rng, int(rng.integers(1, 40))) for _ in range(40)]
    crowded = [random_frame(rng, 120, region=(600, 300, 1000, 600)) for _ in range(2)]
    return sparse + crowded


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_matches_sahi_on_random_frames(frames, setting):
    for boxes, scores, classes in frames:
        assert_same(postprocess(boxes, scores, classes, setting), sahi_postprocess(boxes, scores, classes, setting))


def as_table(frames) -> pd.DataFrame:
    """The frames as one detections table, rows of all frames interleaved, plus a column naming each row."""
    parts = [
        pd.DataFrame({"image": f"f{i:02d}", "cls": classes, "score": scores, **dict(zip(BOX, boxes.T)),
                      "det": 1000 * i + np.arange(len(scores))})
        for i, (boxes, scores, classes) in enumerate(frames)
    ]
    return pd.concat(parts, ignore_index=True).sample(frac=1, random_state=3)


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_frames_at_once_equal_frame_by_frame(frames, setting):
    table = as_table(frames)
    out = postprocess_frames(table, setting)
    assert list(out.columns) == list(table.columns)
    assert list(out["image"].unique()) == list(table["image"].unique())  # grouped, first appearance order
    for image, rows in out.groupby("image", sort=False):
        frame = table[table["image"] == image]
        expected = postprocess(frame[BOX].to_numpy(), frame["score"].to_numpy(), frame["cls"].to_numpy(), setting)
        assert_same((rows[BOX].to_numpy(), rows["score"].to_numpy(), rows["cls"].to_numpy()), expected)
        assert rows["score"].is_monotonic_decreasing
        # every row carries the extra column of a distinct input row of its own frame
        assert rows["det"].isin(frame["det"]).all() and rows["det"].is_unique


# Hand-made frames whose answers are written out; each is also sahi's answer.
A = [0, 0, 10, 10]


def check(boxes, scores, classes, setting, expected):
    want = (np.array([e[0] for e in expected], float).reshape(-1, 4), np.array([e[1] for e in expected], float),
            np.array([e[2] for e in expected], int))
    assert_same(postprocess(np.array(boxes, float), scores, classes, setting), want)
    assert_same(sahi_postprocess(boxes, scores, classes, setting), want)


def test_nms_suppresses_at_the_threshold_itself():
    # IOS(A, B) = 50/100 = 0.5, IOU(A, B) = 50/150; C lies inside A: IOS 1, IOU 40/100 = 0.4
    boxes = [A, [5, 0, 15, 10], [0, 0, 4, 10], [50, 50, 60, 60]]
    scores, classes = [0.9, 0.8, 0.7, 0.6], [0, 0, 0, 0]
    check(boxes, scores, classes, Postprocess("NMS", "IOS", 0.5), [(A, 0.9, 0), ([50, 50, 60, 60], 0.6, 0)])
    check(boxes, scores, classes, Postprocess("NMS", "IOU", 0.4),
          [(A, 0.9, 0), ([5, 0, 15, 10], 0.8, 0), ([50, 50, 60, 60], 0.6, 0)])
    # per class, B (class 1) survives A; class-agnostic it does not
    classes = [0, 1, 0, 0]
    check(boxes, scores, classes, Postprocess("NMS", "IOS", 0.5),
          [(A, 0.9, 0), ([5, 0, 15, 10], 0.8, 1), ([50, 50, 60, 60], 0.6, 0)])
    check(boxes, scores, classes, Postprocess("NMS", "IOS", 0.5, class_agnostic=True),
          [(A, 0.9, 0), ([50, 50, 60, 60], 0.6, 0)])


def test_greedy_nmm_rechecks_against_the_growing_box_and_drops_failures():
    # A claims B (IOU 70/130) and C (IOU 60/140 = 0.43); after B, A+B = [0, 0, 13, 10] has IOU 60/170 with C,
    # so C is dropped: it neither merges nor survives, although it reaches y = 14
    boxes = [A, [3, 0, 13, 10], [0, 4, 10, 14]]
    check(boxes, [0.9, 0.8, 0.7], [0, 0, 0], Postprocess("GREEDYNMM", "IOU", 0.4), [([0, 0, 13, 10], 0.9, 0)])


def test_merges_on_a_score_tie_take_the_absorbed_class():
    # equal scores, IOS 0.8: GREEDYNMM merges and keeps B's class; NMM never merges two different boxes
    # of equal score, only an exact duplicate (which again hands over its class)
    boxes, scores, classes = [A, [2, 0, 12, 10]], [0.9, 0.9], [0, 1]
    check(boxes, scores, classes, Postprocess("GREEDYNMM", "IOS", 0.5, class_agnostic=True),
          [([0, 0, 12, 10], 0.9, 1)])
    check(boxes, scores, classes, Postprocess("NMM", "IOS", 0.5, class_agnostic=True),
          [(A, 0.9, 0), ([2, 0, 12, 10], 0.9, 1)])
    check([A, A], scores, classes, Postprocess("NMM", "IOS", 0.5, class_agnostic=True), [(A, 0.9, 1)])


def test_nmm_merges_along_chains_greedy_nmm_does_not():
    # IOS(A, B) = IOS(B, C) = 0.5 but A and C only touch
    boxes, scores, classes = [A, [5, 0, 15, 10], [10, 0, 20, 10]], [0.9, 0.8, 0.7], [0, 0, 0]
    check(boxes, scores, classes, Postprocess("NMM", "IOS", 0.5), [([0, 0, 20, 10], 0.9, 0)])
    check(boxes, scores, classes, Postprocess("GREEDYNMM", "IOS", 0.5),
          [([0, 0, 15, 10], 0.9, 0), ([10, 0, 20, 10], 0.7, 0)])


def test_frames_keep_the_keeping_rows_other_columns():
    table = pd.DataFrame(
        {
            "image": ["b", "a", "b", "b", "a"],
            "cls": [0, 0, 0, 0, 0],
            "score": np.array([0.8, 0.5, 0.9, 0.7, 0.6], np.float32),
            "x1": [3.0, 0, 0, 0, 100], "y1": [0.0, 0, 0, 4, 100], "x2": [13.0, 10, 10, 10, 110],
            "y2": [10.0, 10, 10, 14, 110],
            "tile": ["t1", "t0", "t0", "t2", "t3"],
        }
    )
    out = postprocess_frames(table, Postprocess("GREEDYNMM", "IOU", 0.4))
    assert out.dtypes.equals(table.dtypes)
    assert out.to_dict("list") == {
        "image": ["b", "a", "a"],
        "cls": [0, 0, 0],
        "score": [pytest.approx(0.9), pytest.approx(0.6), pytest.approx(0.5)],
        "x1": [0.0, 100, 0], "y1": [0.0, 100, 0], "x2": [13.0, 110, 10], "y2": [10.0, 110, 10],
        "tile": ["t0", "t3", "t0"],
    }


@pytest.mark.parametrize("setting", [Postprocess(m) for m in METHODS], ids=lambda s: s.name)
def test_empty_input(setting):
    boxes, scores, classes = postprocess(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), setting)
    assert boxes.shape == (0, 4) and scores.shape == (0,) and classes.shape == (0,)
    table = pd.DataFrame({c: pd.Series(dtype=float) for c in ["score", "x1", "y1", "x2", "y2"]})
    table.insert(0, "image", pd.Series(dtype=str))
    table.insert(1, "cls", pd.Series(dtype=int))
    out = postprocess_frames(table, setting)
    assert out.empty and list(out.columns) == list(table.columns)


def test_names():
    assert Postprocess().name == "NMS/IOS/0.4"
    assert Postprocess("GREEDYNMM", "IOU", 0.5, class_agnostic=True).name == "GREEDYNMM/IOU/0.5/agnostic"


@pytest.mark.parametrize(
    "fields, named",
    [
        ({"method": "SOFTNMS"}, r"'SOFTNMS'.*'NMS', 'NMM', 'GREEDYNMM'"),
        ({"metric": "GIOU"}, r"'GIOU'.*'IOU', 'IOS'"),
        ({"threshold": 0}, r"threshold 0 must be in \(0, 1\]"),
        ({"threshold": 1.5}, r"threshold 1.5 must be in \(0, 1\]"),
        ({"threshold": -0.1}, r"threshold -0.1 must be in \(0, 1\]"),
        ({"threshold": "0.4"}, r"threshold '0.4' must be a number"),
    ],
)
def test_invalid_settings(fields, named):
    with pytest.raises(ValueError, match=named):
        Postprocess(**fields)


def test_missing_columns_and_mismatched_lengths():
    with pytest.raises(ValueError, match=r"\['score'\]"):
        postprocess_frames(pd.DataFrame(columns=["image", "cls", "x1", "y1", "x2", "y2"]), Postprocess())
    with pytest.raises(ValueError, match="2 boxes, 1 scores and 2 classes"):
        postprocess(np.zeros((2, 4)), np.zeros(1), np.zeros(2, int), Postprocess())
