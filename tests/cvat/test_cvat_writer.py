"""The CVAT for images 1.1 writer: structure, escaping, masks, validation, atomic writes."""

from __future__ import annotations

import os

import numpy as np
import pytest
from defusedxml import ElementTree

from hoban_pipelines.cvat import rle
from hoban_pipelines.cvat.writer import (
    AttributeSpec,
    BoxShape,
    ImageEntry,
    LabelSpec,
    MaskShape,
    write_images_export,
)

LABELS = [
    LabelSpec("person_with_helmet",
              [AttributeSpec("score", input_type="text", values=[], default="")]),
    LabelSpec("person_without_helmet"),
]


def _mask() -> np.ndarray:
    mask = np.zeros((5, 4), bool)
    mask[0, 0] = True  # first pixel foreground: the RLE starts with a 0
    mask[2:5, 1:3] = True
    return mask


def _images() -> list[ImageEntry]:
    return [
        ImageEntry(0, "cam1/day 1/cam1 & cam2.jpg", 1920, 1080, [
            BoxShape("person_with_helmet", 10, 20.5, 30.123, 40.999, attributes={"score": "0.87"},
                     source="auto", occluded=True, z_order=2),
            MaskShape("person_without_helmet", _mask(), left=100, top=200),
        ]),
        ImageEntry(1, "cam2/empty.jpg", 1920, 1080, []),
    ]


def test_round_trip_structure(tmp_path):
    path = tmp_path / "part.xml"
    write_images_export(path, task_name="go2k & part1", labels=LABELS, images=_images())
    root = ElementTree.parse(path).getroot()
    assert root.tag == "annotations" and root.findtext("version") == "1.1"
    task = root.find("meta/task")
    assert task.findtext("name") == "go2k & part1"
    assert task.findtext("size") == "2"
    assert [label.findtext("name") for label in task.iterfind("labels/label")] == [
        "person_with_helmet", "person_without_helmet"]
    attribute = task.find("labels/label/attributes/attribute")
    assert (attribute.findtext("name"), attribute.findtext("input_type")) == ("score", "text")
    assert root.findtext("meta/dumped")

    images = root.findall("image")
    assert [(i.get("id"), i.get("name"), i.get("width"), i.get("height")) for i in images] == [
        ("0", "cam1/day 1/cam1 & cam2.jpg", "1920", "1080"),
        ("1", "cam2/empty.jpg", "1920", "1080"),
    ]
    assert list(images[1]) == []  # images without shapes are still listed

    box = images[0].find("box")
    assert dict(box.attrib) == {
        "label": "person_with_helmet", "source": "auto", "occluded": "1", "xtl": "10.00",
        "ytl": "20.50", "xbr": "30.12", "ybr": "41.00", "z_order": "2",
    }
    assert [(a.get("name"), a.text) for a in box.findall("attribute")] == [("score", "0.87")]

    mask = images[0].find("mask")
    assert (mask.get("left"), mask.get("top"), mask.get("width"), mask.get("height")) == (
        "100", "200", "4", "5")
    assert mask.get("rle").startswith("0, 1, ")
    assert np.array_equal(rle.decode(mask.get("rle"), 4, 5), _mask())


def test_layout_matches_cvats_own_export(tmp_path):
    path = tmp_path / "part.xml"
    write_images_export(path, task_name="t", labels=LABELS, images=_images())
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == '<?xml version="1.0" encoding="utf-8"?>'
    assert lines[1:3] == ["<annotations>", "  <version>1.1</version>"]
    assert '  <image id="1" name="cam2/empty.jpg" width="1920" height="1080">' in lines
    assert lines[-1] == "</annotations>"
    box_line = next(i for i, line in enumerate(lines) if line.startswith("    <box "))
    assert lines[box_line + 1].startswith('      <attribute name="score">')
    assert lines[box_line + 2] == "    </box>"
    mask_line = next(i for i, line in enumerate(lines) if line.startswith("    <mask "))
    assert lines[mask_line].endswith('z_order="0">') and lines[mask_line + 1] == "    </mask>"


def test_names_with_ampersands_and_quotes_are_escaped(tmp_path):
    path = tmp_path / "part.xml"
    name = 'site "A" & <B>/frame 1.jpg'
    write_images_export(path, task_name="t", labels=LABELS, images=[ImageEntry(0, name, 10, 10)])
    raw = path.read_bytes()
    assert b"&amp;" in raw and b"&lt;B&gt;" in raw and b" & " not in raw
    assert ElementTree.parse(path).getroot().find("image").get("name") == name


def test_output_is_deterministic(tmp_path):
    first, second = tmp_path / "a.xml", tmp_path / "b.xml"
    for path in (first, second):
        write_images_export(path, task_name="t", labels=LABELS, images=_images())
    assert first.read_bytes() == second.read_bytes()
    assert b"2026-02-15 00:00:00.000000+00:00" in first.read_bytes()


def test_failed_write_leaves_the_old_file_and_no_temp_files(tmp_path, monkeypatch):
    path = tmp_path / "part.xml"
    path.write_text("previous export")

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_images_export(path, task_name="t", labels=LABELS, images=_images())
    assert path.read_text() == "previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["part.xml"]

    monkeypatch.undo()
    write_images_export(path, task_name="t", labels=LABELS, images=_images())
    assert ElementTree.parse(path).getroot().tag == "annotations"
    assert [p.name for p in tmp_path.iterdir()] == ["part.xml"]


@pytest.mark.parametrize("shape, message", [
    (BoxShape("person", 0, 0, 1, 1), "not declared"),
    (BoxShape("person_without_helmet", 0, 0, 1, 1, attributes={"score": "1"}), "not declared"),
    (BoxShape("person_with_helmet", 5, 0, 1, 1), "reversed"),
    (MaskShape("person_with_helmet", np.ones((3, 3), bool), left=8, top=0), "outside"),
    (MaskShape("person_with_helmet", np.ones((0, 3), bool), left=0, top=0), "non-empty"),
])
def test_invalid_shapes_are_rejected_before_writing(tmp_path, shape, message):
    path = tmp_path / "part.xml"
    with pytest.raises(ValueError, match=message):
        write_images_export(path, task_name="t", labels=LABELS,
                            images=[ImageEntry(0, "a.jpg", 10, 10, [shape])])
    assert not path.exists()
