"""The review loop's first half on a real Dagster instance: the drop-folder sensor hands each
complete export out once (across ticks, restarts, copies and changes), and an import run keeps
the export and reads it against the review packages; a corrupt export fails its own run naming
the file, and an export of images in no package is refused with their names."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import cv2
import dagster as dg
import numpy as np
import pytest
import yaml

from hoban_pipelines.assets.retraining import reviewed_exports, reviewed_labels
from hoban_pipelines.core.lake import Lake
from hoban_pipelines.cvat.writer import BoxShape, ImageEntry, LabelSpec, write_images_export
from hoban_pipelines.definitions import defs
from hoban_pipelines.resources import LakeHandleIOManager, LakeResource, SettingsResource
from hoban_pipelines.review.packages import SCORE_ATTRIBUTE, ReviewBox, ReviewImage, build_review_packages

CLASSES = ["person_with_helmet", "person_without_helmet"]
WIDTH, HEIGHT = 320, 180


@pytest.fixture
def drop(hoban_home, tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "drop"
    folder.mkdir()
    config = tmp_path / "loop.yaml"
    config.write_text(yaml.safe_dump({"review_drop": str(folder)}))
    monkeypatch.setenv("HOBAN_CONFIG", str(config))
    return folder


def _export(path: Path, images: list[tuple[str, list[tuple[str, float, float, float, float]]]]) -> Path:
    """A CVAT task export zip: annotations.xml at its root with the given images and boxes."""
    xml = path.with_suffix(".xml.tmp")
    entries = [ImageEntry(frame, name, WIDTH, HEIGHT, [BoxShape(label, x1, y1, x2, y2) for label, x1, y1, x2, y2 in boxes])
               for frame, (name, boxes) in enumerate(images)]
    write_images_export(xml, task_name="review_part1", labels=[LabelSpec(c, [SCORE_ATTRIBUTE]) for c in CLASSES],
                        images=entries)
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(xml, "annotations.xml")
    xml.unlink()
    return path


def _tick(sensor: dg.SensorDefinition, instance: dg.DagsterInstance, cursor: str | None):
    """One evaluation of the sensor as the daemon makes it: (run requests, the cursor it stored,
    its dynamic partition requests)."""
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                      resources={"settings": SettingsResource()})
    result = sensor(context)
    if isinstance(result, dg.SkipReason):
        return [], context.cursor, []
    return list(result.run_requests), context.cursor, list(result.dynamic_partitions_requests)


def test_the_sensor_hands_each_complete_export_out_once(drop):
    sensor = defs.resolve_sensor_def("reviewed_exports_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    with dg.instance_for_test() as instance:
        first = _export(drop / "part1.zip", [("captures/cam1/a.jpg", [("person_with_helmet", 10, 10, 40, 80)])])
        requests, cursor, _ = _tick(sensor, instance, None)
        assert requests == []  # seen once: it may still be being written
        requests, cursor, partitions = _tick(sensor, instance, cursor)
        assert len(requests) == 1
        request = requests[0]
        assert request.run_config["ops"]["reviewed_exports"]["config"]["path"] == str(first)
        assert request.partition_key in request.run_key or request.run_key.endswith(
            request.run_config["ops"]["reviewed_exports"]["config"]["sha256"])
        assert partitions[0].partition_keys == [request.partition_key]
        assert _tick(sensor, instance, cursor)[0] == []  # the next tick skips it
        assert _tick(sensor, instance, cursor)[0] == []  # as does a restarted daemon, from the stored cursor
        shutil.copy(first, drop / "copy_of_part1.zip")
        requests, cursor, _ = _tick(sensor, instance, cursor)
        requests, cursor, _ = _tick(sensor, instance, cursor)
        assert requests == []  # the same content under another name
        # a file written in two steps across a tick waits until it stops changing
        growing = drop / "part2.zip"
        data = _export(drop / "part2.tmp.zip", [("captures/cam1/b.jpg", [])]).read_bytes()
        (drop / "part2.tmp.zip").unlink()
        growing.write_bytes(data[: len(data) // 2])
        requests, cursor, _ = _tick(sensor, instance, cursor)
        with open(growing, "ab") as handle:
            handle.write(data[len(data) // 2:])
        requests, cursor, _ = _tick(sensor, instance, cursor)
        assert requests == []  # it changed since the last tick
        requests, cursor, _ = _tick(sensor, instance, cursor)
        assert [Path(r.run_config["ops"]["reviewed_exports"]["config"]["path"]) for r in requests] == [growing]
        assert requests[0].partition_key != request.partition_key  # new content, a new partition


def test_a_missing_drop_folder_is_a_skip_naming_the_setting(hoban_home, tmp_path, monkeypatch):
    config = tmp_path / "loop.yaml"
    config.write_text(yaml.safe_dump({"review_drop": str(tmp_path / "nowhere")}))
    monkeypatch.setenv("HOBAN_CONFIG", str(config))
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources={"settings": SettingsResource()})
        result = defs.resolve_sensor_def("reviewed_exports_sensor")(context)
    assert isinstance(result, dg.SkipReason) and "review_drop" in result.skip_message


def _packages(home: Path, tmp_path: Path) -> None:
    """A cvat_review_packages version in the lake: one task of two captures, one box each."""
    images = []
    for n in range(2):
        path = tmp_path / "frames" / f"cam1_20260211_07050{n}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.random.default_rng(n).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8))
        images.append(ReviewImage(path, f"captures/cam1/{path.name}", "captures", WIDTH, HEIGHT,
                                  (ReviewBox("person_with_helmet", 10, 10, 40, 80, 0.9),), camera="cam1"))
    with Lake(home).new_version("cvat_review_packages") as version:
        build_review_packages(images, CLASSES, version.path)


def _import(instance, home: Path, export: Path, key: str):
    instance.add_dynamic_partitions("reviewed_exports", [key])
    return dg.materialize(
        [reviewed_exports, reviewed_labels], partition_key=key, instance=instance, raise_on_error=False,
        resources={"lake": LakeResource(home=str(home)), "io_manager": LakeHandleIOManager(home=str(home)),
                   "settings": SettingsResource()},
        run_config={"ops": {"reviewed_exports": {"config": {"path": str(export)}}}},
    )


def _error(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(str(event.step_failure_data.error) for event in result.all_events if event.is_step_failure)


def test_imports_run_one_partition_each_and_a_bad_export_fails_only_its_own(drop, hoban_home, tmp_path):
    _packages(hoban_home, tmp_path)
    with dg.instance_for_test() as instance:
        corrupt = drop / "broken.zip"
        corrupt.write_bytes(b"PK\x03\x04 cut off")
        broken = _import(instance, hoban_home, corrupt, "broken0000000000")
        assert not broken.success and str(corrupt.name) in _error(broken)
        foreign = _export(drop / "foreign.zip", [("captures/cam9/unknown.jpg", [])])
        refused = _import(instance, hoban_home, foreign, "foreign000000000")
        assert not refused.success and "captures/cam9/unknown.jpg" in _error(refused)
        # the reviewer deleted the first frame's box and moved nothing on the second
        good = _export(drop / "part1.zip", [("captures/cam1/cam1_20260211_070500.jpg", []),
                                            ("captures/cam1/cam1_20260211_070501.jpg",
                                             [("person_with_helmet", 10, 10, 40, 80)])])
        imported = _import(instance, hoban_home, good, "good000000000000")
        assert imported.success
        labels = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("reviewed_labels"), asset_partitions=["good000000000000"]),
            limit=1).records[0].asset_materialization
        assert labels.metadata["count/kept"].value == 1 and labels.metadata["count/deleted"].value == 1
        assert labels.metadata["precision"].value == 0.5 and labels.metadata["recall"].value == 1.0
        kept = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("reviewed_exports"), asset_partitions=["good000000000000"]),
            limit=1).records[0].asset_materialization
        assert (hoban_home / kept.metadata["lake_path"].value / "part1.zip").read_bytes() == good.read_bytes()


class _FakeTask:
    """Stands in for cvat-sdk's Task proxy: no CVAT server can run here."""

    def __init__(self, task_id: int, name: str, status: str, updated: str):
        self.id, self.name, self.status, self.updated_date = task_id, name, status, updated
        self.exports: list[tuple[str, Path, bool]] = []

    def export_dataset(self, format_name, filename, *, include_images=True):
        self.exports.append((format_name, Path(filename), include_images))
        _export(Path(filename), [("captures/cam1/a.jpg", [])])


class _FakeClient:
    def __init__(self, tasks):
        self.tasks = self
        self._tasks = tasks

    def list(self):
        return list(self._tasks)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_completed_cvat_tasks_are_exported_into_the_drop_folder_once(drop, monkeypatch):
    """The CVAT client is a recording fake (no server can run here); the sensor and the files are real."""
    from hoban_pipelines.resources import CvatResource

    done = _FakeTask(7, "review_part1", "completed", "2026-12-01T10:00:00Z")
    tasks = [done, _FakeTask(8, "review_part2", "annotation", "x"), _FakeTask(9, "other_task", "completed", "x")]
    monkeypatch.setattr(CvatResource, "client", lambda self: _FakeClient(tasks))
    sensor = defs.resolve_sensor_def("cvat_completed_tasks_sensor")
    resources = {"settings": SettingsResource(), "cvat": CvatResource(host="https://cvat.example")}
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources=resources)
        assert "review_part1_7.zip" in sensor(context).skip_message
        assert [(f, p.name, images) for f, p, images in done.exports] == [
            ("CVAT for images 1.1", ".review_part1_7.zip.part", False)]
        assert sorted(p.name for p in drop.iterdir()) == ["review_part1_7.zip"]  # renamed whole, nothing else
        again = dg.build_sensor_context(instance=instance, cursor=context.cursor, resources=resources)
        sensor(again)
        assert len(done.exports) == 1  # unchanged on the server: not fetched again
        done.updated_date = "2026-12-02T09:00:00Z"  # reopened and completed again
        sensor(dg.build_sensor_context(instance=instance, cursor=again.cursor, resources=resources))
        assert len(done.exports) == 2
        idle = dg.build_sensor_context(instance=instance, resources={"settings": SettingsResource(),
                                                                     "cvat": CvatResource()})
        assert "no CVAT server configured" in sensor(idle).skip_message


VIDEO_EXPORT = """<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta>
    <task>
      <id>7</id>
      <name>review_part1</name>
      <size>2</size>
      <mode>annotation</mode>
      <start_frame>0</start_frame>
      <stop_frame>1</stop_frame>
      <frame_filter></frame_filter>
      <labels>
        <label><name>person_with_helmet</name><attributes></attributes></label>
        <label><name>person_without_helmet</name><attributes></attributes></label>
      </labels>
    </task>
  </meta>
  <track id="0" label="person_without_helmet" source="manual">
    <box frame="1" keyframe="1" outside="0" occluded="0" xtl="10.00" ytl="10.00" xbr="40.00" ybr="80.00" z_order="0">
    </box>
  </track>
</annotations>
"""


def test_a_cvat_for_video_export_of_a_review_task_imports_by_the_packages_frames(drop, hoban_home, tmp_path):
    """An image task exported as "CVAT for video 1.1" names no frame and gives no size: the package's
    manifest (task name from <meta>, frame numbers) says which image each frame is."""
    _packages(hoban_home, tmp_path)
    video = drop / "part1_video.zip"
    with zipfile.ZipFile(video, "w") as archive:
        archive.writestr("annotations.xml", VIDEO_EXPORT)
    with dg.instance_for_test() as instance:
        assert _import(instance, hoban_home, video, "video00000000000").success
        labels = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("reviewed_labels"), asset_partitions=["video00000000000"]),
            limit=1).records[0].asset_materialization
    # frame 0 lost its box, frame 1's box was relabelled to person_without_helmet
    assert labels.metadata["count/images"].value == 2
    assert labels.metadata["count/deleted"].value == 1 and labels.metadata["count/relabelled"].value == 1
