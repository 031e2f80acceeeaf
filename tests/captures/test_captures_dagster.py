"""Captures through Dagster: the nightly schedule asks for yesterday's partition, past days are
backfilled one partition each on a real instance, an empty day is an empty partition, and a
camera folder that does not exist fails with the setting's name."""

from __future__ import annotations

import json
import shutil
import warnings
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pandas as pd
import pytest
import yaml

from click.testing import CliRunner

from hoban_pipelines.assets.captures import captures, captures_dedup
from hoban_pipelines.captures.dedup import FRAMES, FROZEN
from hoban_pipelines.cli import main
from hoban_pipelines.captures.ingest import MANIFEST
from hoban_pipelines.core.settings import ConfigError
from hoban_pipelines.definitions import defs
from hoban_pipelines.resources import LakeHandleIOManager, LakeResource, SettingsResource


def _resources(home: Path) -> dict:
    return {
        "lake": LakeResource(home=str(home)),
        "io_manager": LakeHandleIOManager(home=str(home)),
        "settings": SettingsResource(),
    }


def _configure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cams: dict[str, Path]) -> None:
    config = tmp_path / "hoban.yaml"
    config.write_text(yaml.safe_dump({"captures": {camera: str(path) for camera, path in cams.items()}}))
    monkeypatch.setenv("HOBAN_CONFIG", str(config))


def _latest(instance: dg.DagsterInstance, day: str, asset: str = "captures"):
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[day]), limit=1).records
    assert records, day
    return records[0].asset_materialization


def test_nightly_schedule_asks_for_yesterday():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        schedule = defs.resolve_schedule_def("nightly_captures")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.execution_timezone == "Asia/Seoul"
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 2, 13, 2, 0, tzinfo=ZoneInfo("Asia/Seoul")))
    result = schedule.evaluate_tick(context)
    assert len(result.run_requests) == 1
    assert result.run_requests[0].partition_key == "2026-02-12"


def test_backfill_of_two_past_days_and_an_empty_day(hoban_home, small_site, tmp_path, monkeypatch):
    cams = {camera: small_site / "captures" / camera for camera in ("cam1", "cam2")}
    _configure(tmp_path, monkeypatch, cams)
    with dg.instance_for_test() as instance:
        for day in ("2026-02-11", "2026-02-12", "2026-02-20"):
            result = dg.materialize([captures, captures_dedup], partition_key=day, instance=instance,
                                    resources=_resources(hoban_home))
            assert result.success, day
        for day in ("2026-02-11", "2026-02-12"):
            mat = _latest(instance, day)
            frames = mat.metadata["count/frames"].value
            assert frames > 0 and frames == mat.metadata["count/frames_cam1"].value + mat.metadata["count/frames_cam2"].value
            assert mat.partition == day
            version = mat.metadata["version"].value
            folder = hoban_home / "lake" / "captures" / day / version
            assert folder.is_dir(), folder
            manifest = pd.read_parquet(folder / MANIFEST)
            assert len(manifest) == frames
            assert (manifest["timestamp"].dt.strftime("%Y-%m-%d") == day).all()
        empty = _latest(instance, "2026-02-20")
        assert empty.metadata["count/frames"].value == 0
        assert empty.metadata["count/frames_cam1"].value == 0 and empty.metadata["count/frames_cam2"].value == 0
        manifest = pd.read_parquet(hoban_home / "lake" / "captures" / "2026-02-20" / empty.metadata["version"].value / MANIFEST)
        assert manifest.empty
        assert _latest(instance, "2026-02-20", "captures_dedup").metadata["count/frames"].value == 0
        # each day's planted frozen repeats are found, and the numbers are on the materialization
        truth = json.loads((small_site / "ground_truth" / "captures.json").read_text())["frames"]
        for day in ("2026-02-11", "2026-02-12"):
            planted = [f for f in truth if f["frozen_of"] and f["timestamp"].startswith(day)]
            deduped = _latest(instance, day, "captures_dedup")
            assert deduped.metadata["count/frozen"].value == len(planted) > 0
            assert deduped.metadata["bytes_freeable"].value > 0
            assert deduped.metadata["upstream"].value == {"captures": _latest(instance, day).metadata["version"].value}
        # the two days are distinct versions
        assert _latest(instance, "2026-02-11").metadata["version"].value != _latest(instance, "2026-02-12").metadata["version"].value


def test_a_missing_capture_folder_fails_naming_the_setting(hoban_home, small_site, tmp_path, monkeypatch):
    _configure(tmp_path, monkeypatch, {"cam1": small_site / "captures" / "cam1", "cam2": tmp_path / "nowhere" / "cam2"})
    with dg.instance_for_test() as instance:
        with pytest.raises(ConfigError, match=r"setting 'captures\.cam2'"):
            dg.materialize([captures], partition_key="2026-02-11", instance=instance,
                           resources=_resources(hoban_home))
        result = dg.materialize([captures], partition_key="2026-02-11", instance=instance,
                                resources=_resources(hoban_home), raise_on_error=False)
        assert not result.success
        assert not (hoban_home / "lake" / "captures" / "2026-02-11").exists() or not any(
            p for p in (hoban_home / "lake" / "captures" / "2026-02-11").iterdir() if not p.name.startswith("."))


def test_prune_through_the_cli_dry_run_then_apply(hoban_home, small_site, tmp_path, monkeypatch):
    """The CLI acts on the day's recorded dedup version: a dry run lists and keeps, apply deletes and logs."""
    copies = tmp_path / "copies"
    for camera in ("cam1", "cam2"):
        shutil.copytree(small_site / "captures" / camera / "20260211", copies / camera / "20260211")
    _configure(tmp_path, monkeypatch, {camera: copies / camera for camera in ("cam1", "cam2")})
    with dg.instance_for_test() as instance:
        assert dg.materialize([captures, captures_dedup], partition_key="2026-02-11", instance=instance,
                              resources=_resources(hoban_home)).success
        version = _latest(instance, "2026-02-11", "captures_dedup").metadata["version"].value
    frames = pd.read_parquet(hoban_home / "lake" / "captures_dedup" / "2026-02-11" / version / FRAMES)
    frozen = frames.loc[frames["status"] == FROZEN, "path"].tolist()
    runner = CliRunner()
    dry = runner.invoke(main, ["captures", "prune", "--day", "2026-02-11", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert all(f"would delete {path}" in dry.output for path in frozen) and all(Path(p).exists() for p in frozen)
    refused = runner.invoke(main, ["captures", "prune", "--day", "2026-02-11"])
    assert refused.exit_code != 0 and "--dry-run" in refused.output
    applied = runner.invoke(main, ["captures", "prune", "--day", "2026-02-11", "--apply"])
    assert applied.exit_code == 0, applied.output
    assert not any(Path(p).exists() for p in frozen)
    assert len(frames) - len(frozen) == sum(1 for _ in copies.rglob("*.jpg"))
    log = [json.loads(line) for line in (hoban_home / "logs" / "captures_prune.jsonl").read_text().splitlines()]
    assert sorted(entry["path"] for entry in log) == sorted(frozen)
