"""The roi_crops build: each sampling rule, the quotas and top-up, the split, the cap, determinism."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
import pytest
from roi_synthetic import REPEATS_OF_FIRST, STATIC, standard_video, write_spec, write_video, standard_patterns

from hoban_pipelines.core.report import BuildReport, Picture
from hoban_pipelines.roi.crops import (
    LABEL_RATIOS,
    MAX_HASH_DISTANCE,
    TARGET_CROPS_PER_ROI,
    average_hash,
    build_roi_crops,
    hamming,
    label_quotas,
)
from hoban_pipelines.roi.videos import RoiVideoSet, read_roi_videos


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Two simulation and two real videos of two ROIs each, all with plenty of candidates."""
    root = tmp_path_factory.mktemp("roi_videos")
    standard_video(root / "simulation", "sim_a", offset=0)
    standard_video(root / "simulation", "sim_b", offset=10_000)
    standard_video(root / "real", "real_a", offset=20_000)
    standard_video(root / "real", "real_b", offset=30_000)
    return read_roi_videos(root)


@pytest.fixture(scope="module")
def built(videos, tmp_path_factory):
    out = tmp_path_factory.mktemp("roi_crops")
    report = build_roi_crops(videos, out, seed=7)
    return report, out, pd.read_parquet(out / "crops.parquet")


def test_average_hash_and_quotas():
    flat = np.zeros((48, 64), np.uint8)
    flat[:, 32:] = 255
    assert average_hash(flat) == int("00001111" * 8, 2)
    assert hamming(0b1011, 0b0001) == 2
    assert label_quotas(100, LABEL_RATIOS) == {"false": 25, "true": 60, "unknown": 15}
    assert sum(label_quotas(7, LABEL_RATIOS).values()) == 7


def test_ratios_are_met_within_one_crop_per_label(built):
    report, _, table = built
    assert isinstance(report, BuildReport)
    quotas = label_quotas(TARGET_CROPS_PER_ROI, LABEL_RATIOS)
    train = table[table["split"] == "train"]
    for (_, _), rows in train.groupby(["video", "roi"]):
        counts = rows["label"].value_counts()
        assert len(rows) == TARGET_CROPS_PER_ROI
        for label, quota in quotas.items():
            assert abs(int(counts.get(label, 0)) - quota) <= 1


def test_no_two_kept_crops_of_a_video_within_the_hash_distance(built):
    _, _, table = built
    for _, rows in table.groupby("video"):
        hashes = [int(h, 16) for h in rows["ahash"]]
        assert all(hamming(a, b) > MAX_HASH_DISTANCE for a, b in combinations(hashes, 2))
    assert built[0].counts["dropped_near_duplicate"] > 0
    # the frames repeating frame 0 are never kept, frame 0 itself always is
    for (_, _), rows in table[table["split"] == "train"].groupby(["video", "roi"]):
        assert not set(rows["frame"]) & set(REPEATS_OF_FIRST)


def test_no_crop_from_a_frame_without_motion(built):
    report, _, table = built
    assert not set(table["frame"]) & set(STATIC[1:])
    assert report.counts["dropped_no_motion"] > 0


def test_cooldown_keeps_kept_crops_three_frames_apart(built):
    report, _, table = built
    for _, rows in table.groupby(["video", "roi"]):
        assert (np.diff(sorted(rows["frame"])) > 2).all()
    assert report.counts["dropped_cooldown"] > 0


def test_frames_outside_every_segment_are_skipped(tmp_path):
    segments = [{"start_frame": 0, "end_frame": 99, "label": 0}, {"start_frame": 200, "end_frame": 299, "label": 1}]
    standard_video(tmp_path / "videos" / "simulation", "gap", segments=segments)
    report = build_roi_crops(read_roi_videos(tmp_path / "videos"), tmp_path / "out", target=20)
    frames = pd.read_parquet(tmp_path / "out" / "crops.parquet")["frame"]
    assert not ((frames >= 100) & (frames < 200)).any()
    assert report.counts["dropped_outside_segments"] == 2 * 100  # two ROIs; decoding stops after frame 299


def test_a_short_label_is_topped_up_and_reported(tmp_path):
    segments = [
        {"start_frame": 0, "end_frame": 119, "label": 0},
        {"start_frame": 120, "end_frame": 359, "label": 1},
        {"start_frame": 360, "end_frame": 374, "label": 2},  # 15 frames: 5 candidates for a quota of 15
    ]
    standard_video(tmp_path / "videos" / "simulation", "short", segments=segments)
    report = build_roi_crops(read_roi_videos(tmp_path / "videos"), tmp_path / "out")
    table = pd.read_parquet(tmp_path / "out" / "crops.parquet")
    for _, rows in table.groupby("roi"):
        assert len(rows) == TARGET_CROPS_PER_ROI
        assert (rows["label"] == "unknown").sum() == 5
    assert report.counts["topped_up"] == 2 * 10
    assert any("short of unknown by 10; topped up 10" in w for w in report.warnings)
    assert {row["short"] for row in report.details["crops per video"].rows} == {"unknown by 10"}


def test_split_keeps_simulation_and_real_apart_and_files_follow(built):
    report, out, table = built
    assert set(table.loc[table["split"] == "train", "video"]) == {"sim_a", "sim_b"}
    assert set(table.loc[table["split"] == "test", "video"]) == {"real_a", "real_b"}
    for row in table.itertuples():
        assert row.path == f"{row.split}/{row.label}/{row.video}_roi{row.roi}_{row.frame:06d}.jpg"
        assert (out / row.path).is_file()
    assert not (out / ".staging").exists()
    assert report.counts["crops_train"] == 4 * TARGET_CROPS_PER_ROI
    sheets = [v for v in report.details.values() if isinstance(v, Picture)]
    assert {s.path for s in sheets} == {"contact_false.jpg", "contact_true.jpg", "contact_unknown.jpg"}
    assert all((out / s.path).is_file() for s in sheets)


def test_real_test_crops_are_capped_at_random(videos, built, tmp_path):
    """The cap draws from all real crops pooled, not per video."""
    report, _, table = built
    assert report.counts["crops_test"] == 4 * TARGET_CROPS_PER_ROI  # under the cap of 500: all kept
    real = RoiVideoSet(videos=[v for v in videos.videos if v.group == "real"])
    capped = build_roi_crops(real, tmp_path / "capped", seed=7, real_test_crops=50)
    test = pd.read_parquet(tmp_path / "capped" / "crops.parquet").query("split == 'test'")
    assert len(test) == 50 and capped.counts["dropped_real_over_cap"] == 4 * TARGET_CROPS_PER_ROI - 50
    assert test["video"].nunique() == 2 and test["frame"].max() > 300  # drawn across videos and frames


def test_same_seed_same_crops_other_seed_other_crops(videos, tmp_path):
    one = RoiVideoSet(videos=[v for v in videos.videos if v.name == "sim_a"])
    first = build_roi_crops(one, tmp_path / "first", target=30, seed=3)
    again = build_roi_crops(one, tmp_path / "again", target=30, seed=3)
    other = build_roi_crops(one, tmp_path / "other", target=30, seed=4)
    table = pd.read_parquet(tmp_path / "first" / "crops.parquet")
    assert pd.read_parquet(tmp_path / "again" / "crops.parquet").equals(table)
    assert again.counts == first.counts and other.counts["crops"] == first.counts["crops"]
    assert not pd.read_parquet(tmp_path / "other" / "crops.parquet").equals(table)


def test_a_video_that_cannot_be_opened_is_counted_and_the_rest_go_on(tmp_path):
    folder = tmp_path / "videos" / "simulation"
    standard_video(folder, "good")
    write_video(folder / "gone.avi", standard_patterns())
    write_spec(folder, "gone", "gone.avi")
    write_spec(folder, "never", "nowhere.avi")
    found = read_roi_videos(tmp_path / "videos")
    (folder / "gone.avi").write_bytes(b"damaged since")  # broken between reading the spec and cropping
    report = build_roi_crops(found, tmp_path / "out", target=10)
    assert report.counts["videos_unopened"] == 2
    assert report.counts["crops"] == 2 * 10
    assert "nowhere.avi" in report.details["unopened videos"] and "gone.avi" in report.details["unopened videos"]
    assert any("gone.avi: cannot be opened" in w for w in report.warnings)
