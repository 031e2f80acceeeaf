from __future__ import annotations

import pandas as pd
import pytest

from hoban_pipelines.labels.cleaning import CleaningRule, apply
from hoban_pipelines.labels.label_map import LabelMap, LabelMapError

W, H = 1920, 1080


def _boxes(rows, minutes_apart=30):
    return pd.DataFrame(
        [{"image": i, "camera": c, "x1": x, "y1": y, "x2": x + w, "y2": y + h, "img_w": W, "img_h": H, "cls": 0, "timestamp": pd.Timestamp("2026-02-11 08:00") + pd.Timedelta(minutes=minutes_apart * int(str(i)[1:] or 0))} for i, c, x, y, w, h in rows]
    )


def test_recurring_rule_removes_only_small_boxes_that_recur_at_one_spot():
    planted = [(f"f{i}", "cam1", 700 + (i % 3), 300 - (i % 2), 30, 40) for i in range(5)]
    small_workers = [(f"f{i}", "cam1", 100 + 150 * i, 500, 12, 30) for i in range(5)]  # small, moving
    big = [("f0", "cam1", 900, 600, 40, 90)]
    other_camera = [("g0", "cam2", 700, 300, 30, 40)]  # same spot, other camera, once
    boxes = _boxes(planted + small_workers + big + other_camera)
    kept, removed, would = apply(boxes, CleaningRule())
    assert len(removed) == 5 and set(removed["x1"]) <= {700, 701, 702}
    assert (removed["removed_by"] == "recurring_small").all()
    assert len(kept) == len(boxes) - 5
    # the team's size-only rule would also take every small worker and the lone cam2 box
    assert would == {"recurring_small": 5, "small_box": 11}


def test_small_box_rule_is_the_teams_rule_and_none_removes_nothing():
    boxes = _boxes([("a", "cam1", 0, 0, 57, 53), ("a", "cam1", 0, 0, 58, 53), ("a", "cam1", 0, 0, 57, 54)])
    kept, removed, _ = apply(boxes, CleaningRule("small_box"))
    assert len(removed) == 1 and removed.iloc[0]["x2"] == 57  # both w and h must be small
    kept, removed, _ = apply(boxes, CleaningRule("none"))
    assert len(kept) == 3 and removed.empty


def test_recurrence_needs_enough_distinct_images():
    same_image_twice = [("f0", "cam1", 700, 300, 30, 40)] * 4 + [("f1", "cam1", 700, 300, 30, 40)]
    _, removed, _ = apply(_boxes(same_image_twice), CleaningRule(min_frames=3))
    assert removed.empty


def test_unknown_rule():
    with pytest.raises(ValueError, match="cleaning rule 'tiny' is unknown"):
        CleaningRule("tiny")


CLASSES = ["person_with_helmet", "person_without_helmet"]


def test_label_map_with_attributes_and_ignore(tmp_path):
    path = tmp_path / "map.yaml"
    path.write_text(
        "labels:\n  worker: person_with_helmet\n  head:\n    attribute: has_safety_helmet\n"
        "    values: {'yes': person_with_helmet, 'no': person_without_helmet}\nignore: [vehicle]\n"
    )
    mapping = LabelMap.load(path, CLASSES)
    assert mapping.class_of("head", {"has_safety_helmet": "no"}) == 1
    assert mapping.class_of("head", {"has_safety_helmet": "yes"}) == 0
    assert mapping.class_of("worker", {}) == 0
    assert mapping.class_of("vehicle", {}) is None
    with pytest.raises(LabelMapError, match="has_safety_helmet='maybe'"):
        mapping.class_of("head", {"has_safety_helmet": "maybe"})
    mapping.check_covers(["worker", "vehicle"], "x.xml")
    with pytest.raises(LabelMapError, match=r"x.xml: label\(s\) \['dog'\].*Labels found: \['dog', 'worker'\]"):
        mapping.check_covers(["worker", "dog"], "x.xml")


@pytest.mark.parametrize(
    "text, match",
    [
        ("labels: [a, b]\n", "needs a 'labels' mapping"),
        ("labels: {a: nobody}\n", r"unknown class\(es\) \['nobody'\]"),
        ("labels: {a: {attribute: x}}\n", "must map to a class name or to"),
        ("labels: {a: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_label_maps(tmp_path, text, match):
    path = tmp_path / "map.yaml"
    path.write_text(text)
    with pytest.raises(LabelMapError, match=match):
        LabelMap.load(path, CLASSES)


def test_a_worker_standing_still_through_a_burst_is_not_a_fixture():
    burst = [(f"f{i}", "cam1", 400, 500, 14, 36) for i in range(4)]  # 4 frames, 20 s apart
    _, removed, _ = apply(_boxes(burst, minutes_apart=1 / 3), CleaningRule())
    assert removed.empty
    _, removed, _ = apply(_boxes(burst, minutes_apart=15), CleaningRule())
    assert len(removed) == 4


def test_images_without_timestamps_count_as_separate_moments():
    boxes = _boxes([(f"f{i}", "cam1", 400, 500, 14, 36) for i in range(3)])
    boxes["timestamp"] = pd.NaT
    _, removed, _ = apply(boxes, CleaningRule())
    assert len(removed) == 3
