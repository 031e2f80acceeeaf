"""The general dataset builder (recipes.py) on the small demo site.

Sources: the site's generic ``base_dataset`` (close-up people), its CCTV snapshots with their
true boxes (fixed cameras: every frame looks alike to a thumbnail, and planted bursts 1-3 s
apart), and planted copies of base images made in-test (JPEG re-encode, PNG, byte copy).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pandas as pd
import pytest

from hoban_pipelines.datasets import near_duplicates as dedup
from hoban_pipelines.core.lake import file_sha256, publish_directory
from hoban_pipelines.datasets.recipes import DatasetRecipe, RecipeError, SourceData, SourceSpec, build_recipe
from hoban_pipelines.core.yolo_format import read_yolo_dataset

CLASSES = ["person_with_helmet", "person_without_helmet"]
HELMET, NO_HELMET = CLASSES
REPO = Path(__file__).resolve().parents[2]


def _recipe(sources: list[str], **overrides) -> DatasetRecipe:
    # the tests' default: nothing filtered, capped or balanced, so each test turns on its own rule
    return DatasetRecipe(**{"name": "test", "classes": CLASSES, "sources": [SourceSpec(s) for s in sources],
                     "dedup_threshold": None, **overrides})


def _build(tmp_path: Path, sources: list[SourceData], recipe: DatasetRecipe, name: str = "build"):
    out = tmp_path / name
    with publish_directory(out) as staging:
        report = build_recipe(sources, recipe, staging)
    images = pd.read_parquet(out / "manifests" / "images.parquet")
    boxes = pd.read_parquet(out / "manifests" / "boxes.parquet")
    return out, report, images, boxes


def _area_pct(boxes: pd.DataFrame) -> pd.Series:
    return 100 * (boxes["x2"] - boxes["x1"]) * (boxes["y2"] - boxes["y1"]) / (boxes["img_w"] * boxes["img_h"])


@pytest.fixture(scope="module")
def base(small_site) -> SourceData:
    dataset = read_yolo_dataset(small_site / "base_dataset")
    return SourceData("base_dataset", dataset.classes, dataset.images, dataset.boxes)


@pytest.fixture(scope="module")
def cctv(small_site) -> tuple[SourceData, list[list[str]]]:
    """The snapshots with their true boxes, and the planted burst groups (same camera, 1-3 s apart)."""
    truth = json.loads((small_site / "ground_truth" / "go2k_labels.json").read_text())
    images = pd.DataFrame([
        {"image": im["name"], "path": str(small_site / "snapshots" / im["name"]), "width": im["width"],
         "height": im["height"], "sha256": file_sha256(small_site / "snapshots" / im["name"]),
         "camera": im["camera"], "timestamp": pd.Timestamp(im["timestamp"])}
        for im in truth["images"]
    ])
    boxes = pd.DataFrame([
        {"image": im["name"], "cls": box["cls"], "x1": box["xyxy"][0], "y1": box["xyxy"][1], "x2": box["xyxy"][2],
         "y2": box["xyxy"][3], "img_w": im["width"], "img_h": im["height"]}
        for im in truth["images"] for box in im["boxes"]
    ])
    return SourceData("site_cctv", CLASSES, images, boxes), truth["near_duplicate_groups"]


@pytest.fixture(scope="module")
def copies(base, tmp_path_factory) -> tuple[SourceData, list[set[str]]]:
    """Copies of twelve base images (JPEG quality 30, PNG, same bytes in turn) with the same
    boxes, and the planted groups as dataset image names (original and copy)."""
    folder = tmp_path_factory.mktemp("copies")
    positives = base.boxes.groupby("image").size().sort_index()
    originals = base.images.set_index("image").loc[positives.index[:12]]
    rows, box_frames, groups = [], [], []
    kinds = [(".jpg", "q30"), (".png", "png"), (".jpg", "bytes")] * 4
    for (image, row), (suffix, how) in zip(originals.iterrows(), kinds):
        name = f"{how}_{Path(image).stem}{suffix}"
        target = folder / name
        if how == "bytes":
            shutil.copyfile(row["path"], target)
        else:
            params = [cv2.IMWRITE_JPEG_QUALITY, 30] if how == "q30" else []
            cv2.imwrite(str(target), cv2.imread(row["path"]), params)
        rows.append({"image": name, "path": str(target), "width": row["width"], "height": row["height"],
                     "sha256": file_sha256(target)})
        box_frames.append(base.boxes[base.boxes["image"] == image].assign(image=name))
        groups.append({f"base_dataset/{Path(image).relative_to('images')}", f"copies/{name}"})
    return SourceData("copies", CLASSES, pd.DataFrame(rows), pd.concat(box_frames, ignore_index=True)), groups


@pytest.fixture(scope="module")
def mixed(base, cctv, copies, tmp_path_factory):
    """All three sources, no dedup: the planted copies must then be kept in one split."""
    recipe = _recipe(["base_dataset", "site_cctv", "copies"], background_share=0.03)
    return _build(tmp_path_factory.mktemp("mixed"), [base, cctv[0], copies[0]], recipe)


# --------------------------------------------------------------------------- quotas


def test_quota_counts_boxes_and_warns_with_numbers_when_the_pool_is_short(base, tmp_path):
    pool = base.boxes["cls"].value_counts()
    recipe = _recipe(["base_dataset"], box_quota={HELMET: 30, NO_HELMET: 10_000})
    _, report, images, boxes = _build(tmp_path, [base], recipe)
    assert (f"quota 10000 {NO_HELMET} boxes but the pool has {pool[1]} "
            f"(after remap, area filter and dedup); taking all {pool[1]}") in report.warnings
    final = boxes["cls"].value_counts()
    assert final[1] == pool[1]  # the short class: everything
    assert 30 <= final[0] < pool[0]
    assert report.details["steps"]["final"]["boxes"] == {HELMET: final[0], NO_HELMET: final[1]}
    # images without a no-helmet box were only taken while helmets were under quota
    helmet_only = images[(images[f"boxes_{NO_HELMET}"] == 0) & ~images["background"]]
    assert helmet_only[f"boxes_{HELMET}"].sum() < 30 + base.boxes.groupby("image").size().max()


def test_quotas_the_pool_meets_are_met_in_boxes_not_images(base, tmp_path):
    recipe = _recipe(["base_dataset"], box_quota={HELMET: 25, NO_HELMET: 12})
    _, report, images, boxes = _build(tmp_path, [base], recipe)
    assert not [w for w in report.warnings if w.startswith("quota")]
    assert (boxes["cls"] == 0).sum() >= 25 and (boxes["cls"] == 1).sum() >= 12
    assert (~images["background"]).sum() < base.boxes["image"].nunique()  # not simply everything
    again_images = _build(tmp_path, [base], recipe, "again")[2]
    assert again_images["image"].tolist() == images["image"].tolist()  # seeded, so repeatable


# --------------------------------------------------------------------------- area filter


def test_area_filter_removes_small_boxes_and_drops_images_it_empties(base, tmp_path):
    recipe = _recipe(["base_dataset"], min_area_pct={HELMET: 2.0, NO_HELMET: 1.0})
    out, report, images, boxes = _build(tmp_path, [base], recipe)
    area = _area_pct(base.boxes)
    small = area < base.boxes["cls"].map({0: 2.0, 1: 1.0})
    assert report.details["steps"]["area_filter"]["removed_boxes"]["base_dataset"] == {
        HELMET: int((small & (base.boxes["cls"] == 0)).sum()), NO_HELMET: int((small & (base.boxes["cls"] == 1)).sum())}
    assert small.any() and (~small).any()
    assert len(boxes) == int((~small).sum())
    assert (boxes["area_pct"] >= boxes["cls"].map({0: 2.0, 1: 1.0})).all()
    emptied = set(base.boxes.loc[small, "image"]) - set(base.boxes.loc[~small, "image"])
    assert emptied, "the small site has images whose every box is small"
    assert report.details["steps"]["area_filter"]["images_emptied_by_area_filter"] == len(emptied)
    # they show people, so they are not backgrounds either
    assert not set(images["source_image"]) & emptied
    assert images["background"].sum() == 0
    # the new label files carry exactly the kept boxes
    written = read_yolo_dataset(out)
    assert len(written.boxes) == len(boxes)


# --------------------------------------------------------------------------- backgrounds


def test_backgrounds_reach_their_share_or_warn_with_numbers(base, cctv, tmp_path):
    sources = [base, cctv[0]]
    empty = [img for s in sources for img in s.images["image"] if img not in set(s.boxes["image"])]
    positives = sum(s.boxes["image"].nunique() for s in sources)
    _, report, images, _ = _build(tmp_path, sources, _recipe(["base_dataset", "site_cctv"], background_share=0.03))
    wanted = round(0.03 * positives / 0.97)
    assert 1 <= wanted <= len(empty)
    assert images["background"].sum() == wanted
    assert set(images.loc[images["background"], "source_image"]) <= set(empty)

    _, short, images, _ = _build(tmp_path, sources, _recipe(["base_dataset", "site_cctv"], background_share=0.5), "short")
    assert (f"background_share 0.5 needs {positives} background images but the pool has {len(empty)} "
            f"(after dedup); taking all {len(empty)}") in short.warnings
    assert images["background"].sum() == len(empty)


# --------------------------------------------------------------------------- dedup


def test_dedup_keeps_one_of_each_planted_group_and_no_hard_negative(base, cctv, copies, tmp_path):
    site, _ = cctv
    planted, groups = copies
    # the hard negatives: distinct frames of one fixed camera look like copies to a thumbnail
    thumbs = dedup.thumbnails(site.images["path"])
    assert dedup.near_duplicate_pairs(thumbs, 0.994), "fixed-camera frames should score as near-duplicates"
    recipe = _recipe(["base_dataset", "site_cctv", "copies"], dedup_threshold=0.994)
    _, report, images, _ = _build(tmp_path, [base, site, planted], recipe)
    kept = set(images["image"])
    for group in groups:
        assert len(group & kept) == 1, group
        assert any(name.startswith("base_dataset/") for name in group & kept)  # ties keep the first source
    assert report.details["steps"]["dedup"] == {"unreadable": 0, "exact_duplicates_removed": 4,
                                      "near_duplicates_removed": 8, "threshold": 0.994}
    # every other image with boxes stays, every distinct CCTV frame included (no backgrounds asked for)
    assert kept == {f"base_dataset/{Path(n).relative_to('images')}" for n in base.boxes["image"]} | {
        f"site_cctv/{n}" for n in site.boxes["image"]}


# --------------------------------------------------------------------------- remap


def test_remap_maps_renames_and_counts_dropped_classes(base, tmp_path):
    relabelled = base.boxes.copy()
    position = np.arange(len(relabelled))
    relabelled.loc[position % 5 == 3, "cls"] = 2  # vest: dropped explicitly
    relabelled.loc[position % 5 == 4, "cls"] = 3  # fallen: not a target, dropped implicitly
    source = SourceData("other", [HELMET, "head", "vest", "fallen"], base.images, relabelled)
    spec = SourceSpec("other", remap={"head": NO_HELMET, "vest": None})
    recipe = DatasetRecipe(name="remap", classes=CLASSES, sources=[spec], dedup_threshold=None)
    _, report, images, boxes = _build(tmp_path, [source], recipe)
    counts = report.details["steps"]["remap"]["other"]
    assert counts["dropped"] == {"vest": int((relabelled["cls"] == 2).sum()), "fallen": int((relabelled["cls"] == 3).sum())}
    assert counts["kept"] == {HELMET: int((relabelled["cls"] == 0).sum()), NO_HELMET: int((relabelled["cls"] == 1).sum())}
    assert boxes["cls"].value_counts().sort_index().tolist() == list(counts["kept"].values())
    only_dropped = set(relabelled["image"]) - set(relabelled.loc[relabelled["cls"] <= 1, "image"])
    assert only_dropped, "some images hold only dropped classes"
    assert report.details["steps"]["area_filter"]["images_emptied_by_remap"] == len(only_dropped)
    assert not set(images["source_image"]) & only_dropped


def test_a_class_no_source_provides_is_warned(base, tmp_path):
    recipe = _recipe(["base_dataset"], classes=[*CLASSES, "fallen"])
    _, report, _, boxes = _build(tmp_path, [base], recipe)
    assert any(w.startswith("missing class") and "'fallen'" in w for w in report.warnings)
    assert set(boxes["cls"]) == {0, 1}


# --------------------------------------------------------------------------- splits and files


def test_splits_are_7_2_1_and_leakage_free(mixed, cctv, copies):
    out, report, images, _ = mixed
    shares = images["split"].value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.7, abs=0.07)
    assert shares["val"] == pytest.approx(0.2, abs=0.07)
    assert shares["test"] == pytest.approx(0.1, abs=0.05)
    assert images.groupby("sha256")["split"].nunique().max() == 1
    split_of = dict(zip(images["image"], images["split"]))
    # planted copies (kept: no dedup) and the planted CCTV bursts each sit in one split
    planted = [g for g in copies[1] if len(g & set(split_of)) == 2]
    assert len(planted) == 8  # byte copies are always removed
    bursts = [{f"site_cctv/{name}" for name in group} for group in cctv[1]]
    for group in planted + bursts:
        assert len({split_of[name] for name in group}) == 1, group
    # and no near-duplicate pair at the grouping threshold straddles two splits
    thumbs = dedup.thumbnails(out / path for path in images["path"])
    pairs = dedup.near_duplicate_pairs(thumbs, dedup.DEFAULT_THRESHOLD, cameras=images["camera"].tolist())
    assert len(pairs) >= 8
    split = images["split"].to_numpy()
    assert [(i, j) for i, j, _ in pairs if split[i] != split[j]] == []
    assert images.groupby("group")["split"].nunique().max() == 1
    assert report.counts["test_images"] == int((images["split"] == "test").sum())


def test_list_files_resolve_after_the_build_folder_moves(mixed, base, tmp_path):
    from ultralytics.data.base import BaseDataset
    from ultralytics.data.utils import check_det_dataset, img2label_paths

    out, report, images, boxes = mixed
    moved = tmp_path / "renamed"
    shutil.copytree(out, moved, copy_function=os.link)  # a move that leaves the module fixture intact
    data = check_det_dataset(str(moved / "data.yaml"), autodownload=False)
    for split in ("train", "val", "test"):
        assert Path(data[split]) == moved / f"{split}.txt"
        listed = BaseDataset.get_img_files(SimpleNamespace(prefix="", fraction=1.0), data[split])
        assert len(listed) == report.counts[f"{split}_images"]
        assert all(Path(p).is_file() and Path(p).is_relative_to(moved) for p in listed)
        assert all(Path(p).is_file() for p in img2label_paths(listed))
    # the project's reader agrees, box for box
    written = read_yolo_dataset(moved)
    assert len(written.images) == len(images) and len(written.boxes) == len(boxes)
    assert written.images.groupby("split").size().to_dict() == images.groupby("split").size().to_dict()
    # images are hard links to the source files, not copies
    original = base.images.set_index("image")["path"]
    some = images[images["source"] == "base_dataset"].iloc[0]
    assert os.path.samefile(moved / some["path"], original[some["source_image"]])
    # a build is itself a source for the next recipe
    again = SourceData.from_published("previous", moved)
    assert len(again.images) == len(images) and len(again.boxes) == len(boxes)
    assert all(Path(p).is_file() for p in again.images["path"])


def test_outliers_are_the_largest_boxes_and_are_kept(base, tmp_path):
    out, report, _, boxes = _build(tmp_path, [base], _recipe(["base_dataset"], outlier_fraction=0.05))
    outliers = pd.read_parquet(out / "outliers.parquet")
    assert len(outliers) == math.ceil(0.05 * len(boxes)) == report.details["steps"]["outliers"]["flagged"]
    rest = boxes[~boxes.set_index(["image", "x1", "y1"]).index.isin(outliers.set_index(["image", "x1", "y1"]).index)]
    assert len(rest) == len(boxes) - len(outliers)  # flagged, not removed
    assert outliers["area_pct"].min() >= rest["area_pct"].max()
    assert (out / "plots" / "outliers.png").stat().st_size > 0
    default = pd.read_parquet(_build(tmp_path, [base], _recipe(["base_dataset"]), "default")[0] / "outliers.parquet")
    assert len(default) == 1  # 0.1% of fewer than 1000 boxes still flags the largest one


def test_max_images_caps_and_keeps_class_proportions(base, cctv, tmp_path):
    sources = [base, cctv[0]]
    recipe = _recipe(["base_dataset", "site_cctv"], background_share=0.05)
    _, _, full_images, full_boxes = _build(tmp_path, sources, recipe, "full")
    _, report, images, boxes = _build(tmp_path, sources, _recipe(["base_dataset", "site_cctv"], background_share=0.05,
                                                                 max_images=20), "capped")
    assert len(images) == 20 == report.details["steps"]["final"]["images"]
    assert images["background"].sum() == 1  # 5% of 20
    full_share = (full_boxes["cls"] == 1).mean()
    assert (boxes["cls"] == 1).mean() == pytest.approx(full_share, abs=0.1)
    assert set(images["image"]) <= set(full_images["image"])


# --------------------------------------------------------------------------- recipe errors


def test_the_shipped_quick_recipe_loads():
    recipe = DatasetRecipe.load(REPO / "recipes" / "helmet_quick.yaml")
    assert [s.name for s in recipe.sources] == ["base_dataset", "go2k_manual"]
    assert recipe.classes == CLASSES and recipe.max_images == 3000 and recipe.splits == {"train": 0.7, "val": 0.2, "test": 0.1}
    assert recipe.min_area_pct == {HELMET: 2.0, NO_HELMET: 1.0} and recipe.background_share == 0.05


def test_bad_recipes_name_the_field_or_file(tmp_path):
    good = {"name": "r", "classes": CLASSES, "sources": ["base_dataset"]}
    assert DatasetRecipe.from_dict(good).sources == [SourceSpec("base_dataset")]
    with pytest.raises(RecipeError, match=r"unknown recipe key\(s\) \['box_quotas'\]"):
        DatasetRecipe.from_dict({**good, "box_quotas": {HELMET: 10}})
    with pytest.raises(RecipeError, match=r"box_quota: .*missing \['person_without_helmet'\]"):
        DatasetRecipe.from_dict({**good, "box_quota": {HELMET: 10}})
    with pytest.raises(RecipeError, match="splits: fractions must sum to 1"):
        DatasetRecipe.from_dict({**good, "splits": {"train": 0.7, "val": 0.2}})
    with pytest.raises(RecipeError, match=r"sources: base_dataset: remap targets \{'helmet': 'hardhat'\}"):
        DatasetRecipe.from_dict({**good, "sources": [{"name": "base_dataset", "remap": {"helmet": "hardhat"}}]})
    with pytest.raises(RecipeError, match="min_area_pct: values are percentages"):
        DatasetRecipe.from_dict({**good, "min_area_pct": {HELMET: 150}})
    path = tmp_path / "typo.yaml"
    path.write_text("name: r\nclasses: [a]\nsources: [s]\nmax_image: 10\n")
    with pytest.raises(RecipeError, match=rf"^{re.escape(str(path))}: unknown recipe key\(s\) \['max_image'\]"):
        DatasetRecipe.load(path)
    with pytest.raises(RecipeError, match=rf"^{re.escape(str(tmp_path / 'absent.yaml'))}: cannot read"):
        DatasetRecipe.load(tmp_path / "absent.yaml")


def test_a_missing_source_lists_the_available_ones(base, tmp_path):
    recipe = _recipe(["base_dataset", "go2k_manual"])
    with pytest.raises(RecipeError, match=r"\['go2k_manual'\] that are not available; available sources: \['base_dataset'\]"):
        build_recipe([base], recipe, tmp_path / "never")
    spec = SourceSpec("base_dataset", remap={"hardhat": HELMET})
    with pytest.raises(RecipeError, match=r"remap names classes \['hardhat'\] that the source does not have"):
        build_recipe([base], DatasetRecipe(name="r", classes=CLASSES, sources=[spec]), tmp_path / "never")


def test_bad_source_data_is_named(base, tmp_path):
    recipe = _recipe(["base_dataset"])
    clash = pd.concat([base.images.head(1), base.images.head(1).assign(image=lambda f: f["image"].str.removeprefix("images/"))])
    with pytest.raises(RecipeError, match=r"source 'base_dataset': images .* would share the label file labels/base_dataset/train/"):
        build_recipe([SourceData("base_dataset", CLASSES, clash, base.boxes.iloc[:0])], recipe, tmp_path / "never")
    wrong_class = base.boxes.assign(cls=base.boxes["cls"] + 1)
    with pytest.raises(RecipeError, match=r"source 'base_dataset': \d+ boxes have a class outside 0..1"):
        build_recipe([SourceData("base_dataset", CLASSES, base.images, wrong_class)], recipe, tmp_path / "never")
    nested = base.images.head(1).assign(image="images/cam/images/a.jpg")
    with pytest.raises(RecipeError, match="nested 'images' folder"):
        build_recipe([SourceData("base_dataset", CLASSES, nested, base.boxes.iloc[:0])], recipe, tmp_path / "never")
