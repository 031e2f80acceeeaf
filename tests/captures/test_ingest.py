"""One day of captures as a manifest (domain only, no Dagster): where each frame's time comes
from (name, EXIF, mtime), which frames belong to the day, what the manifest records, and how bad
settings and files vanishing mid-run are reported."""

from __future__ import annotations

import hashlib
import os
import shutil
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from PIL import Image

from hoban_pipelines.captures import ingest
from hoban_pipelines.captures.ingest import (
    COLUMNS, MANIFEST, CaptureError, Timestamping, build_captures, capture_time,
)

SEOUL = ZoneInfo("Asia/Seoul")
DAY = date(2026, 2, 11)


def _frames(site: Path, camera: str, day: str = "20260211", n: int = 3) -> list[Path]:
    return sorted((site / "captures" / camera / day).glob("*.jpg"))[:n]


@pytest.fixture
def cams(small_site, tmp_path) -> dict[str, Path]:
    """Copies of a few of the small site's frames of 2026-02-11, in the recorders' layout."""
    roots = {}
    for camera in ("cam1", "cam2"):
        folder = tmp_path / "captures" / camera / "20260211"
        folder.mkdir(parents=True)
        for frame in _frames(small_site, camera):
            shutil.copy2(frame, folder / frame.name)
        roots[camera] = tmp_path / "captures" / camera
    return roots


def _build(roots, day, tmp_path, rule=None):
    out = tmp_path / "out"
    out.mkdir(parents=True, exist_ok=True)
    report = build_captures(roots, day, rule or Timestamping(), out)
    return report, pd.read_parquet(out / MANIFEST)


def _jpeg(path: Path, exif_time: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (16, 16), (90, 120, 30))
    if exif_time is None:
        image.save(path, "JPEG")
    else:
        exif = Image.Exif()
        exif.get_ifd(ingest.EXIF_IFD)[ingest.EXIF_DATETIME_ORIGINAL] = exif_time
        image.save(path, "JPEG", exif=exif)
    return path


def test_time_from_the_name_is_local_seoul_time(cams):
    frame = sorted(cams["cam1"].rglob("*.jpg"))[0]
    stamp, source = capture_time(frame, Timestamping())
    expected = datetime.strptime(frame.stem.split("_", 1)[1], "%Y%m%d_%H%M%S").replace(tzinfo=SEOUL)
    assert source == "name"
    assert stamp == expected and stamp.utcoffset().total_seconds() == 9 * 3600
    assert str(stamp.tzinfo) == "Asia/Seoul"


def test_exif_when_the_name_has_no_stamp(tmp_path):
    frame = _jpeg(tmp_path / "cam1" / "frame_0001.jpg", "2026:02:11 08:15:30")
    stamp, source = capture_time(frame, Timestamping())
    assert source == "exif"
    assert stamp == datetime(2026, 2, 11, 8, 15, 30, tzinfo=SEOUL)


def test_mtime_as_last_resort_is_warned_about(tmp_path):
    root = tmp_path / "camx"
    frame = _jpeg(root / "frame_0002.jpg")
    when = datetime(2026, 2, 11, 10, 0, 0, tzinfo=SEOUL)
    os.utime(frame, (when.timestamp(), when.timestamp()))
    stamp, source = capture_time(frame, Timestamping())
    assert (stamp, source) == (when, "mtime")

    report, manifest = _build({"camx": root}, DAY, tmp_path)
    assert manifest["timestamp_source"].tolist() == ["mtime"]
    assert report.counts["frames"] == 1
    assert any("camx" in w and "mtime" in w for w in report.warnings), report.warnings


def test_sources_recorded_per_frame_and_exif_warned(cams, tmp_path):
    _jpeg(cams["cam2"] / "20260211" / "nostamp.jpg", "2026:02:11 23:59:59")
    report, manifest = _build(cams, DAY, tmp_path)
    by_name = dict(zip(manifest["name"], manifest["timestamp_source"]))
    assert by_name.pop(str(Path("20260211") / "nostamp.jpg")) == "exif"
    assert set(by_name.values()) == {"name"}
    assert report.details["timestamp_sources"] == {"name": 6, "exif": 1}
    assert any("cam2" in w and "EXIF" in w for w in report.warnings)


def test_a_frame_of_another_day_is_left_out(cams, small_site, tmp_path):
    other = _frames(small_site, "cam1", "20260212", 1)[0]
    shutil.copy2(other, cams["cam1"] / "20260211" / other.name)  # misfiled in the wrong day's folder
    report, manifest = _build(cams, DAY, tmp_path)
    assert other.name not in {Path(n).name for n in manifest["name"]}
    assert report.counts == {"frames": 6, "frames_cam1": 3, "frames_cam2": 3}


def test_an_empty_day_is_an_empty_manifest(cams, tmp_path):
    report, manifest = _build(cams, date(2026, 2, 20), tmp_path)
    assert list(manifest.columns) == COLUMNS
    assert manifest.empty
    assert report.counts == {"frames": 0, "frames_cam1": 0, "frames_cam2": 0}
    assert report.details["bytes"] == 0
    assert report.warnings == []


def test_manifest_records_each_files_size_and_sha256(cams, tmp_path):
    report, manifest = _build(cams, DAY, tmp_path)
    assert len(manifest) == 6
    for row in manifest.itertuples():
        data = Path(row.path).read_bytes()
        assert row.bytes == len(data)
        assert row.sha256 == hashlib.sha256(data).hexdigest()
        assert Path(row.path) == cams[row.camera] / row.name
    assert report.details["bytes"] == int(manifest["bytes"].sum())
    assert manifest["camera"].tolist() == ["cam1"] * 3 + ["cam2"] * 3
    assert manifest.groupby("camera")["timestamp"].apply(lambda t: t.is_monotonic_increasing).all()


def test_a_file_vanishing_mid_run_is_counted_and_left_out(cams, tmp_path, monkeypatch):
    victim = sorted(cams["cam2"].rglob("*.jpg"))[1]
    real = ingest._sha256

    def flaky(path):
        if Path(path) == victim:
            Path(path).unlink()
            raise FileNotFoundError(path)
        return real(path)

    monkeypatch.setattr(ingest, "_sha256", flaky)
    report, manifest = _build(cams, DAY, tmp_path)
    assert victim.name not in {Path(n).name for n in manifest["name"]}
    assert report.counts == {"frames": 5, "frames_cam1": 3, "frames_cam2": 2}
    assert any("1 files of cam2 vanished" in w for w in report.warnings), report.warnings


@pytest.mark.parametrize("kwargs, message", [
    ({"timezone": "Mars/Base"}, "Mars/Base"),
    ({"patterns": (r"\d{8}_\d{6}",)}, "stamp"),
    ({"patterns": (r"(?P<stamp>\d{8}_\d{6}",)}, "not a regular expression"),
])
def test_bad_timestamping_settings_raise_capture_error(kwargs, message):
    with pytest.raises(CaptureError, match=message):
        Timestamping(**kwargs)


def test_a_custom_pattern(tmp_path):
    root = tmp_path / "camz"
    _jpeg(root / "IMG-20260211_134501.jpg")
    _jpeg(root / "IMG-20260212_000001.jpg")
    rule = Timestamping(patterns=(r"IMG-(?P<stamp>\d{8}_\d{6})",))
    assert capture_time(root / "IMG-20260211_134501.jpg", rule) == (datetime(2026, 2, 11, 13, 45, 1, tzinfo=SEOUL), "name")
    report, manifest = _build({"camz": root}, DAY, tmp_path, rule)
    assert manifest["name"].tolist() == ["IMG-20260211_134501.jpg"]
    assert manifest["timestamp_source"].tolist() == ["name"]
    assert report.warnings == []


def test_the_demo_sites_day(small_site, tmp_path):
    roots = {camera: small_site / "captures" / camera for camera in ("cam1", "cam2")}
    report, manifest = _build(roots, DAY, tmp_path)
    counts = report.counts
    assert counts["frames"] == len(manifest) > 0
    assert counts["frames_cam1"] + counts["frames_cam2"] == counts["frames"]
    assert counts["frames_cam1"] == len(list((roots["cam1"] / "20260211").glob("*.jpg")))
    assert counts["frames_cam2"] == len(list((roots["cam2"] / "20260211").glob("*.jpg")))
    assert str(manifest["timestamp"].dt.tz) == "Asia/Seoul"
    assert (manifest["timestamp"].dt.date == DAY).all()
    assert set(manifest["timestamp_source"]) == {"name"}
    cameras = {row["camera"]: row for row in report.details["cameras"].rows}
    assert {c: r["frames"] for c, r in cameras.items()} == {"cam1": counts["frames_cam1"], "cam2": counts["frames_cam2"]}


def test_a_frame_filed_under_the_neighbouring_days_folder_belongs_to_its_own_day(tmp_path):
    """Recorders close a day's folder late: a frame of 00:01 can sit in the day before's folder."""
    root = tmp_path / "cam1"
    late = _jpeg(root / "20260211" / "cam1_20260212_000130.jpg")
    _jpeg(root / "20260211" / "cam1_20260211_235950.jpg")
    _jpeg(root / "20260212" / "cam1_20260212_070000.jpg")
    _, first = _build({"cam1": root}, date(2026, 2, 11), tmp_path / "a")
    _, second = _build({"cam1": root}, date(2026, 2, 12), tmp_path / "b")
    assert first["name"].tolist() == ["20260211/cam1_20260211_235950.jpg"]
    assert second["path"].tolist() == [str(late), str(root / "20260212" / "cam1_20260212_070000.jpg")]
