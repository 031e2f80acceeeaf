"""The review drop folder (domain only, no Dagster): stability across ticks, completeness, content keys,
the cursor surviving a daemon restart, ignored names and a missing folder."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from hoban_pipelines.review import drop_folder
from hoban_pipelines.review.drop_folder import (
    INCOMPLETE_TICKS,
    KEY_LENGTH,
    DropCursor,
    DropFolderError,
    ScanResult,
    scan,
)

XML = (
    '<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version>'
    '<image id="0" name="site/a b&amp;c.jpg" width="64" height="48">'
    '<box label="person_with_helmet" occluded="0" xtl="1" ytl="2" xbr="30" ybr="40" z_order="0"/>'
    "</image></annotations>\n"
)
VIDEO_XML = (
    '<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version>'
    '<track id="0" label="person_with_helmet"><box frame="0" outside="0" occluded="0" keyframe="1" '
    'xtl="1" ytl="2" xbr="30" ybr="40" z_order="0"/></track></annotations>\n'
)
T0 = 1_700_000_000_000_000_000  # a fixed mtime in ns; each write in a test moves it on by a second


def _zip_bytes(xml: str = XML, images: int = 3) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("annotations.xml", xml)
        for i in range(images):
            archive.writestr(f"images/site/{i:03d}.jpg", os.urandom(2000))
    return buffer.getvalue()


def _write(path: Path, data: bytes | str, mtime_ns: int = T0, *, append: bool = False) -> Path:
    raw = data.encode() if isinstance(data, str) else data
    with path.open("ab" if append else "wb") as stream:
        stream.write(raw)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


class Sensor:
    """Ticks like the sensor does: the cursor is stored as its JSON string between ticks."""

    def __init__(self, folder: Path, cursor: str | None = None) -> None:
        self.folder = folder
        self.cursor = cursor

    def tick(self, **kwargs) -> ScanResult:
        result = scan(self.folder, DropCursor.from_json(self.cursor), **kwargs)
        self.cursor = result.cursor.to_json()
        return result


def _names(result: ScanResult) -> list[str]:
    return [export.name for export in result.ready]


def test_new_file_is_ready_on_the_second_tick_and_skipped_on_the_third(tmp_path):
    path = _write(tmp_path / "go2k_part1.xml", XML)
    sensor = Sensor(tmp_path)

    first = sensor.tick()
    assert (first.ready, first.waiting, first.skipped, first.settled) == ([], ["go2k_part1.xml"], [], [])

    second = sensor.tick()
    [export] = second.ready
    sha256 = hashlib.sha256(XML.encode()).hexdigest()
    assert export.path == path
    assert (export.sha256, export.size, export.problem) == (sha256, path.stat().st_size, None)
    assert export.partition_key == sha256[:KEY_LENGTH] and len(export.partition_key) == 16
    assert sha256 in export.run_key
    assert second.waiting == [] and second.skipped == []

    for _ in range(2):
        later = sensor.tick()
        assert (later.ready, later.waiting, later.skipped) == ([], [], [])
        assert later.settled == ["go2k_part1.xml"]
        assert "0 ready" in later.describe()


def test_file_written_in_steps_is_ready_only_once_it_stops_changing(tmp_path):
    half = len(XML) // 2
    path = _write(tmp_path / "part2.xml", XML[:half], T0)
    sensor = Sensor(tmp_path)
    assert sensor.tick().waiting == ["part2.xml"]

    _write(path, XML[half:], T0 + 1_000_000_000, append=True)
    changed = sensor.tick()
    assert changed.ready == [] and changed.waiting == ["part2.xml"]

    # the size alone changing (a filesystem with coarse mtimes) also means "still being written"
    _write(path, "<!-- tail -->\n", T0 + 1_000_000_000, append=True)
    assert sensor.tick().waiting == ["part2.xml"]

    [export] = sensor.tick().ready
    assert export.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert export.problem is None


def test_daemon_restart_from_the_stored_cursor_triggers_nothing_again(tmp_path):
    _write(tmp_path / "a.zip", _zip_bytes())
    _write(tmp_path / "b.xml", XML)
    sensor = Sensor(tmp_path)
    sensor.tick()
    assert _names(sensor.tick()) == ["a.zip", "b.xml"]
    stored = sensor.cursor

    for _ in range(2):  # a new daemon, twice: each starts from the stored string
        restarted = scan(tmp_path, DropCursor.from_json(stored))
        assert restarted.ready == [] and restarted.waiting == [] and restarted.skipped == []
        assert restarted.cursor.to_json() == stored


def test_restart_keeps_a_file_that_was_only_being_watched(tmp_path):
    _write(tmp_path / "a.xml", XML)
    stored = Sensor(tmp_path)
    assert stored.tick().waiting == ["a.xml"]
    restarted = Sensor(tmp_path, stored.cursor)
    assert _names(restarted.tick()) == ["a.xml"]


def test_copies_and_retouched_files_are_not_handed_out_again_but_new_content_is(tmp_path):
    path = _write(tmp_path / "task_12.zip", _zip_bytes())
    sensor = Sensor(tmp_path)
    sensor.tick()
    [first] = sensor.tick().ready

    shutil.copyfile(path, tmp_path / "task_12 (copy).zip")
    os.utime(path, ns=(T0 + 5_000_000_000,) * 2)  # re-touched, same bytes
    assert sensor.tick().waiting == ["task_12 (copy).zip", "task_12.zip"]
    stable = sensor.tick()
    assert stable.ready == []
    assert [name for name, _ in stable.skipped] == ["task_12 (copy).zip", "task_12.zip"]
    for _, reason in stable.skipped:
        assert "same content as 'task_12.zip'" in reason and first.partition_key in reason
    assert sensor.tick().settled == ["task_12 (copy).zip", "task_12.zip"]

    _write(path, _zip_bytes(XML.replace('xtl="1"', 'xtl="2"')), T0 + 9_000_000_000)  # a new export, same name
    assert sensor.tick().waiting == ["task_12.zip"]
    [changed] = sensor.tick().ready
    assert changed.name == "task_12.zip"
    assert changed.partition_key != first.partition_key and changed.run_key != first.run_key


def test_deleted_and_dropped_again_is_not_handed_out_again(tmp_path):
    path = _write(tmp_path / "a.xml", XML)
    sensor = Sensor(tmp_path)
    sensor.tick()
    assert _names(sensor.tick()) == ["a.xml"]
    path.unlink()
    gone = sensor.tick()
    assert (gone.ready, gone.waiting, gone.settled) == ([], [], [])
    assert json.loads(sensor.cursor)["done"] == {}

    _write(tmp_path / "a.xml", XML, T0 + 3_000_000_000)
    sensor.tick()
    back = sensor.tick()
    assert back.ready == [] and "already handed out" in back.skipped[0][1]


def test_identical_new_files_on_one_tick_hand_out_the_first_by_name(tmp_path):
    for name in ("c.xml", "a.xml", "b.xml"):
        _write(tmp_path / name, XML)
    sensor = Sensor(tmp_path)
    sensor.tick()
    result = sensor.tick()
    assert _names(result) == ["a.xml"]
    assert [name for name, _ in result.skipped] == ["b.xml", "c.xml"]


def test_temp_hidden_and_lock_files_are_ignored(tmp_path):
    for name in ("export.tmp", "export.zip.part", "export.part", ".hidden.zip", "~$review.xml", "~backup.xml",
                 "notes.txt", "annotations"):
        _write(tmp_path / name, XML)
    (tmp_path / "folder.zip").mkdir()
    _write(tmp_path / "real.XML", XML)
    sensor = Sensor(tmp_path)
    for _ in range(3):
        result = sensor.tick()
        considered = _names(result) + result.waiting + [n for n, _ in result.skipped] + result.settled
        assert set(considered) == {"real.XML"}
    cursor = json.loads(sensor.cursor)
    assert set(cursor["done"]) == {"real.XML"} and cursor["watch"] == {}


def test_missing_drop_folder_names_the_folder_and_the_setting(tmp_path):
    missing = tmp_path / "no_such_drop"
    with pytest.raises(DropFolderError, match=r"no_such_drop does not exist \(setting 'review_drop'\)"):
        scan(missing, DropCursor())
    a_file = _write(tmp_path / "not_a_folder", "x")
    with pytest.raises(DropFolderError, match="not_a_folder is not a folder.*review_drop"):
        scan(a_file, DropCursor())
    assert issubclass(DropFolderError, ValueError)


def test_truncated_zip_waits_then_is_handed_out_after_the_tick_limit(tmp_path):
    whole = _zip_bytes()
    _write(tmp_path / "cut.zip", whole[: len(whole) // 2])
    _write(tmp_path / "fine.xml", XML)
    sensor = Sensor(tmp_path)
    sensor.tick()

    stable = sensor.tick()
    assert _names(stable) == ["fine.xml"]  # the bad zip does not hold the good export back
    [(name, reason)] = stable.skipped
    assert name == "cut.zip" and "zip central directory cannot be read" in reason
    for _ in range(INCOMPLETE_TICKS - 1):  # reported once; waiting, silently, while it does not change
        held = sensor.tick()
        assert (held.ready, held.waiting, held.skipped) == ([], ["cut.zip"], [])

    [export] = sensor.tick().ready
    assert export.name == "cut.zip" and "central directory" in export.problem
    assert sensor.tick().settled == ["cut.zip", "fine.xml"]


def test_zip_finished_in_place_while_held_is_handed_out_complete(tmp_path):
    whole = _zip_bytes()
    path = _write(tmp_path / "prealloc.zip", bytes(len(whole)))  # a copy that preallocates the file
    sensor = Sensor(tmp_path)
    sensor.tick()
    assert sensor.tick().skipped[0][0] == "prealloc.zip"
    _write(path, whole, T0 + 2_000_000_000)
    assert sensor.tick().waiting == ["prealloc.zip"]
    [export] = sensor.tick().ready
    assert export.problem is None and export.sha256 == hashlib.sha256(whole).hexdigest()


def test_truncated_xml_waits_like_a_zip(tmp_path):
    _write(tmp_path / "cut.xml", XML[:-30])
    sensor = Sensor(tmp_path)
    sensor.tick()
    [(_, reason)] = sensor.tick().skipped
    assert "XML is not well-formed to its end" in reason
    assert _names(sensor.tick(incomplete_ticks=1)) == ["cut.xml"]


def test_complete_zips_and_xmls_of_every_kind_are_ready(tmp_path):
    _write(tmp_path / "task_images.zip", _zip_bytes())
    _write(tmp_path / "job_annotations_only.zip", _zip_bytes(images=0))
    _write(tmp_path / "video.xml", VIDEO_XML)
    _write(tmp_path / "images.xml", XML)
    # a DTD is the reader's business (it refuses it naming the file): complete as far as this check goes
    _write(tmp_path / "with_dtd.xml", '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>')
    sensor = Sensor(tmp_path)
    sensor.tick()
    result = sensor.tick()
    assert _names(result) == sorted(p.name for p in tmp_path.iterdir())
    assert all(export.problem is None for export in result.ready)
    assert len({export.partition_key for export in result.ready}) == 5


def test_unchanged_files_are_not_read_again(tmp_path, monkeypatch):
    _write(tmp_path / "a.zip", _zip_bytes())
    _write(tmp_path / "b.xml", XML)
    reads = []
    real_digest = drop_folder._digest
    monkeypatch.setattr(drop_folder, "_digest", lambda path: reads.append(path.name) or real_digest(path))
    sensor = Sensor(tmp_path)
    sensor.tick()
    assert reads == []  # a file first seen is not read: it may still be being written
    sensor.tick()
    for _ in range(3):
        sensor.tick()
    assert reads == ["a.zip", "b.xml"]


def test_cursor_json_round_trip_and_bad_cursors(tmp_path):
    assert DropCursor.from_json(None) == DropCursor() == DropCursor.from_json("")
    _write(tmp_path / "a.xml", XML)
    _write(tmp_path / "b.xml", XML + " ")
    sensor = Sensor(tmp_path)
    sensor.tick()
    sensor.tick()
    _write(tmp_path / "c.zip", b"PK")
    sensor.tick()
    text = sensor.cursor
    assert DropCursor.from_json(text).to_json() == text
    assert " " not in text  # compact
    data = json.loads(text)
    assert data["v"] == 1 and data["watch"] == {"c.zip": [2, T0, 0]}
    assert set(data["seen"].values()) == {"a.xml", "b.xml"} and all(len(k) == KEY_LENGTH for k in data["seen"])
    for bad in ("not json", '{"v": 99}', '{"v": 1, "watch": []}', "[1, 2]"):
        with pytest.raises(DropFolderError, match="not a review drop-folder cursor"):
            DropCursor.from_json(bad)
