"""go2k split and go2k_v2 mix on the demo data, and the YOLO reader's bad inputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hoban_pipelines.datasets import checks as dataset_checks
from hoban_pipelines.labels.cleaning import CleaningRule
from hoban_pipelines.labels.cvat_import import build_dataset, export_files
from hoban_pipelines.labels.label_map import LabelMap
from hoban_pipelines.core.lake import publish_directory
from hoban_pipelines.datasets.mix import MixParameters, assemble_mix, write_mix
from hoban_pipelines.datasets.split import SplitParameters, split_images, with_box_counts
from hoban_pipelines.core.yolo_format import YoloFormatError, list_yolo_dataset, load_entries, read_yolo_dataset

CLASSES = ["person_with_helmet", "person_without_helmet"]


@pytest.fixture(scope="module")
def manual(demo_profile_site, tmp_path_factory):
    out = tmp_path_factory.mktemp("go2k") / "go2k_manual"
    with publish_directory(out) as staging:
        images, boxes, _ = build_dataset(export_files(demo_profile_site / "cvat_exports"), staging,
                                         label_map=LabelMap.identity(CLASSES), rule=CleaningRule(),
                                         image_root=demo_profile_site / "snapshots")
    return out, images, boxes


@pytest.fixture(scope="module")
def split(manual):
    root, images, boxes = manual
    return with_box_counts(split_images(images, boxes, root, len(CLASSES), SplitParameters()), boxes, CLASSES)


def test_split_is_80_20_stratified_and_deterministic(manual, split):
    root, images, boxes = manual
    share = (split["split"] == "val").mean()
    assert 0.17 <= share <= 0.23
    per = split.groupby("split")[[f"boxes_{c}" for c in CLASSES]].sum()
    assert (per > 0).all().all()  # both classes in both splits
    rare = per["boxes_person_without_helmet"]
    assert 0.1 <= rare["val"] / rare.sum() <= 0.35
    again = split_images(images, boxes, root, len(CLASSES), SplitParameters())
    assert (again["split"].to_numpy() == split["split"].to_numpy()).all()
    other_seed = split_images(images, boxes, root, len(CLASSES), SplitParameters(seed=5))
    assert (other_seed["split"].to_numpy() != split["split"].to_numpy()).any()


def test_near_duplicate_groups_never_straddle_the_split(manual, split, demo_profile_site):
    import json

    truth = json.loads((demo_profile_site / "ground_truth" / "go2k_labels.json").read_text())
    where = dict(zip(split["image"], split["split"]))
    groups = [[n for n in group if n in where] for group in truth["near_duplicate_groups"]]
    groups = [g for g in groups if len(g) > 1]
    assert groups, "the demo plants labelled near-duplicate groups"
    for group in groups:
        assert len({where[n] for n in group}) == 1, group
    assert split.groupby("group")["split"].nunique().max() == 1
    entries = split.assign(path=[str(manual[0] / p) for p in split["path"]])
    assert dataset_checks.content_in_two_splits(entries) == []


def test_mix_oversamples_domain_and_clamps_with_warnings(manual, split, demo_profile_site, tmp_path):
    root = manual[0]
    domain = split.assign(path=[str(root / p) for p in split["path"]],
                          label_path=[str(root / p) for p in split["label_path"]])
    base = list_yolo_dataset(demo_profile_site / "base_dataset")
    result = assemble_mix(base, domain, MixParameters())
    assert any("base train: asked for 8000 images but there are 300 readable" in w for w in result.warnings)
    out = tmp_path / "mix"
    out.mkdir()
    counts = write_mix(result, CLASSES, out)
    go2k_train = int((split["split"] == "train").sum())
    train_lines = (out / "train.txt").read_text().splitlines()
    assert len(train_lines) == 300 + 8 * go2k_train == counts["train_entries"]
    assert counts["domain_share_of_training"] == pytest.approx(8 * go2k_train / (300 + 8 * go2k_train), abs=1e-3)
    assert len((out / "val.txt").read_text().splitlines()) == 60 + int((split["split"] == "val").sum())
    assert dataset_checks.list_files_resolve(out) == []
    # no image bytes: only list files, yaml and a manifest
    assert {p.suffix for p in out.rglob("*") if p.is_file()} == {".txt", ".yaml", ".parquet"}
    smaller = assemble_mix(base, domain, MixParameters(base_train=100, base_val=20, domain_oversample=2, seed=3))
    assert smaller.warnings == [] and (smaller.entries["source"] == "base").sum() == 120


def test_ultralytics_reads_the_mix_lists(manual, split, demo_profile_site, tmp_path):
    from ultralytics.data.utils import check_det_dataset

    root = manual[0]
    domain = split.assign(path=[str(root / p) for p in split["path"]], label_path=[str(root / p) for p in split["label_path"]])
    out = tmp_path / "mix"
    out.mkdir()
    write_mix(assemble_mix(list_yolo_dataset(demo_profile_site / "base_dataset"), domain, MixParameters(base_train=10, base_val=5)), CLASSES, out)
    moved = tmp_path / "moved"
    shutil.move(out, moved)  # the lake renames a version into place after writing
    data = check_det_dataset(str(moved / "data.yaml"))
    assert Path(data["train"]) == moved / "train.txt" and data["names"] == dict(enumerate(CLASSES))


# --- the YOLO reader's bad inputs -------------------------------------------------------------

def _tiny_dataset(small_site: Path, tmp_path: Path) -> Path:
    root = tmp_path / "base"
    shutil.copytree(small_site / "base_dataset", root)
    return root


def test_label_with_out_of_range_values_names_file_and_line(small_site, tmp_path):
    root = _tiny_dataset(small_site, tmp_path)
    label = sorted((root / "labels" / "train").glob("*.txt"))[3]
    label.write_text("0 0.5 0.5 0.1 0.1\n0 1.4 0.5 0.1 0.1\n")
    with pytest.raises(YoloFormatError, match=rf"{label.name} line 2: values .* must be normalised"):
        read_yolo_dataset(root)


def test_label_with_wrong_column_count(small_site, tmp_path):
    root = _tiny_dataset(small_site, tmp_path)
    label = sorted((root / "labels" / "val").glob("*.txt"))[0]
    label.write_text("1 0.5 0.5 0.1\n")
    with pytest.raises(YoloFormatError, match=rf"{label.name} line 1: 4 columns, expected 5"):
        read_yolo_dataset(root)


def test_class_outside_the_names(small_site, tmp_path):
    root = _tiny_dataset(small_site, tmp_path)
    label = sorted((root / "labels" / "train").glob("*.txt"))[0]
    label.write_text("7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(YoloFormatError, match=r"line 1: class 7 is outside 0..1"):
        read_yolo_dataset(root)


def test_undecodable_image_is_reported_skipped_and_counted(small_site, tmp_path):
    root = _tiny_dataset(small_site, tmp_path)
    broken = sorted((root / "images" / "train").glob("*.jpg"))[0]
    broken.write_bytes(b"not a jpeg at all")
    listing = list_yolo_dataset(root)
    data = load_entries(listing)
    assert [Path(p).name for p, _ in data.unreadable] == [broken.name]
    assert len(data.images) == len(listing.entries) - 1
    assert broken.name not in set(data.images["image"].map(lambda s: Path(s).name))


def test_missing_data_yaml_and_split(tmp_path):
    with pytest.raises(YoloFormatError, match="has no data.yaml"):
        list_yolo_dataset(tmp_path)
    (tmp_path / "data.yaml").write_text("train: images/train\nnames: [a]\n")
    with pytest.raises(YoloFormatError, match="split entry 'images/train' is neither a folder nor a .txt list"):
        list_yolo_dataset(tmp_path)


def test_mix_skips_and_counts_undecodable_base_images(small_site, split, manual, tmp_path):
    root = _tiny_dataset(small_site, tmp_path)
    broken = sorted((root / "images" / "train").glob("*.jpg"))[:2]
    for path in broken:
        path.write_bytes(b"\xff\xd8 truncated")
    domain = split.assign(path=[str(manual[0] / p) for p in split["path"]],
                          label_path=[str(manual[0] / p) for p in split["label_path"]])
    result = assemble_mix(list_yolo_dataset(root), domain, MixParameters(base_train=100, base_val=5))
    assert sorted(Path(p).name for p, _ in result.unreadable) == sorted(p.name for p in broken)
    assert not set(map(str, broken)) & set(result.entries["path"])
    assert any("2 base image(s) cannot be read" in w for w in result.warnings)
    assert (result.entries["source"] == "base").sum() == 28 + 5  # 30 train - 2 broken, all 8 val capped at 5


def test_mix_benchmark_reports_exactly_its_keys(tmp_path):
    from hoban_pipelines.bench import mix as bench

    figures = bench.run(workdir=tmp_path, dedup_images=2000)
    assert list(figures) == ["entries", "image_bytes_copied", "seconds", "dedup_images", "dedup_seconds"]
    assert figures["entries"] == 12000 and figures["image_bytes_copied"] == 0 and figures["dedup_images"] == 2000
