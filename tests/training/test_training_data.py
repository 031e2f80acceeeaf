"""The training view: whole images hard-linked, frames cut into SAHI's tiles with clipped labels,
oversampling carried over, nothing written into the source dataset, bad input named."""

from __future__ import annotations

import os
import re

import cv2
import numpy as np
import pytest
import yaml

from hoban_pipelines.training.view import (
    TrainingDataError,
    build_training_view,
    clip_boxes,
    keeps_background_tile,
    longest_side,
    tile_grid,
)

NAMES = ["person_with_helmet", "person_without_helmet"]


def write_image(path, width, height, value=90):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((height, width, 3), value, np.uint8))


def write_labels(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in rows))


def pixel_box(cls, x1, y1, x2, y2, width=1920, height=1080):
    return (cls, (x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height)


@pytest.fixture
def dataset(tmp_path):
    """Two 1920x1080 frames (one listed three times, as a mix oversamples) and one 640x640 image."""
    root = tmp_path / "dataset"
    write_image(root / "images" / "frame_a.jpg", 1920, 1080)
    write_labels(root / "labels" / "frame_a.txt", [
        pixel_box(0, 100, 100, 120, 160),  # inside the first tile only
        pixel_box(1, 632, 300, 652, 360),  # 40% left of x=640 (cut from tile 0), whole in tile 1
    ])
    write_image(root / "images" / "frame_b.jpg", 1920, 1080)
    (root / "labels" / "frame_b.txt").write_text("")
    write_image(root / "images" / "close_up.jpg", 640, 640)
    write_labels(root / "labels" / "close_up.txt", [(0, 0.5, 0.5, 0.2, 0.4)])
    (root / "train.txt").write_text("\n".join([
        "./images/frame_a.jpg", "./images/close_up.jpg", *["./images/frame_b.jpg"] * 3,
    ]) + "\n")
    (root / "val.txt").write_text("./images/frame_a.jpg\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"path": ".", "train": "train.txt", "val": "val.txt", "names": NAMES}))
    return root


def test_tile_grid_is_sahis_slicing():
    grid = tile_grid(1920, 1080, 640)
    assert len(grid) == 8 and grid[0] == (0, 0, 640, 640) and grid[-1] == (1280, 440, 1920, 1080)
    assert tile_grid(640, 480, 640) == [(0, 0, 640, 480)]  # fits: one whole image


def test_boxes_cut_by_a_tile_edge_are_clipped_or_dropped():
    boxes = [pixel_box(0, 600, 100, 700, 200)]  # 40 px of 100 inside x < 640
    lines, cut = clip_boxes(boxes, 1920, 1080, (0, 0, 640, 640))
    assert (lines, cut) == ([], 1)
    lines, cut = clip_boxes(boxes, 1920, 1080, (512, 0, 1152, 640))
    assert cut == 0 and len(lines) == 1
    cls, cx, cy, w, h = (float(v) for v in lines[0].split())
    assert (cls, round(cx * 640), round(cy * 640), round(w * 640), round(h * 640)) == (0, 138, 150, 100, 100)
    lines, cut = clip_boxes([pixel_box(1, 600, 100, 660, 200)], 1920, 1080, (0, 0, 640, 640))  # 2/3 inside
    assert cut == 0 and [round(float(v) * 640) for v in lines[0].split()[1:]] == [620, 150, 40, 100]


def test_tiled_view_keeps_people_and_oversampling(dataset, tmp_path):
    view = build_training_view(dataset / "data.yaml", tmp_path / "view", tile=640)
    root = view.data_yaml.parent
    assert (view.images, view.tiles) == ({"train": 3, "val": 1}, {"train": 16, "val": 8})
    # frame_b listed 3 times over 8 tiles: each tile once; frame_a 8 tiles; the close-up stays whole
    assert view.entries == {"train": 8 + 1 + 8, "val": 8}
    lines = (root / "train.txt").read_text().split()
    assert len(lines) == len(set(lines)) == 17 and all(line.startswith("./images/train/") for line in lines)
    close_up = next(root.glob("images/train/*_close_up.jpg"))
    assert os.path.samefile(close_up, dataset / "images" / "close_up.jpg")  # hard link, no bytes copied
    frame_a = sorted(root.glob("labels/train/000000_frame_a_t*.txt"))
    assert len(frame_a) == 8
    assert frame_a[0].read_text().split()[0] == "0" and len(frame_a[0].read_text().splitlines()) == 1
    assert [len(p.read_text().splitlines()) for p in frame_a] == [1, 1, 0, 0, 0, 0, 0, 0]
    assert cv2.imread(str(root / "images" / "train" / "000000_frame_a_t01.jpg")).shape == (640, 640, 3)
    assert view.boxes_cut == 2  # the edge box in tile 0, twice (train and val)
    spec = yaml.safe_load(view.data_yaml.read_text())
    assert spec == {"train": "train.txt", "val": "val.txt", "names": dict(enumerate(NAMES))}
    assert not list(dataset.rglob("*.cache")) and sorted(p.name for p in dataset.iterdir()) == [
        "data.yaml", "images", "labels", "train.txt", "val.txt"]


def test_whole_view_and_reuse(dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # 'path: .' is the data.yaml's folder, not the working directory
    view = build_training_view(dataset / "data.yaml", tmp_path / "view")
    assert view.tiles == {"train": 0, "val": 0} and view.entries == {"train": 5, "val": 1}
    assert (tmp_path / "view" / "train.txt").read_text().count("frame_b") == 3
    assert build_training_view(dataset / "data.yaml", tmp_path / "view") == view  # complete: reused as it is
    with pytest.raises(TrainingDataError, match="view holds another training view \\(tile 0 there, 640 asked\\); give"):
        build_training_view(dataset / "data.yaml", tmp_path / "view", tile=640)
    with pytest.raises(TrainingDataError, match="\\(background_tiles 1.0 there, 0.5 asked\\)"):
        build_training_view(dataset / "data.yaml", tmp_path / "view", background_tiles=0.5)
    evaluation = build_training_view(dataset / "data.yaml", tmp_path / "eval", splits=("val",))
    assert yaml.safe_load(evaluation.data_yaml.read_text())["train"] == "val.txt"
    assert longest_side(evaluation.data_yaml) == 1920


def test_only_large_images_are_tiled_and_label_free_tiles_thin_out(dataset, tmp_path):
    view = build_training_view(dataset / "data.yaml", tmp_path / "view", tile=320, tile_over=1280, background_tiles=0.25)
    root = view.data_yaml.parent
    # the 640-px close-up is larger than a tile but not over 1280: whole, its person uncut
    close_up = next(root.glob("images/train/*_close_up.jpg"))
    assert os.path.samefile(close_up, dataset / "images" / "close_up.jpg")
    per_frame = len(tile_grid(1920, 1080, 320))
    assert view.tiles == {"train": 2 * per_frame, "val": per_frame}
    train_tiles = sorted(p.stem for p in root.glob("labels/train/*_t*.txt"))
    labelled = [stem for stem in train_tiles if (root / "labels" / "train" / f"{stem}.txt").read_text()]
    assert len(labelled) == 2 and all("frame_a" in stem for stem in labelled)  # both people kept
    all_names = [f"{number:06d}_frame_{frame}_t{index:02d}" for number, frame in ((0, "a"), (2, "b"))
                 for index in range(per_frame)]
    expected = sorted(name for name in all_names if name in labelled or keeps_background_tile(name, 0.25))
    assert train_tiles == expected and 0 < len(expected) - 2 < 0.5 * len(all_names)
    assert view.background_tiles_dropped["train"] == len(all_names) - len(expected)
    assert view.entries["train"] == len(expected) + 1  # frame_b's 3 copies over its tiles: each kept tile once
    build_training_view(dataset / "data.yaml", tmp_path / "again", tile=320, tile_over=1280, background_tiles=0.25)
    assert (tmp_path / "again" / "train.txt").read_text() == (root / "train.txt").read_text()  # a fixed draw
    none = build_training_view(dataset / "data.yaml", tmp_path / "none", tile=320, tile_over=1280, background_tiles=0.0)
    assert none.entries["train"] == 3 and none.background_tiles_dropped["train"] == 2 * per_frame - 2
    sample = build_training_view(dataset / "data.yaml", tmp_path / "sample", tile=320, tile_over=1280,
                                 background_tiles=0.25, max_train_entries=5)
    sampled = (tmp_path / "sample" / "train.txt").read_text().split()
    assert sample.entries["train"] == len(sampled) == 5 and sample.sampled_out == {"train": len(expected) - 4, "val": 0}
    assert set(sampled) < set((root / "train.txt").read_text().split()) and sample.entries["val"] == view.entries["val"]
    with pytest.raises(TrainingDataError, match="background_tiles must be a share between 0 and 1, got 1.5"):
        build_training_view(dataset / "data.yaml", tmp_path / "bad", tile=320, background_tiles=1.5)


def test_bad_input_names_the_file_and_publishes_nothing(dataset, tmp_path):
    (dataset / "labels" / "frame_a.txt").write_text("0 0.5 0.5 0.1\n")
    with pytest.raises(TrainingDataError, match=re.escape(f"{dataset / 'labels' / 'frame_a.txt'} line 1: 4 columns")):
        build_training_view(dataset / "data.yaml", tmp_path / "view", tile=640)
    assert not (tmp_path / "view").exists() and list(tmp_path.glob(".*view*")) == []

    (dataset / "labels" / "frame_a.txt").write_text("")
    (dataset / "images" / "frame_b.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(TrainingDataError, match=re.escape(str(dataset / "images" / "frame_b.jpg"))):
        build_training_view(dataset / "data.yaml", tmp_path / "view", tile=640)

    (dataset / "val.txt").write_text("\n")
    with pytest.raises(TrainingDataError, match=re.escape(f"{dataset / 'data.yaml'}: the val split is empty")):
        build_training_view(dataset / "data.yaml", tmp_path / "view")
    assert not (tmp_path / "view").exists()
