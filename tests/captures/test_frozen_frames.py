"""Frozen frames of a day of captures (domain only): every planted repeat found on the demo
site's captures and no live frame dropped, unreadable and truncated frames kept out without
stopping the run, and a prune that acts only on unchanged files and logs each one."""

from __future__ import annotations

import json
import shutil
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from hoban_pipelines.captures import dedup
from hoban_pipelines.captures.dedup import (
    FRAMES, FROZEN, KEEP_LIST, LIVE, RUNS, UNREADABLE, PruneRefused, apply_prune, build_dedup, plan_prune,
)
from hoban_pipelines.captures.ingest import MANIFEST, Timestamping, build_captures
from hoban_pipelines.demo.crew import SITE_DAYS, SITE_EPOCH


def _truth(site: Path) -> pd.DataFrame:
    frames = json.loads((site / "ground_truth" / "captures.json").read_text())["frames"]
    return pd.DataFrame(frames).assign(path=lambda t: [str(site / "captures" / f) for f in t["file"]])


def _dedup_day(roots: dict[str, Path], day: date, tmp_path: Path, name: str) -> Path:
    ingested, out = tmp_path / f"{name}_captures", tmp_path / f"{name}_dedup"
    ingested.mkdir()
    out.mkdir()
    build_captures(roots, day, Timestamping(), ingested)
    build_dedup(ingested, out)
    return out


def test_every_planted_frozen_frame_is_found_and_no_live_frame_dropped(demo_profile_site, tmp_path):
    roots = {camera: demo_profile_site / "captures" / camera for camera in ("cam1", "cam2")}
    found = []
    for offset in range(SITE_DAYS):
        day = (SITE_EPOCH + timedelta(days=offset)).date()
        found.append(pd.read_parquet(_dedup_day(roots, day, tmp_path, day.isoformat()) / FRAMES))
    found = pd.concat(found, ignore_index=True)
    truth = _truth(demo_profile_site).set_index("path")
    assert len(found) == len(truth)
    planted = truth[truth["frozen_of"].notna()]
    assert {"bytes", "reencode"} <= set(planted["copy"])  # both kinds are planted
    flagged = found.set_index("path")
    assert (flagged.loc[planted.index, "status"] == FROZEN).all()
    # each repeat points at the frame it repeats; byte copies are found by hash
    assert (flagged.loc[planted.index, "frozen_of"] == [str(demo_profile_site / "captures" / f)
                                                          for f in planted["frozen_of"]]).all()
    assert (flagged.loc[planted[planted["copy"] == "bytes"].index, "reason"] == "bytes").all()
    live = truth[truth["frozen_of"].isna()]
    assert (flagged.loc[live.index, "status"] == LIVE).all()  # static lunch frames included
    assert truth.loc[live.index, "static"].any()


@pytest.fixture
def day_dir(small_site, tmp_path) -> tuple[Path, dict[str, Path]]:
    """A copy of the small site's first day, cameras in the recorders' layout."""
    roots = {}
    for camera in ("cam1", "cam2"):
        source = small_site / "captures" / camera / "20260211"
        shutil.copytree(source, tmp_path / "captures" / camera / "20260211")
        roots[camera] = tmp_path / "captures" / camera
    return tmp_path, roots


def test_the_version_holds_frames_keep_list_runs_and_freeable_bytes(day_dir, small_site):
    tmp_path, roots = day_dir
    ingested = tmp_path / "ingested"
    ingested.mkdir()
    build_captures(roots, date(2026, 2, 11), Timestamping(), ingested)
    out = tmp_path / "dedup"
    out.mkdir()
    report = build_dedup(ingested, out)
    frames, runs = pd.read_parquet(out / FRAMES), pd.read_parquet(out / RUNS)
    frozen = frames[frames["status"] == FROZEN]
    assert report.counts["frozen"] == len(frozen) > 0
    assert report.counts["kept"] + report.counts["frozen"] + report.counts["unreadable"] == report.counts["frames"]
    assert report.details["bytes_freeable"] == int(frozen["bytes"].sum())
    assert runs["repeats"].sum() == len(frozen) and report.counts["runs"] == len(runs)
    keep = (out / KEEP_LIST).read_text().splitlines()
    assert keep == frames.loc[frames["status"] == LIVE, "path"].tolist()
    assert report.details["frozen_score_max"] < report.details["threshold"] < report.details["live_score_min"]


def test_unreadable_and_truncated_frames_are_counted_and_kept_out(day_dir):
    tmp_path, roots = day_dir
    folder = roots["cam1"] / "20260211"
    frames = sorted(folder.glob("*.jpg"))
    data = frames[3].read_bytes()
    frames[3].write_bytes(data[: len(data) // 2])  # cut off mid-write
    frames[5].write_text("not a jpeg")
    out = _dedup_day(roots, date(2026, 2, 11), tmp_path, "broken")
    found = pd.read_parquet(out / FRAMES).set_index("name")
    broken = {f"20260211/{frames[3].name}": "truncated JPEG", f"20260211/{frames[5].name}": "cannot decode"}
    for name, reason in broken.items():
        assert found.loc[name, "status"] == UNREADABLE and reason in found.loc[name, "error"]
    keep = set((out / KEEP_LIST).read_text().splitlines())
    assert not keep & {str(frames[3]), str(frames[5])}
    assert len(keep) >= len(found) - len(broken) - (found["status"] == FROZEN).sum()  # the rest went on


def test_an_empty_day_has_an_empty_dedup(tmp_path):
    ingested, out = tmp_path / "ingested", tmp_path / "out"
    ingested.mkdir()
    out.mkdir()
    (tmp_path / "cam1").mkdir()
    build_captures({"cam1": tmp_path / "cam1"}, date(2026, 3, 1), Timestamping(), ingested)
    report = build_dedup(ingested, out)
    assert report.counts["frames"] == 0 and report.counts["runs"] == 0
    assert (out / KEEP_LIST).read_text() == ""


def _frozen_day(day_dir) -> tuple[Path, pd.DataFrame]:
    tmp_path, roots = day_dir
    out = _dedup_day(roots, date(2026, 2, 11), tmp_path, "prune")
    frames = pd.read_parquet(out / FRAMES)
    assert (frames["status"] == FROZEN).any()
    return out, frames


def test_a_dry_run_deletes_nothing_and_apply_logs_every_removal(day_dir):
    out, frames = _frozen_day(day_dir)
    frozen = frames.loc[frames["status"] == FROZEN, "path"].tolist()
    plan = plan_prune(out)
    assert sorted(f["path"] for f in plan.files) == sorted(frozen) and not plan.problems
    assert plan.summary()["bytes"] == int(frames.loc[frames["status"] == FROZEN, "bytes"].sum())
    assert all(Path(p).exists() for p in frames["path"])  # planning touched nothing
    log = day_dir[0] / "logs" / "prune.jsonl"
    removed = list(apply_prune(plan, log))
    assert [r["path"] for r in removed] == [f["path"] for f in plan.files]
    assert not any(Path(p).exists() for p in frozen)
    assert all(Path(p).exists() for p in frames.loc[frames["status"] != FROZEN, "path"])
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert [entry["path"] for entry in logged] == [r["path"] for r in removed]
    assert all(entry["dedup_version"] == str(out) and entry["sha256"] for entry in logged)
    again = plan_prune(out)  # an earlier prune's files are gone, not a problem
    assert not again.files and sorted(again.gone) == sorted(frozen) and not again.problems


def test_a_prune_of_a_version_whose_files_changed_is_refused(day_dir):
    out, frames = _frozen_day(day_dir)
    repeat = frames[frames["status"] == FROZEN].iloc[0]
    Path(repeat["frozen_of"]).write_bytes(Path(repeat["frozen_of"]).read_bytes() + b"\0")  # the kept frame changed
    plan = plan_prune(out)
    assert any(repeat["frozen_of"] in problem for problem in plan.problems)
    with pytest.raises(PruneRefused, match="changed since it was built"):
        list(apply_prune(plan, day_dir[0] / "prune.jsonl"))
    assert all(Path(p).exists() for p in frames["path"])
    assert not (day_dir[0] / "prune.jsonl").exists()


def test_prune_refuses_a_folder_that_is_not_a_dedup_version(tmp_path):
    (tmp_path / MANIFEST).write_text("")
    with pytest.raises(dedup.CaptureError, match="not a captures_dedup version"):
        plan_prune(tmp_path)
