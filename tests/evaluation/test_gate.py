"""The full-image gate on hand-made detections: where exactly it keeps and drops a sliced box."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hoban_pipelines.evaluation.gate import Gate, apply_gate, gate_mask

COLUMNS = ["image", "cls", "score", "x1", "y1", "x2", "y2"]


def boxes(*rows) -> pd.DataFrame:
    """Rows of (image, cls, score, centre x, centre y, half size) as detections."""
    return pd.DataFrame([(image, cls, score, cx - half, cy - half, cx + half, cy + half)
                         for image, cls, score, cx, cy, half in rows], columns=COLUMNS)


# one full-image person at (100, 100) on frame "a"
FULL = boxes(("a", 0, 0.9, 100.0, 100.0, 20.0))


def test_centre_exactly_at_the_radius_is_kept_and_just_beyond_dropped():
    """The rule is distance <= radius: 3-4-5 triangles give exact distances of 40."""
    sliced = boxes(("a", 0, 0.5, 124.0, 132.0, 5.0),  # distance 40 exactly
                   ("a", 0, 0.5, 140.0, 100.0, 5.0),  # 40 along x
                   ("a", 0, 0.5, 140.001, 100.0, 5.0),  # just beyond
                   ("a", 0, 0.5, 100.0, 100.0, 50.0))  # same centre, much bigger box: only centres count
    assert gate_mask(sliced, FULL, Gate(0.2, 40.0)).tolist() == [True, True, False, True]


def test_radius_zero_keeps_only_coincident_centres():
    sliced = boxes(("a", 0, 0.5, 100.0, 100.0, 3.0), ("a", 0, 0.5, 100.5, 100.0, 3.0))
    assert gate_mask(sliced, FULL, Gate(0.2, 0.0)).tolist() == [True, False]


def test_full_image_detections_below_the_gate_conf_are_ignored():
    sliced = boxes(("a", 0, 0.5, 100.0, 100.0, 5.0))
    weak = boxes(("a", 0, 0.19, 100.0, 100.0, 20.0))
    assert not gate_mask(sliced, weak, Gate(0.2, 40.0)).any()
    at_conf = boxes(("a", 0, 0.2, 100.0, 100.0, 20.0))  # conf is inclusive
    assert gate_mask(sliced, at_conf, Gate(0.2, 40.0)).all()
    # a weak anchor next to a strong one does not widen the gate
    both = pd.concat([FULL, boxes(("a", 0, 0.1, 300.0, 100.0, 20.0))], ignore_index=True)
    far = boxes(("a", 0, 0.5, 300.0, 100.0, 5.0))
    assert not gate_mask(far, both, Gate(0.2, 40.0)).any()
    assert gate_mask(far, both, Gate(0.1, 40.0)).all()


def test_per_class_gate_needs_the_same_class_and_the_agnostic_one_does_not():
    sliced = boxes(("a", 1, 0.5, 100.0, 100.0, 5.0), ("a", 0, 0.5, 105.0, 100.0, 5.0))
    assert gate_mask(sliced, FULL, Gate(0.2, 40.0, class_agnostic=True)).tolist() == [True, True]
    assert gate_mask(sliced, FULL, Gate(0.2, 40.0, class_agnostic=False)).tolist() == [False, True]


def test_frames_are_gated_by_their_own_full_image_detections_only():
    """A box on a frame without full-image detections is dropped, even where another frame has one."""
    sliced = boxes(("b", 0, 0.9, 100.0, 100.0, 5.0), ("a", 0, 0.5, 100.0, 100.0, 5.0),
                   ("b", 0, 0.8, 101.0, 100.0, 5.0), ("a", 0, 0.5, 500.0, 500.0, 5.0))
    assert gate_mask(sliced, FULL, Gate()).tolist() == [False, True, False, False]


def test_mask_follows_row_positions_on_any_index():
    """A filtered slice (gaps in its index) is masked by position, as apply_gate uses it."""
    sliced = boxes(("a", 0, 0.5, 100.0, 100.0, 5.0), ("a", 0, 0.5, 900.0, 100.0, 5.0),
                   ("a", 0, 0.5, 110.0, 100.0, 5.0))
    sliced.index = [10, 3, 7]
    kept = apply_gate(sliced, FULL, Gate())
    assert kept.index.tolist() == [10, 7]
    pd.testing.assert_frame_equal(kept, sliced.loc[[10, 7]])


def test_no_gate_keeps_everything_as_is():
    sliced = boxes(("a", 0, 0.5, 900.0, 900.0, 5.0))
    assert apply_gate(sliced, FULL, None) is sliced


def test_empty_inputs():
    sliced = boxes(("a", 0, 0.5, 100.0, 100.0, 5.0))
    empty = FULL.iloc[:0]
    assert gate_mask(sliced, empty, Gate()).tolist() == [False]  # nothing seen whole: everything dropped
    mask = gate_mask(sliced.iloc[:0], FULL, Gate())
    assert mask.dtype == bool and mask.shape == (0,)
    assert apply_gate(sliced.iloc[:0], FULL, Gate()).empty
    assert apply_gate(sliced, empty, Gate()).empty


def test_many_boxes_against_a_brute_force_rule():
    """Random frames, classes and boxes: the mask equals the rule written out box by box."""
    rng = np.random.default_rng(3)

    def random_boxes(n):
        return pd.DataFrame({"image": rng.choice(["a", "b", "c"], n), "cls": rng.integers(0, 2, n),
                             "score": rng.random(n), "x1": rng.uniform(0, 400, n), "y1": rng.uniform(0, 300, n),
                             "x2": 0.0, "y2": 0.0}).assign(x2=lambda t: t["x1"] + rng.uniform(1, 60, n),
                                                          y2=lambda t: t["y1"] + rng.uniform(1, 60, n))

    sliced, full = random_boxes(300), random_boxes(40)
    for gate in (Gate(0.2, 40.0), Gate(0.5, 80.0, class_agnostic=False), Gate(0.0, 10.0)):
        expected = []
        for s in sliced.itertuples():
            centre = np.array([(s.x1 + s.x2) / 2, (s.y1 + s.y2) / 2])
            expected.append(any(
                f.image == s.image and f.score >= gate.conf and (gate.class_agnostic or f.cls == s.cls)
                and np.linalg.norm(centre - [(f.x1 + f.x2) / 2, (f.y1 + f.y2) / 2]) <= gate.radius
                for f in full.itertuples()))
        assert gate_mask(sliced, full, gate).tolist() == expected, gate.name
        assert 0 < sum(expected) < len(expected)  # the case exercises both outcomes


@pytest.mark.parametrize("kwargs, message", [({"conf": 1.0}, "gate conf 1.0 must be in"),
                                             ({"conf": -0.1}, "gate conf -0.1 must be in"),
                                             ({"radius": -1}, "gate radius -1 px must be >= 0")])
def test_invalid_gates_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Gate(**kwargs)


def test_gate_names():
    assert Gate().name == "C0.2/R40"
    assert Gate(0.25, 120.0, class_agnostic=False).name == "C0.25/R120/per-class"
    assert Gate(0.0, 0.0).name == "C0/R0"
