"""Write "CVAT for images 1.1" XML, laid out the way CVAT's own exporter lays it out.

Used to hand annotations to CVAT (pseudo-labels as pre-annotations for review) and by the
demo site to stand in for the user's exports. The element order, attribute order, two-space
indentation and number formats follow CVAT's ``XmlAnnotationWriter`` (cvat/apps/
dataset_manager/formats/cvat.py), which writes through ``xml.sax.saxutils.XMLGenerator``;
we use the same generator, so escaping of ``&``, ``<`` and quotes matches CVAT byte for byte.
Output is deterministic: no wall-clock time is written (``dumped`` is a parameter).
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from xml.sax.saxutils import XMLGenerator

import numpy as np

from hoban_pipelines.cvat import rle

CVAT_XML_VERSION = "1.1"
DEFAULT_DUMPED = "2026-02-15 00:00:00.000000+00:00"


@dataclass(frozen=True)
class AttributeSpec:
    """A label attribute declared in the task (CVAT rejects uploads using undeclared ones)."""

    name: str
    _: KW_ONLY
    input_type: str = "select"
    values: list[str]
    default: str
    mutable: bool = False


@dataclass(frozen=True)
class LabelSpec:
    name: str
    attributes: list[AttributeSpec] = field(default_factory=list)
    color: str = "#fa3253"


@dataclass(frozen=True, eq=False)
class _Shape:
    """What every CVAT shape carries besides its geometry (keyword-only, after the geometry)."""

    label: str
    _: KW_ONLY
    attributes: dict[str, str] = field(default_factory=dict)
    source: str = "manual"
    occluded: bool = False
    z_order: int = 0


@dataclass(frozen=True)
class BoxShape(_Shape):
    """A rectangle in pixel coordinates (CVAT allows edges past the image border)."""

    xtl: float
    ytl: float
    xbr: float
    ybr: float


@dataclass(frozen=True, eq=False)  # eq=False: ndarray fields have no truth value
class MaskShape(_Shape):
    """A bitmap mask: ``mask`` is the boolean crop whose top-left pixel sits at (left, top)."""

    mask: np.ndarray
    left: int
    top: int


@dataclass(frozen=True)
class ImageEntry:
    """One ``<image>``; ``name`` is the path CVAT knows the file by (may hold subfolders)."""

    id: int
    name: str
    width: int
    height: int
    shapes: list[BoxShape | MaskShape] = field(default_factory=list)


def write_images_export(
    path: str | Path,
    *,
    task_name: str,
    labels: Sequence[LabelSpec],
    images: Sequence[ImageEntry],
    task_id: int = 1,
    dumped: str = DEFAULT_DUMPED,
) -> None:
    """Write a CVAT-for-images 1.1 annotation file atomically.

    Images are written in the given order, each listed even when it has no shapes (current
    CVAT does the same). Raises ValueError for a shape whose label or attribute is not
    declared in ``labels``, a mask that is not a non-empty 2-D array, or a mask crop that
    reaches outside its image, because CVAT would refuse such an upload.
    """
    _validate(labels, images)
    document = _render(task_name=task_name, task_id=task_id, labels=labels, images=images,
                       dumped=dumped)
    _atomic_write_bytes(Path(path), document)


def _validate(labels: Sequence[LabelSpec], images: Sequence[ImageEntry]) -> None:
    declared = {label.name: {a.name for a in label.attributes} for label in labels}
    if len(declared) != len(labels):
        raise ValueError("label names must be unique")
    seen_ids: set[int] = set()
    for image in images:
        if image.id in seen_ids:
            raise ValueError(f"duplicate image id {image.id}")
        seen_ids.add(image.id)
        for shape in image.shapes:
            where = f"image {image.name!r}"
            if shape.label not in declared:
                raise ValueError(f"{where}: label {shape.label!r} is not declared")
            undeclared = set(shape.attributes) - declared[shape.label]
            if undeclared:
                raise ValueError(
                    f"{where}: attributes {sorted(undeclared)} are not declared for "
                    f"label {shape.label!r}"
                )
            if isinstance(shape, MaskShape):
                _validate_mask(shape, image, where)
            elif not (shape.xtl <= shape.xbr and shape.ytl <= shape.ybr):
                raise ValueError(f"{where}: box corners are reversed: {shape}")


def _validate_mask(shape: MaskShape, image: ImageEntry, where: str) -> None:
    if shape.mask.ndim != 2 or shape.mask.size == 0:
        raise ValueError(f"{where}: mask must be a non-empty 2-D array, got {shape.mask.shape}")
    height, width = shape.mask.shape
    if (shape.left < 0 or shape.top < 0 or shape.left + width > image.width
            or shape.top + height > image.height):
        raise ValueError(
            f"{where}: mask crop {width}x{height} at ({shape.left}, {shape.top}) lies "
            f"outside the {image.width}x{image.height} image"
        )


def _render(
    *,
    task_name: str,
    task_id: int,
    labels: Sequence[LabelSpec],
    images: Sequence[ImageEntry],
    dumped: str,
) -> bytes:
    buffer = io.BytesIO()
    writer = _IndentedXml(buffer)
    writer.start_document()
    writer.open("annotations")
    writer.text_element("version", CVAT_XML_VERSION)
    writer.open("meta")
    _write_task_meta(writer, task_name=task_name, task_id=task_id, labels=labels,
                     size=len(images), dumped=dumped)
    writer.text_element("dumped", dumped)
    writer.close("meta")
    for image in images:
        writer.open("image", {
            "id": str(image.id),
            "name": image.name,
            "width": str(image.width),
            "height": str(image.height),
        })
        for shape in image.shapes:
            _write_shape(writer, shape)
        writer.close("image")
    writer.close("annotations")
    writer.end_document()
    return buffer.getvalue()


def _write_task_meta(
    writer: _IndentedXml,
    *,
    task_name: str,
    task_id: int,
    labels: Sequence[LabelSpec],
    size: int,
    dumped: str,
) -> None:
    stop_frame = str(max(size - 1, 0))
    writer.open("task")
    for tag, value in (
        ("id", str(task_id)),
        ("name", task_name),
        ("size", str(size)),
        ("mode", "annotation"),
        ("overlap", "0"),
        ("bugtracker", ""),
        ("created", dumped),
        ("updated", dumped),
        ("subset", "default"),
        ("start_frame", "0"),
        ("stop_frame", stop_frame),
        ("frame_filter", ""),
    ):
        writer.text_element(tag, value)
    writer.open("segments")
    writer.open("segment")
    writer.text_element("id", str(task_id))
    writer.text_element("start", "0")
    writer.text_element("stop", stop_frame)
    writer.close("segment")
    writer.close("segments")
    writer.open("labels")
    for label in labels:
        writer.open("label")
        writer.text_element("name", label.name)
        writer.text_element("color", label.color)
        writer.text_element("type", "any")
        writer.open("attributes")
        for attribute in label.attributes:
            writer.open("attribute")
            writer.text_element("name", attribute.name)
            writer.text_element("mutable", str(attribute.mutable))
            writer.text_element("input_type", attribute.input_type)
            writer.text_element("default_value", attribute.default)
            # CVAT separates the allowed values with newlines.
            writer.text_element("values", "\n".join(attribute.values))
            writer.close("attribute")
        writer.close("attributes")
        writer.close("label")
    writer.close("labels")
    writer.close("task")


def _write_shape(writer: _IndentedXml, shape: BoxShape | MaskShape) -> None:
    attrs = {"label": shape.label, "source": shape.source, "occluded": str(int(shape.occluded))}
    if isinstance(shape, BoxShape):
        tag = "box"
        attrs.update({
            "xtl": f"{shape.xtl:.2f}",
            "ytl": f"{shape.ytl:.2f}",
            "xbr": f"{shape.xbr:.2f}",
            "ybr": f"{shape.ybr:.2f}",
        })
    else:
        tag = "mask"
        height, width = shape.mask.shape
        attrs.update({
            "rle": rle.to_string(rle.encode(shape.mask)),
            "left": str(int(shape.left)),
            "top": str(int(shape.top)),
            "width": str(width),
            "height": str(height),
        })
    attrs["z_order"] = str(shape.z_order)
    writer.open(tag, attrs)
    for name, value in shape.attributes.items():
        writer.text_element("attribute", value, {"name": name})
    writer.close(tag)


class _IndentedXml:
    """XMLGenerator with CVAT's layout: every start and end tag on its own indented line."""

    def __init__(self, stream: io.BytesIO) -> None:
        self._xml = XMLGenerator(stream, "utf-8")
        self._level = 0

    def start_document(self) -> None:
        self._xml.startDocument()

    def end_document(self) -> None:
        self._xml.ignorableWhitespace("\n")
        self._xml.endDocument()

    def _newline(self) -> None:
        self._xml.ignorableWhitespace("\n" + "  " * self._level)

    def open(self, tag: str, attrs: dict[str, str] | None = None) -> None:
        if self._level:  # the root follows the XML declaration's own newline
            self._newline()
        self._xml.startElement(tag, attrs or {})
        self._level += 1

    def close(self, tag: str) -> None:
        self._level -= 1
        self._newline()
        self._xml.endElement(tag)

    def text_element(self, tag: str, text: str, attrs: dict[str, str] | None = None) -> None:
        self._newline()
        self._xml.startElement(tag, attrs or {})
        self._xml.characters(text)
        self._xml.endElement(tag)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write beside ``path`` and rename over it, so readers never see half a file."""
    handle = tempfile.NamedTemporaryFile(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    )
    try:
        with handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
