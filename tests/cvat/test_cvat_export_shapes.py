"""Export shapes a current CVAT writes beyond the plain task export: job and project metas.

The fixtures are hand-written after CVAT's dumper (cvat/apps/dataset_manager/bindings.py
``JobData``/``TaskData``/``ProjectData._init_meta`` and formats/cvat.py): a "CVAT for video
1.1" job export puts ``<original_size>`` beside ``<job>``, not inside it; a project export
lists its tasks under ``meta/project/tasks``, numbers frames on across the tasks of a subset,
and gives every ``<image>``/``<track>`` a ``subset`` and ``task_id``.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest

from hoban_pipelines.cvat.reader import CvatFormatError, iter_images, read_export

FIXTURES = Path(__file__).parent / "fixtures"
VIDEO_JOB = FIXTURES / "video_job_original_size_in_meta.xml"
VIDEO_PROJECT = FIXTURES / "video_project.xml"
IMAGES_PROJECT = FIXTURES / "images_project_subsets.xml"
SAME_NAME = "cam1_20260211_101500.jpg"
ORIGINAL_SIZE = re.compile(r"\s*<original_size>.*?</original_size>", re.DOTALL)


def zipped(xml: Path, tmp_path: Path, images: list[str] = ()) -> Path:
    """The export .zip CVAT would write: annotations.xml at the top, files under images/."""
    path = tmp_path / f"{xml.stem}.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("annotations.xml", xml.read_bytes())
        for name in images:
            archive.writestr(f"images/{name}", b"image bytes")
    return path


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line of the n-th line holding needle."""
    lines = [number for number, line in enumerate(text.splitlines(), 1) if needle in line]
    return lines[occurrence - 1]


def boxes_of(image) -> list[tuple]:
    return [(box.label, box.xyxy, box.track_id) for box in image.boxes]


# --- CVAT for video 1.1, job export: <original_size> beside <job> -----------------------------


@pytest.mark.parametrize("packed", [False, True], ids=["xml", "zip"])
def test_video_job_export_takes_its_size_from_beside_the_job(tmp_path, packed):
    path = zipped(VIDEO_JOB, tmp_path) if packed else VIDEO_JOB
    export = read_export(path)
    assert export.kind == "video" and export.file == path
    assert set(export.labels) == {"person", "helmet"}
    assert export.labels["person"]["has_helmet"]["values"] == ["false", "true"]
    # The job's own frames: start_frame 10 to stop_frame 18, step=2 (absolute, like the tracks).
    assert [image.frame for image in export.images] == [10, 12, 14, 16, 18]
    assert [image.name for image in export.images][:2] == ["frame_000010", "frame_000012"]
    assert {(image.width, image.height) for image in export.images} == {(1920, 1080)}
    assert {image.subset for image in export.images} == {""}  # job exports carry no subsets
    frames = {image.frame: image for image in export.images}
    assert boxes_of(frames[10]) == [("person", (100.0, 200.0, 180.0, 400.0), 0)]
    assert boxes_of(frames[12]) == [
        ("person", (110.0, 200.0, 190.0, 400.0), 0),
        ("helmet", (1880.5, 40.0, 1920.0, 90.0), 1),  # clipped to the width beside <job>
    ]
    assert frames[12].boxes[0].occluded is True and frames[12].boxes[1].source == "auto"
    assert frames[14].boxes == []  # both tracks are outside there
    assert boxes_of(frames[16]) == [("person", (300.0, 300.0, 340.0, 380.0), 2)]
    assert frames[16].boxes[0].attributes == {"has_helmet": "true"}
    assert frames[18].boxes == []  # a polyline gives no box
    assert (export.clipped, export.dropped_empty) == (1, 0)
    assert export.element_counts["track"] == 4 and export.element_counts["polyline"] == 1


def video_meta(layout: str) -> str:
    size = "<original_size><width>64</width><height>48</height></original_size>"
    frames = "<start_frame>0</start_frame><stop_frame>2</stop_frame><frame_filter></frame_filter>"
    labels = "<labels><label><name>person</name><attributes></attributes></label></labels>"
    container, where = layout.split("/")
    inner = size if where == "inside" else ""
    beside = size if where == "beside" else ""
    return f"<meta><{container}><id>1</id>{frames}{labels}{inner}</{container}>{beside}</meta>"


@pytest.mark.parametrize("layout", ["task/inside", "job/inside", "job/beside"])
def test_every_meta_layout_gives_the_video_size(tmp_path, layout):
    path = tmp_path / "annotations.xml"
    path.write_text(
        f'<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version>'
        f"{video_meta(layout)}\n"
        '<track id="0" label="person"><box frame="1" outside="0" xtl="60" ytl="1" xbr="70" '
        'ybr="9"/></track>\n</annotations>\n'
    )
    export = read_export(path)
    assert [image.frame for image in export.images] == [0, 1, 2]
    assert {(image.width, image.height) for image in export.images} == {(64, 48)}
    assert export.images[1].boxes[0].xyxy == (60.0, 1.0, 64.0, 9.0)


def test_video_export_with_no_original_size_anywhere_names_the_file(tmp_path):
    path = tmp_path / "job_without_size.xml"
    text = VIDEO_JOB.read_text()
    path.write_text(ORIGINAL_SIZE.sub("", text))
    assert "original_size" not in path.read_text()
    with pytest.raises(CvatFormatError) as caught:
        read_export(path)
    error = caught.value
    assert error.file == path and error.element == "<original_size>"
    message = str(error)
    assert message.startswith(f"{path}, <original_size>: frame 10 has no size")
    assert "gives no <original_size> for the task" in message
    assert "<meta><job>" in message and "<meta><project><tasks><task>" in message
    assert "export the task as 'CVAT for images 1.1' instead" in message


# --- CVAT for video 1.1, project export ------------------------------------------------------


def test_video_project_export_numbers_frames_on_across_a_subset():
    export = read_export(VIDEO_PROJECT)
    assert export.kind == "video"
    frames = [(image.key, image.subset, image.width, image.height) for image in export.images]
    # Train: task 7 holds frames 0-4, task 8 continues at 5 (0 + 1 * 5); Validation restarts.
    assert frames == [
        *[(("7", f"frame_{n:06d}"), "Train", 640, 480) for n in range(5)],
        *[(("8", f"frame_{n:06d}"), "Train", 1280, 720) for n in range(5, 8)],
        *[(("9", f"frame_{n:06d}"), "Validation", 320, 240) for n in range(2)],
    ]
    by_key = {image.key: image for image in export.images}
    assert boxes_of(by_key[("7", "frame_000001")]) == [("person", (600.0, 100.0, 640.0, 200.0), 0)]
    # Task 8 is 1280 wide: the same box is not clipped there.
    assert boxes_of(by_key[("8", "frame_000006")]) == [("helmet", (600.0, 100.0, 700.0, 200.0), 1)]
    assert boxes_of(by_key[("9", "frame_000000")]) == [("person", (10.0, 10.0, 50.0, 50.0), 2)]
    assert sum(len(image.boxes) for image in export.images) == 3
    assert len({image.identity for image in export.images}) == len(export.images)


def test_video_project_task_without_size_is_named(tmp_path):
    path = tmp_path / "project_without_sizes.xml"
    path.write_text(ORIGINAL_SIZE.sub("", VIDEO_PROJECT.read_text()))
    with pytest.raises(CvatFormatError, match="no <original_size> for task 7") as caught:
        read_export(path)
    assert caught.value.file == path and str(path) in str(caught.value)


# --- CVAT for images 1.1, project export: one name in several subsets -----------------------


PROJECT_ZIP_IMAGES = [
    f"Train/{SAME_NAME}",
    "Train/cam1_20260211_101510.jpg",
    f"Test/{SAME_NAME}",
    f"Validation/{SAME_NAME}",
    "Validation/cam2_20260211_101500.jpg",
]


@pytest.mark.parametrize("packed", [False, True], ids=["xml", "zip"])
def test_images_project_export_keeps_each_subsets_image(tmp_path, packed):
    path = zipped(IMAGES_PROJECT, tmp_path, PROJECT_ZIP_IMAGES) if packed else IMAGES_PROJECT
    export = read_export(path)
    assert export.kind == "images"
    assert set(export.labels) == {"person", "helmet", "head"}
    assert [
        (image.key, image.subset, image.frame, image.width, image.height)
        for image in export.images
    ] == [
        (("41", SAME_NAME), "Train", 0, 1920, 1080),
        (("41", "cam1_20260211_101510.jpg"), "Train", 1, 1920, 1080),
        (("41", SAME_NAME), "Test", 0, 1280, 720),
        (("41", SAME_NAME), "Validation", 0, 1920, 1080),
        (("42", "cam2_20260211_101500.jpg"), "Validation", 1, 640, 360),
    ]
    assert len({image.identity for image in export.images}) == 5
    train, negative, test, validation, other_task = export.images
    assert boxes_of(train) == [
        ("helmet", (100.0, 50.0, 160.0, 110.0), None),
        ("person", (80.0, 40.0, 260.0, 600.0), None),
    ]
    assert train.boxes[1].attributes == {"has_helmet": "true"}
    assert (train.boxes[1].source, train.boxes[1].occluded, train.boxes[1].z_order) == (
        "auto", True, 1,
    )
    assert negative.boxes == []
    assert boxes_of(test) == [("head", (1250.0, 10.0, 1280.0, 60.0), None)]  # its own width
    assert boxes_of(validation) == [("person", (500.0, 280.0, 590.0, 700.0), None)]
    assert boxes_of(other_task) == [("helmet", (10.0, 20.0, 30.0, 40.0), None)]
    assert export.clipped == 1
    if packed:
        # CVAT writes a project's files as images/<subset>/<name>.
        assert export.zip_images == PROJECT_ZIP_IMAGES
        assert [f"{image.subset}/{image.name}" for image in export.images] == PROJECT_ZIP_IMAGES


def test_images_project_export_streams_image_by_image():
    images = iter_images(IMAGES_PROJECT)
    first = next(images)
    assert (first.identity, len(first.boxes)) == (("41", "Train", SAME_NAME), 2)
    assert len(list(images)) == 4


def test_same_task_subset_and_name_twice_is_still_refused(tmp_path):
    text = IMAGES_PROJECT.read_text()
    test_image = (
        f'  <image id="0" name="{SAME_NAME}" subset="Test" task_id="41" width="1280" '
        'height="720">\n'
        '    <box label="head" source="manual" occluded="0" xtl="1250.00" ytl="10.00" '
        'xbr="1300.00" ybr="60.00" z_order="0">\n    </box>\n  </image>\n'
    )
    assert test_image in text
    duplicate = test_image.replace('id="0"', 'id="1"')
    path = tmp_path / "project_with_duplicate.xml"
    path.write_text(text.replace(test_image, test_image + duplicate))
    first = line_of(path.read_text(), 'subset="Test"')
    second = line_of(path.read_text(), 'subset="Test"', occurrence=2)
    assert second == first + 4
    with pytest.raises(CvatFormatError) as caught:
        read_export(path)
    error = caught.value
    assert (error.file, error.line, error.element) == (path, second, "<image>")
    assert str(error) == (
        f"{path}, line {second}, <image>: image '{SAME_NAME}' appears twice in the same "
        f"task/subset (task_id '41', subset 'Test'; first at line {first}), so its boxes are "
        "ambiguous. Remove the duplicate <image> or export each task separately."
    )


PROJECT_META = """<meta><project><id>1</id>
  <labels><label><name>helmet</name><attributes></attributes></label></labels>
  <tasks><task><id>5</id><subset>Train</subset></task></tasks>
</project></meta>"""


def project_images_with_track(tmp_path: Path, track_subset: str) -> Path:
    """Two images with the same task, id and name in Train and Test, and a track on frame 0."""
    path = tmp_path / "annotations.xml"
    path.write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version>'
        f"{PROJECT_META}\n"
        '<image id="0" name="a.jpg" subset="Train" task_id="5" width="100" height="100"/>\n'
        '<image id="0" name="a.jpg" subset="Test" task_id="5" width="50" height="50"/>\n'
        f'<track id="3" label="helmet" task_id="5" subset="{track_subset}">'
        '<box frame="0" outside="0" xtl="40" ytl="40" xbr="80" ybr="80"/></track>\n'
        "</annotations>\n"
    )
    return path


def test_track_in_a_project_goes_to_the_image_of_its_subset(tmp_path):
    train, test = read_export(project_images_with_track(tmp_path, "Test")).images
    assert train.boxes == []
    assert boxes_of(test) == [("helmet", (40.0, 40.0, 50.0, 50.0), 3)]


def test_track_on_a_frame_its_subset_lacks_is_refused(tmp_path):
    path = project_images_with_track(tmp_path, "Validation")
    with pytest.raises(
        CvatFormatError, match="no <image id=\"0\"> in subset 'Validation' exists"
    ) as caught:
        read_export(path)
    assert caught.value.element == "<track>" and str(path) in str(caught.value)
