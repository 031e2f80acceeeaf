"""Hybrid auto-labelling (recipes.py, ``labels: hybrid``): the model's boxes first, the source's
own where no model box overlaps them, every box with its origin. The model's boxes are written
by hand here (what a full-image pass returns); the asset runs a real model in test_pipeline.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from hoban_pipelines.core.lake import publish_directory
from hoban_pipelines.core.yolo_format import read_yolo_dataset
from hoban_pipelines.datasets.recipes import (
    ORIGIN_MODEL, ORIGIN_SOURCE, DatasetRecipe, ModelLabels, RecipeError, SourceData, SourceSpec, build_recipe,
    hybrid_source,
)

CLASSES = ["person_with_helmet", "person_without_helmet"]
HELMET, NO_HELMET = 0, 1
REPO = Path(__file__).resolve().parents[2]
SPEC = SourceSpec("base_dataset", labels="hybrid", model="model_go2k_v2", conf=0.4, match_iou=0.5)


def _source(boxes: list[tuple[str, int, float, float, float, float]], sizes: dict[str, tuple[int, int]]) -> SourceData:
    images = pd.DataFrame([{"image": name, "path": f"/nowhere/{name}", "width": w, "height": h, "sha256": name}
                           for name, (w, h) in sizes.items()])
    rows = [{"image": image, "cls": cls, "x1": x1, "y1": y1, "x2": x2, "y2": y2,
             "img_w": sizes[image][0], "img_h": sizes[image][1]} for image, cls, x1, y1, x2, y2 in boxes]
    return SourceData("base_dataset", CLASSES, images,
                      pd.DataFrame(rows, columns=["image", "cls", "x1", "y1", "x2", "y2", "img_w", "img_h"]))


def _predicted(boxes: list[tuple[str, int, float, float, float, float, float]], classes=CLASSES) -> ModelLabels:
    frame = pd.DataFrame(boxes, columns=["image", "cls", "score", "x1", "y1", "x2", "y2"])
    return ModelLabels(list(classes), frame, {"model_version": "v1"})


SIZES = {"a.jpg": (200, 100), "b.jpg": (200, 100), "c.jpg": (200, 100)}


def test_model_boxes_replace_the_source_boxes_they_overlap_and_the_rest_fill_in():
    source = _source([("a.jpg", HELMET, 10, 10, 50, 90),     # the model finds this person: replaced
                      ("a.jpg", NO_HELMET, 120, 10, 160, 90),  # the model misses this one: kept
                      ("b.jpg", HELMET, 10, 10, 50, 90)],     # the model finds nothing on b: kept
                     SIZES)
    predicted = _predicted([("a.jpg", HELMET, 0.9, 12, 12, 52, 92),
                            ("c.jpg", NO_HELMET, 0.8, 60, 20, 90, 80)])  # c had no boxes of its own
    labelled, counts = hybrid_source(source, predicted, SPEC)
    boxes = labelled.boxes.sort_values(["image", "x1"]).reset_index(drop=True)
    assert boxes[["image", "origin"]].values.tolist() == [
        ["a.jpg", ORIGIN_MODEL], ["a.jpg", ORIGIN_SOURCE], ["b.jpg", ORIGIN_SOURCE], ["c.jpg", ORIGIN_MODEL]]
    assert boxes.loc[0, "x1"] == 12 and boxes.loc[0, "score"] == pytest.approx(0.9)
    assert np.isnan(boxes.loc[1, "score"])
    assert counts["model_boxes"] == 2 and counts["source_boxes_kept"] == 2 and counts["source_boxes_replaced"] == 1
    assert counts["images_labelled_by_model"] == 2 and counts["images_from_source_only"] == 1
    assert counts["model_version"] == "v1" and counts["model"] == "model_go2k_v2"


def test_the_match_ignores_classes_and_needs_the_iou():
    source = _source([("a.jpg", HELMET, 10, 10, 50, 90), ("b.jpg", HELMET, 10, 10, 50, 90)], SIZES)
    # on a: the same person with the other class (the model wins); on b: a box overlapping at IoU 1/3
    predicted = _predicted([("a.jpg", NO_HELMET, 0.9, 10, 10, 50, 90), ("b.jpg", HELMET, 0.9, 30, 10, 70, 90)])
    boxes = hybrid_source(source, predicted, SPEC)[0].boxes
    on_a = boxes[boxes["image"] == "a.jpg"]
    assert on_a[["cls", "origin"]].values.tolist() == [[NO_HELMET, ORIGIN_MODEL]]
    assert sorted(boxes.loc[boxes["image"] == "b.jpg", "origin"]) == [ORIGIN_MODEL, ORIGIN_SOURCE]
    looser = SourceSpec(**{**SPEC.__dict__, "match_iou": 0.3})
    assert sorted(hybrid_source(source, predicted, looser)[0].boxes.loc[lambda b: b["image"] == "b.jpg", "origin"]) == [
        ORIGIN_MODEL]


def test_boxes_below_conf_are_not_used_and_boxes_are_clipped_to_the_image():
    source = _source([("a.jpg", HELMET, 10, 10, 50, 90)], SIZES)
    predicted = _predicted([("a.jpg", HELMET, 0.39, 10, 10, 50, 90),  # below conf 0.4: the source box stays
                            ("b.jpg", HELMET, 0.4, -20, -5, 40, 130),   # at conf, past the edges
                            ("b.jpg", HELMET, 0.9, 205, 10, 230, 50),   # wholly outside: clips to nothing
                            ("elsewhere.jpg", HELMET, 0.9, 0, 0, 10, 10)])  # not an image of the source
    boxes = hybrid_source(source, predicted, SPEC)[0].boxes
    assert boxes.loc[boxes["image"] == "a.jpg", "origin"].tolist() == [ORIGIN_SOURCE]
    on_b = boxes[boxes["image"] == "b.jpg"]
    assert on_b[["x1", "y1", "x2", "y2"]].values.tolist() == [[0, 0, 40, 100]]
    assert set(boxes["image"]) == {"a.jpg", "b.jpg"}


def test_model_classes_are_matched_by_name_and_an_unknown_one_is_refused():
    source = _source([], SIZES)
    swapped = _predicted([("a.jpg", 0, 0.9, 10, 10, 50, 90)], classes=list(reversed(CLASSES)))
    assert hybrid_source(source, swapped, SPEC)[0].boxes["cls"].tolist() == [NO_HELMET]
    other = _predicted([("a.jpg", 0, 0.9, 10, 10, 50, 90)], classes=["car_damage"])
    with pytest.raises(RecipeError, match=r"source 'base_dataset': the model model_go2k_v2 predicts classes \['car_damage'\]"):
        hybrid_source(source, other, SPEC)


@pytest.mark.parametrize("entry,problem", [
    ({"labels": "hybrid"}, "labels: hybrid needs model"),
    ({"model": "model_go2k_v2"}, "labels a source only with labels: hybrid"),
    ({"labels": "pseudo", "model": "m"}, "labels must be 'source' or 'hybrid'"),
    ({"labels": "hybrid", "model": "m", "conf": 1.5}, r"conf must be a confidence in \(0, 1\)"),
    ({"labels": "hybrid", "model": "m", "match_iou": 0}, r"match_iou must be an IoU in \(0, 1\]"),
    ({"labels": "hybrid", "model": "m", "iou": 0.5}, r"unknown key\(s\) \['iou'\]"),
])
def test_a_bad_hybrid_entry_names_the_source_and_the_field(entry, problem):
    raw = {"name": "r", "classes": CLASSES, "sources": [{"name": "base_dataset", **entry}]}
    with pytest.raises(RecipeError, match=problem):
        DatasetRecipe.from_dict(raw)


def test_the_demo_recipe_is_hybrid_on_go2k_v2():
    recipe = DatasetRecipe.load(REPO / "recipes" / "helmet_hybrid.yaml")
    assert [(s.name, s.model, s.conf) for s in recipe.hybrid_sources] == [("base_dataset", "model_go2k_v2", 0.4)]
    raw = yaml.safe_load((REPO / "recipes" / "helmet_hybrid.yaml").read_text())
    assert raw["sources"][0]["labels"] == "hybrid"


def test_a_build_records_each_box_origin_and_an_image_the_model_labels_is_no_background(small_site, tmp_path):
    dataset = read_yolo_dataset(small_site / "base_dataset")
    base = SourceData("base_dataset", dataset.classes, dataset.images, dataset.boxes)
    backgrounds = sorted(set(base.images["image"]) - set(base.boxes["image"]))
    labelled = sorted(set(base.boxes["image"]))[:20]
    first = base.boxes[base.boxes["image"].isin(labelled)].groupby("image").head(1)
    # the model finds the first person of 20 images, and one person on a source background
    found = first.assign(score=0.9)[["image", "cls", "score", "x1", "y1", "x2", "y2"]]
    extra = pd.DataFrame([{"image": backgrounds[0], "cls": HELMET, "score": 0.8, "x1": 5, "y1": 5, "x2": 60, "y2": 120}])
    predicted = ModelLabels(CLASSES, pd.concat([found, extra], ignore_index=True), {"model_version": "v1"})
    recipe = DatasetRecipe(name="hybrid", classes=CLASSES, sources=[SPEC], dedup_threshold=None)
    out = tmp_path / "build"
    with publish_directory(out) as staging:
        report = build_recipe([base], recipe, staging, {"base_dataset": predicted})
    boxes = pd.read_parquet(out / "manifests" / "boxes.parquet")
    images = pd.read_parquet(out / "manifests" / "images.parquet")
    assert (boxes["origin"] == ORIGIN_MODEL).sum() == 21
    assert (boxes["origin"] == ORIGIN_SOURCE).sum() == len(base.boxes) - 20
    assert not images.set_index("source_image").loc[backgrounds[0], "background"]
    assert report.details["steps"]["hybrid"]["base_dataset"]["source_boxes_replaced"] == 20
    by_origin = {row["origin"]: row for row in report.details["boxes_by_origin"].rows}
    assert sum(by_origin[ORIGIN_MODEL][f"boxes_{c}"] for c in CLASSES) == 21


def test_a_hybrid_source_without_the_models_boxes_is_refused(small_site, tmp_path):
    dataset = read_yolo_dataset(small_site / "base_dataset")
    base = SourceData("base_dataset", dataset.classes, dataset.images, dataset.boxes)
    recipe = DatasetRecipe(name="hybrid", classes=CLASSES, sources=[SPEC], dedup_threshold=None)
    with pytest.raises(RecipeError, match=r"hybrid source\(s\) \['base_dataset'\] come without the model's boxes"):
        build_recipe([base], recipe, tmp_path / "never")
