"""The selection rule (domain only): one frame per interval a camera, none near a labelled
snapshot, cameras interleaved, the cap thinning every camera alike, and the review-value policy
preferring doubtful frames within the same shares."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hoban_pipelines.captures.ingest import CaptureError
from hoban_pipelines.captures.selection import (
    SELECTION, SelectionRule, build_selection, candidates, labelled_snapshots, pick, shares, spread,
)

START = pd.Timestamp("2026-02-11 07:00:00", tz="Asia/Seoul")


def _frames(offsets: dict[str, list[float]]) -> pd.DataFrame:
    rows = [{"camera": camera, "path": f"/c/{camera}/{i:05d}.jpg", "name": f"{i:05d}.jpg",
             "timestamp": START + pd.Timedelta(seconds=t), "day": "2026-02-11"}
            for camera, times in offsets.items() for i, t in enumerate(times)]
    return pd.DataFrame(rows)


NOBODY = pd.DataFrame({"camera": pd.Series([], dtype=object), "timestamp": pd.Series([], dtype="datetime64[ns, Asia/Seoul]")})


def _gaps(selected: pd.DataFrame) -> np.ndarray:
    return np.concatenate([g["timestamp"].sort_values().diff().dt.total_seconds().dropna().to_numpy()
                           for _, g in selected.groupby("camera")])


def test_one_frame_per_interval_per_camera():
    frames = _frames({"cam1": [0, 3, 9, 10, 14, 25, 26, 40], "cam2": [0, 1, 2, 30]})
    pool = candidates(frames, NOBODY, SelectionRule(interval_s=10))
    assert pool[pool["camera"] == "cam1"]["name"].tolist() == ["00000.jpg", "00003.jpg", "00005.jpg", "00007.jpg"]
    assert pool[pool["camera"] == "cam2"]["name"].tolist() == ["00000.jpg", "00003.jpg"]
    assert (_gaps(pool) >= 10).all()


def test_frames_near_a_labelled_snapshot_of_the_same_camera_are_excluded():
    frames = _frames({"cam1": [0, 20, 40, 60], "cam2": [20]})
    labelled = pd.DataFrame({"camera": ["cam1", None], "timestamp": [START + pd.Timedelta(seconds=45),
                                                                   START + pd.Timedelta(seconds=500)]})
    pool = candidates(frames, labelled, SelectionRule(interval_s=0, exclusion_s=5))
    assert pool["name"].tolist() == ["00000.jpg", "00001.jpg", "00003.jpg", "00000.jpg"]  # cam1 40 s is 5 s off
    # a snapshot of unknown camera excludes every camera around its time
    anywhere = pd.DataFrame({"camera": [None], "timestamp": [START + pd.Timedelta(seconds=20)]})
    assert set(candidates(frames, anywhere, SelectionRule(0, 1))["timestamp"]) == {START + pd.Timedelta(seconds=s)
                                                                                 for s in (0, 40, 60)}


def test_the_cap_keeps_each_cameras_share_spread_in_time_and_interleaves():
    frames = _frames({"cam1": list(range(0, 3000, 10)), "cam2": list(range(0, 1000, 10))})  # 300 and 100
    rule = SelectionRule(interval_s=10, target=40)
    picked = pick(candidates(frames, NOBODY, rule), rule)
    assert len(picked) == 40 and picked["camera"].value_counts().to_dict() == {"cam1": 30, "cam2": 10}
    cam1 = picked[picked["camera"] == "cam1"]["timestamp"]
    assert cam1.min() == START and cam1.max() == START + pd.Timedelta(seconds=2990)  # the whole range
    assert picked["camera"].tolist()[:6] == ["cam1", "cam2"] * 3
    assert picked["path"].is_unique


def test_shares_and_spread():
    assert shares({"a": 5, "b": 5}, 20) == {"a": 5, "b": 5}
    assert shares({"a": 2, "b": 1}, 2) == {"a": 1, "b": 1}
    assert sum(shares({"a": 7, "b": 11, "c": 13}, 10).values()) == 10
    assert spread(10, 3).tolist() == [0, 4, 9] and spread(3, 5).tolist() == [0, 1, 2]
    assert spread(9, 1).tolist() == [4] and spread(9, 0).tolist() == []


def test_review_value_prefers_doubtful_frames_within_the_same_shares(tmp_path):
    frames = _frames({"cam1": list(range(0, 200, 10)), "cam2": list(range(0, 200, 10))})
    doubtful = {"/c/cam1/00003.jpg": 2.0, "/c/cam1/00004.jpg": 1.0, "/c/cam2/00011.jpg": 5.0}
    seen = {}

    def review_value(paths: list[str], out_dir: Path) -> pd.Series:
        seen["paths"], seen["out"] = paths, out_dir
        return pd.Series(doubtful)

    rule = SelectionRule(interval_s=10, target=6, policy="review_value")
    report = build_selection(frames, NOBODY, rule, tmp_path, review_value)
    chosen = pd.read_parquet(tmp_path / SELECTION)
    assert len(seen["paths"]) == 40 and seen["out"] == tmp_path  # valued every candidate
    assert set(doubtful) <= set(chosen["path"])
    assert chosen["camera"].value_counts().to_dict() == {"cam1": 3, "cam2": 3}
    assert chosen["order"].tolist() == list(range(6))
    assert report.details["review_value_frames_with_doubt"] == 3
    assert report.details["time_uniform_frames_with_doubt"] < 3
    table = {row["camera"]: row for row in report.details["cameras"].rows}
    assert table["cam1"]["review_value"] == 3 and table["cam1"]["time_uniform"] == 3


def test_the_time_uniform_selection_is_written_with_its_counts(tmp_path):
    frames = _frames({"cam1": list(range(0, 100, 5)), "cam2": [0]})
    report = build_selection(frames, NOBODY, SelectionRule(interval_s=10, target=100), tmp_path)
    chosen = pd.read_parquet(tmp_path / SELECTION)
    assert report.counts == {"frames": 11, "candidates": 11, "live_frames": 21, "excluded_near_labelled": 0,
                             "frames_cam1": 10, "frames_cam2": 1}
    assert "fewer than the target" in report.warnings[0]
    assert len(chosen) == 11 and (_gaps(chosen) >= 10).all()


def test_bad_rules_and_a_review_value_without_a_detector_are_refused(tmp_path):
    with pytest.raises(CaptureError, match="policy 'busiest'"):
        SelectionRule(policy="busiest")
    with pytest.raises(CaptureError, match="at least 1 frame"):
        SelectionRule(target=0)
    with pytest.raises(CaptureError, match="needs the detector"):
        build_selection(_frames({"cam1": [0]}), NOBODY, SelectionRule(policy="review_value"), tmp_path)


def test_labelled_snapshots_are_read_in_the_capture_time_zone(tmp_path):
    (tmp_path / "manifests").mkdir()
    pd.DataFrame({"image": ["a.jpg", "b.jpg"], "camera": ["cam1", None],
                  "timestamp": pd.to_datetime(["2026-02-11 07:05:46", None])}).to_parquet(
        tmp_path / "manifests" / "images.parquet")
    snapshots = labelled_snapshots(tmp_path, "Asia/Seoul")
    assert snapshots["timestamp"].tolist() == [pd.Timestamp("2026-02-11 07:05:46", tz="Asia/Seoul")]
