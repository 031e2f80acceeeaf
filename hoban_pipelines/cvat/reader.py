"""Streaming reader for CVAT XML exports: "CVAT for images 1.1" and "CVAT for video 1.1".

Input is an ``annotations.xml`` or the CVAT export ``.zip`` that holds it (with its images
under ``images/`` when exported with images). Every box-like shape becomes an axis-aligned
pixel box clipped to its image: ``box`` and ``ellipse`` (rotation included), ``polygon``,
and ``mask`` (from the decoded pixels: CVAT's crop box is not always tight). ``polyline``,
``points``, ``tag``, ``cuboid`` and ``skeleton`` are counted and skipped. Images without
shapes are kept: they are the negatives of a detection dataset. A video export has no
``<image>`` elements; its frames become images named ``frame_000123``. Task, job and project
exports are all read: their ``<meta>`` differs (see ``_read_meta``), and a project export
repeats image names across subsets, so an image is told apart by (task, subset, name).

Hand-written on purpose: datumaro is a heavy dependency whose CVAT extractor builds the
whole dataset in memory before handing out one item, and CVAT's own reader lives inside
its server. Exports come from outside, so the XML goes through defusedxml with DTDs
refused (no entity bombs, no external files), and every element is cleared once read:
memory follows the shapes of one image, not the size of the file.
"""

from __future__ import annotations

import math
import re
import zipfile
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO
from xml.etree.ElementTree import Element, TreeBuilder
from xml.parsers.expat import ErrorString

import numpy as np
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser, ParseError, iterparse

from hoban_pipelines.cvat import rle

# Every annotation element CVAT writes inside <image> or <track>, in summary order.
SHAPE_TAGS = (
    "box", "polygon", "polyline", "points", "mask", "ellipse", "cuboid", "skeleton", "tag"
)
# The shapes that have an area and so give a detection box.
BOX_SHAPE_TAGS = frozenset({"box", "polygon", "mask", "ellipse"})
ANNOTATIONS_MEMBER = "annotations.xml"
IMAGES_PREFIX = "images/"

_REEXPORT = "export the task again from CVAT"
# A <track> start tag in raw bytes; the XML spec allows whitespace, '>' or '/' after the name.
_TRACK_START_TAG = re.compile(rb"<track[\s>/]")
_FRAME_STEP = re.compile(r"step\s*=\s*(\d+)")


class CvatFormatError(ValueError):
    """An input that is not a readable CVAT export; the message says where, what and what to do.

    ``file`` is the path the caller gave (the .zip for zipped exports), ``line`` the line of
    the offending element when the parser knows it, ``element`` the element as written in
    the file (``"<mask>"``) or the zip member (``"zip member '../x.jpg'"``).
    """

    def __init__(
        self,
        problem: str,
        *,
        fix: str,
        file: str | Path,
        member: str | None = None,
        line: int | None = None,
        element: str | None = None,
    ) -> None:
        self.file = Path(file)
        self.line = line
        self.element = element
        where = str(file) + (f" ({member})" if member else "")
        if line is not None:
            where += f", line {line}"
        if element:
            where += f", {element}"
        super().__init__(f"{where}: {problem}. {fix[:1].upper()}{fix[1:]}.")


# a task's name -> its frames: frame number -> (image name, width, height)
FrameNames = Callable[[str], Mapping[int, tuple[str, int, int]]]


@dataclass(frozen=True)
class CvatBox:
    """One detection box in pixels (x1, y1, x2, y2), already clipped to its image."""

    label: str
    xyxy: tuple[float, float, float, float]
    shape: str  # the CVAT shape it came from: 'box' | 'polygon' | 'mask' | 'ellipse'
    attributes: dict = field(hash=False)  # CVAT attribute name -> value as written
    occluded: bool
    source: str  # CVAT's 'manual' / 'auto' / ..., '' when the export does not say
    z_order: int
    track_id: int | None


@dataclass
class CvatImage:
    """One image (or video frame) with its boxes; no boxes means a negative image."""

    key: tuple[str, str]  # (task id, else subset, else '', name); see identity for uniqueness
    name: str  # as in CVAT, may hold subfolders; 'frame_000123' for video frames
    frame: int | None  # CVAT frame number (the <image> id)
    width: int
    height: int
    boxes: list[CvatBox] = field(default_factory=list)
    # The subset a project export gives the image ('Train', 'Test', ...); '' in task and job
    # exports. A project export with images writes the file as images/<subset>/<name>.
    subset: str = ""

    @property
    def identity(self) -> tuple[str, str, str]:
        """(task, subset, name): unique within an export, which key alone is not for projects."""
        return (self.key[0], self.subset, self.name)


@dataclass
class CvatExport:
    """Everything read from one export."""

    file: Path
    kind: str  # 'images' | 'video'
    labels: dict[str, dict]  # declared label -> {attribute name: spec}
    images: list[CvatImage]
    element_counts: dict[str, int]  # raw counts: image, track and the SHAPE_TAGS
    clipped: int  # boxes kept after clipping changed them
    dropped_empty: int  # boxes with no area left after clipping, and empty masks
    skipped_empty_label: int  # box-like shapes whose label is empty
    zip_images: list[str]  # image members of a zip, relative to images/


def read_export(path: str | Path, frame_names: FrameNames | None = None) -> CvatExport:
    """Read a CVAT XML export (plain or zipped) into memory; raises CvatFormatError.

    ``frame_names`` serves a "CVAT for video" export of an image task, which names no frame and
    gives no size: called with the task's name from ``<meta>``, it returns frame number ->
    (image name, width, height) of that task (the caller knows its tasks' frames)."""
    reader = _ExportReader(Path(path), frame_names)
    images = list(reader.images())
    return CvatExport(
        file=reader.path,
        kind=reader.kind,
        labels=reader.labels,
        images=images,
        element_counts=dict(reader.element_counts),
        clipped=reader.clipped,
        dropped_empty=reader.dropped_empty,
        skipped_empty_label=reader.skipped_empty_label,
        zip_images=reader.zip_images,
    )


def iter_images(path: str | Path) -> Iterator[CvatImage]:
    """Yield the images of an export one by one, each as soon as its element is read."""
    return _ExportReader(Path(path)).images()


def summarize(export: CvatExport, with_boxes: bool = False) -> dict:
    """A JSON-serialisable summary: raw element counts and boxes per label (and the boxes)."""
    boxes_by_label = Counter(box.label for image in export.images for box in image.boxes)
    summary = {
        "file": str(export.file),
        "images": export.element_counts["image"],
        "tracks": export.element_counts["track"],
        "shapes": {tag: export.element_counts[tag] for tag in SHAPE_TAGS},
        "boxes_by_label": dict(sorted(boxes_by_label.items())),
    }
    if with_boxes:
        summary["boxes"] = [
            {
                "image": image.frame if export.kind == "video" else image.name,
                "label": box.label,
                "xyxy": list(box.xyxy),
            }
            for image in export.images
            for box in image.boxes
        ]
    return summary


class _LineRecordingTreeBuilder(TreeBuilder):
    """A TreeBuilder that notes the line of each start tag, in document order.

    ElementTree keeps no line numbers; expat knows the current one only while it calls
    back, so it is read here and handed to the event loop (one entry per "start" event).
    """

    def __init__(self) -> None:
        super().__init__()
        self.start_lines: deque[int] = deque()
        self.expat = None  # set once the parser that owns the expat object exists

    def start(self, tag, attrs):
        self.start_lines.append(self.expat.CurrentLineNumber)
        return super().start(tag, attrs)


@dataclass(frozen=True)
class _Source:
    """Where the annotations XML is read from: a plain file or a zip member."""

    open: Callable[[], IO[bytes]]
    member: str | None
    zip_images: list[str]


@dataclass(frozen=True)
class _FrameSource:
    """What <meta> says about one task's frames (the task or job of a plain export)."""

    frames: range | None
    size: tuple[int, int] | None  # (width, height) from <original_size>
    subset: str = ""  # the task's <subset>, kept for project exports only
    span: int = 0  # frame numbers the task takes up in a project subset (start + step * size)


@dataclass(frozen=True)
class _Track:
    track_id: int
    label: str
    group: str
    subset: str
    source: str


class _ExportReader:
    """One pass over one export; the counters are complete once images() is exhausted."""

    def __init__(self, path: Path, frame_names: FrameNames | None = None) -> None:
        self.path = path
        self.frame_names = frame_names
        self.task_name = ""  # <meta><task><name> of a task export
        self.kind = ""
        self.labels: dict[str, dict] = {}
        self.element_counts = dict.fromkeys(("image", "track", *SHAPE_TAGS), 0)
        self.clipped = 0
        self.dropped_empty = 0
        self.skipped_empty_label = 0
        self.zip_images: list[str] = []
        self._member: str | None = None
        self._frame_sources: dict[str, _FrameSource] = {}  # task group -> frames and size
        # Unclipped track boxes by (task group, subset, frame); an empty list marks a frame
        # where a track is visible with no box-like shape.
        self._track_boxes: dict[tuple[str, str, int], list[CvatBox]] = {}
        self._image_lines: dict[tuple[str, str, str], int] = {}  # identity -> line first seen

    def images(self) -> Iterator[CvatImage]:
        with _open_source(self.path) as source:
            self._member = source.member
            self.zip_images = source.zip_images
            # Track boxes may belong to images read earlier; only then must images wait.
            hold_images = _mentions_track(source.open)
            held = []
            with source.open() as stream:
                for image in self._read_images(stream):
                    if hold_images:
                        held.append(image)
                    else:
                        yield self._clip(image)
        if not self.element_counts["image"] and not self.element_counts["track"]:
            raise self._error(
                "the export holds no <image> and no <track>: nothing to import (older CVAT "
                "versions leave images without annotations out)",
                fix="check that the task has frames, then export it from a current CVAT as "
                "'CVAT for images 1.1'",
            )
        if self.element_counts["image"]:
            self.kind = "images"
            self._attach_track_boxes(held)
            yield from (self._clip(image) for image in held)
        else:
            self.kind = "video"
            yield from self._video_frames()

    def _read_images(self, stream: IO[bytes]) -> Iterator[CvatImage]:
        """Yield each <image> with unclipped boxes; collect track boxes on the way."""
        open_elements: list[tuple[Element, int]] = []
        root = image = track = None
        for event, element, line in self._events(stream):
            if event == "start":
                depth = len(open_elements)
                open_elements.append((element, line))
                if depth == 0:
                    root = self._check_root(element, line)
                elif depth == 1:
                    if element.tag == "image":
                        image = self._open_image(element, line)
                    elif element.tag == "track":
                        track = self._open_track(element, line)
                    elif element.tag not in ("version", "meta"):
                        raise self._unsupported(element, line, "<annotations>")
                elif depth == 2 and (image is not None or track is not None):
                    if element.tag not in SHAPE_TAGS:
                        raise self._unsupported(element, line, f"<{open_elements[1][0].tag}>")
                    self.element_counts[element.tag] += 1
                continue

            element, line = open_elements.pop()
            depth = len(open_elements)
            if depth == 2 and (image is not None or track is not None):
                # A shape is complete (with its <attribute> children) only at its end.
                if image is not None:
                    self._read_image_shape(element, line, image)
                else:
                    self._read_track_entry(element, line, track)
                element.clear()
            elif depth == 1:
                if element.tag == "meta":
                    self._read_meta(element, line)
                elif image is not None:
                    yield image
                image = track = None
                element.clear()
                # The root would otherwise keep an empty shell per image.
                root.clear()

    def _events(self, stream: IO[bytes]) -> Iterator[tuple[str, Element, int]]:
        """iterparse events with each element's start line; XML errors become CvatFormatError."""
        builder = _LineRecordingTreeBuilder()
        parser = DefusedXMLParser(target=builder, forbid_dtd=True)
        builder.expat = parser.parser
        try:
            for event, element in iterparse(stream, events=("start", "end"), parser=parser):
                yield event, element, builder.start_lines.popleft() if event == "start" else 0
        except ParseError as exc:
            line, column = exc.position
            raise self._error(
                f"malformed XML at column {column}: {ErrorString(exc.code)}",
                fix=f"the file is truncated, edited by hand or not XML; {_REEXPORT}",
                line=line,
            ) from None
        except DefusedXmlException as exc:
            raise self._error(
                f"the file declares a DTD or entities ({type(exc).__name__}); refused because "
                "entities can expand into an XML bomb or read other files, and CVAT never "
                "writes them",
                fix=f"do not import this file; {_REEXPORT}",
                line=builder.expat.CurrentLineNumber,
                element="<!DOCTYPE>",
            ) from None
        except zipfile.BadZipFile as exc:
            raise self._error(
                f"the zip member cannot be read: {exc}", fix=f"the zip is damaged; {_REEXPORT}"
            ) from None

    def _check_root(self, element: Element, line: int) -> Element:
        if element.tag != "annotations":
            raise self._error(
                f"not a CVAT XML export: the root element is <{element.tag}>, not <annotations>",
                fix="give an annotations.xml exported as 'CVAT for images 1.1' or "
                "'CVAT for video 1.1'",
                line=line,
                element=f"<{element.tag}>",
            )
        return element

    def _read_meta(self, meta: Element, line: int) -> None:
        """Declared labels and, for video, each task's frames and size, from any meta layout."""
        # One layout per export kind: meta/task, meta/job + meta/original_size, meta/project/tasks.
        for labels in meta.iter("labels"):
            for label in labels.findall("label"):
                name = label.findtext("name") or ""
                if name:
                    self.labels[name] = {
                        attribute.findtext("name") or "": _attribute_spec(attribute)
                        for attribute in label.findall("attributes/attribute")
                    }
        beside = self._original_size(meta, line)  # where a job export writes it
        self.task_name = (meta.findtext("task/name") or "").strip()
        for container in (meta.find("task"), meta.find("job")):
            if container is not None:
                source = self._frame_source(container, line)
                if source.size is None:
                    source = replace(source, size=beside)
                self._frame_sources[""] = source
        if beside is not None and meta.find("project") is None:
            self._frame_sources.setdefault("", _FrameSource(frames=None, size=beside))
        # Project frame numbers run on across the tasks of a subset (CVAT's _task_frame_offsets).
        subset_ends: dict[str, int] = {}
        for task in meta.findall("project/tasks/task"):
            subset = (task.findtext("subset") or "").strip()
            offset = subset_ends.get(subset, 0)
            source = self._frame_source(task, line, offset=offset, subset=subset)
            subset_ends[subset] = offset + source.span
            self._frame_sources[(task.findtext("id") or "").strip()] = source

    def _meta_int(self, container: Element, path: str, line: int) -> int | None:
        text = (container.findtext(path) or "").strip()
        if not text:
            return None
        if not text.isdigit():
            raise self._error(
                f"<{path}> is {text!r}, not a whole number",
                fix=f"fix the value in <meta> or {_REEXPORT}",
                line=line,
                element="<meta>",
            )
        return int(text)

    def _original_size(self, container: Element, line: int) -> tuple[int, int] | None:
        """(width, height) of the container's own <original_size> child, if it has one."""
        width = self._meta_int(container, "original_size/width", line)
        height = self._meta_int(container, "original_size/height", line)
        return (width, height) if width and height else None

    def _frame_source(
        self, container: Element, line: int, *, offset: int | None = None, subset: str = ""
    ) -> _FrameSource:
        """Frames and size of a <task> or <job>; offset is given for the tasks of a project."""
        start = self._meta_int(container, "start_frame", line)
        stop = self._meta_int(container, "stop_frame", line)
        frame_filter = container.findtext("frame_filter") or ""
        step_match = _FRAME_STEP.search(frame_filter)
        step = int(step_match.group(1)) if step_match else 1
        if step == 0:
            raise self._error(
                f"<frame_filter> is {frame_filter!r}; a step of 0 lists no frames",
                fix=f"fix the frame filter in <meta> or {_REEXPORT}",
                line=line,
                element="<meta>",
            )
        size = self._original_size(container, line)
        if start is None or stop is None:
            return _FrameSource(frames=None, size=size, subset=subset)
        frames = range(start, stop + 1, step)
        if offset is None:  # a task or job export: the numbers in <meta> are the frames
            return _FrameSource(frames=frames, size=size)
        count = self._meta_int(container, "size", line)
        count = len(frames) if count is None else count
        return _FrameSource(
            frames=range(offset + start, offset + start + step * count, step),
            size=size,
            subset=subset,
            span=start + step * count,
        )

    def _open_image(self, element: Element, line: int) -> CvatImage:
        self.element_counts["image"] += 1
        name = element.get("name")
        if not name:
            raise self._error(
                "the image has no name", fix=_REEXPORT, line=line, element="<image>"
            )
        width = self._integer(element, "width", line)
        height = self._integer(element, "height", line)
        if width <= 0 or height <= 0:
            raise self._error(
                f"image {name!r} has size {width}x{height}; boxes cannot be clipped to it",
                fix=f"fix width/height or {_REEXPORT}",
                line=line,
                element="<image>",
            )
        frame = self._integer(element, "id", line) if "id" in element.attrib else None
        task, subset = element.get("task_id") or "", element.get("subset") or ""
        image = CvatImage(
            key=(task or subset, name),
            name=name,
            frame=frame,
            width=width,
            height=height,
            subset=subset,
        )
        first = self._image_lines.setdefault(image.identity, line)
        if first != line:
            given = (f"task_id {task!r}" if task else "", f"subset {subset!r}" if subset else "")
            where = ", ".join(filter(None, given)) or "no task_id or subset"
            raise self._error(
                f"image {name!r} appears twice in the same task/subset ({where}; first at line "
                f"{first}), so its boxes are ambiguous",
                fix="remove the duplicate <image> or export each task separately",
                line=line,
                element="<image>",
            )
        return image

    def _open_track(self, element: Element, line: int) -> _Track:
        self.element_counts["track"] += 1
        label = self._label(element, line)
        return _Track(
            track_id=self._integer(element, "id", line),
            label=label,
            group=element.get("task_id") or element.get("subset") or "",
            subset=element.get("subset") or "",
            source=element.get("source", ""),
        )

    def _read_image_shape(self, element: Element, line: int, image: CvatImage) -> None:
        label = self._label(element, line)
        if element.tag not in BOX_SHAPE_TAGS:
            return
        if not label:
            self.skipped_empty_label += 1
            return
        xyxy = self._extent(element, line)
        if xyxy is not None:
            source = element.get("source", "")
            image.boxes.append(self._box(element, line, label, xyxy, source, None))

    def _read_track_entry(self, element: Element, line: int, track: _Track) -> None:
        frame = self._integer(element, "frame", line)  # absolute already: start + i * step
        if element.get("outside") == "1":
            return
        boxes = self._track_boxes.setdefault((track.group, track.subset, frame), [])
        if element.tag not in BOX_SHAPE_TAGS:
            return
        if not track.label:
            self.skipped_empty_label += 1
            return
        xyxy = self._extent(element, line)
        if xyxy is not None:
            boxes.append(self._box(element, line, track.label, xyxy, track.source, track.track_id))

    def _box(
        self,
        element: Element,
        line: int,
        label: str,
        xyxy: tuple[float, float, float, float],
        source: str,
        track_id: int | None,
    ) -> CvatBox:
        return CvatBox(
            label=label,
            xyxy=xyxy,
            shape=element.tag,
            attributes={
                attribute.get("name", ""): attribute.text or ""
                for attribute in element.findall("attribute")
            },
            occluded=element.get("occluded") == "1",
            source=source,
            z_order=self._integer(element, "z_order", line) if "z_order" in element.attrib else 0,
            track_id=track_id,
        )

    def _label(self, element: Element, line: int) -> str:
        """The element's label, which must be empty or declared in <meta>."""
        label = element.get("label")
        if label is None:
            raise self._error(
                "the element has no label attribute",
                fix=_REEXPORT,
                line=line,
                element=f"<{element.tag}>",
            )
        if label and label not in self.labels:
            declared = ", ".join(repr(name) for name in self.labels) or "none"
            raise self._error(
                f"label {label!r} is not declared in <meta> (declared labels: {declared})",
                fix="add the label to the CVAT task or project, or correct the shape's label, "
                "then export again",
                line=line,
                element=f"<{element.tag}>",
            )
        return label

    def _extent(self, element: Element, line: int) -> tuple[float, float, float, float] | None:
        """Axis-aligned pixel extent of a box-like shape; None for an empty mask."""
        if element.tag == "box":
            x1, y1, x2, y2 = self._numbers(element, ("xtl", "ytl", "xbr", "ybr"), line)
            rotation = self._rotation(element, line)
            if not rotation:  # the common case, kept exact (no round trip through the centre)
                return (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))
            half_w, half_h = abs(x2 - x1) / 2, abs(y2 - y1) / 2
            angle = math.radians(rotation)
            cos, sin = abs(math.cos(angle)), abs(math.sin(angle))
            centre_x, centre_y = (x1 + x2) / 2, (y1 + y2) / 2
            half_x, half_y = half_w * cos + half_h * sin, half_w * sin + half_h * cos
            return _around(centre_x, centre_y, half_x, half_y)
        if element.tag == "ellipse":
            cx, cy, rx, ry = self._numbers(element, ("cx", "cy", "rx", "ry"), line)
            angle = math.radians(self._rotation(element, line))
            cos, sin = math.cos(angle), math.sin(angle)
            return _around(cx, cy, math.hypot(rx * cos, ry * sin), math.hypot(rx * sin, ry * cos))
        if element.tag == "polygon":
            points = self._points(element, line)
            if len(points) < 3:
                raise self._error(
                    f"a polygon needs at least 3 points, this one has {len(points)}",
                    fix="delete or redraw the polygon in CVAT, then export again",
                    line=line,
                    element="<polygon>",
                )
            xs, ys = zip(*points)
            return (min(xs), min(ys), max(xs), max(ys))
        return self._mask_extent(element, line)

    def _mask_extent(self, element: Element, line: int) -> tuple[float, float, float, float] | None:
        left, top, width, height = (
            self._integer(element, name, line) for name in ("left", "top", "width", "height")
        )
        try:
            mask = rle.decode(element.get("rle", ""), width, height)
        except rle.RleError as exc:
            raise self._error(
                f"the mask's rle does not describe a {width}x{height} crop: {exc}",
                fix=f"the mask is corrupt; redraw it in CVAT or {_REEXPORT}",
                line=line,
                element="<mask>",
            ) from None
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size == 0:
            self.dropped_empty += 1
            return None
        columns = np.flatnonzero(mask.any(axis=0))
        return (
            float(left + columns[0]),
            float(top + rows[0]),
            float(left + columns[-1] + 1),
            float(top + rows[-1] + 1),
        )

    def _clip(self, image: CvatImage) -> CvatImage:
        """Clip boxes to the image; drop those left without area."""
        kept = []
        for box in image.boxes:
            x1, y1, x2, y2 = box.xyxy
            clipped = (
                min(max(x1, 0.0), float(image.width)),
                min(max(y1, 0.0), float(image.height)),
                min(max(x2, 0.0), float(image.width)),
                min(max(y2, 0.0), float(image.height)),
            )
            if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
                self.dropped_empty += 1
                continue
            if clipped != box.xyxy:
                self.clipped += 1
                box = replace(box, xyxy=clipped)
            kept.append(box)
        image.boxes = kept
        return image

    def _attach_track_boxes(self, images: list[CvatImage]) -> None:
        """Give track boxes of an image export to the <image> whose id is their frame."""
        by_frame: dict[tuple[str, int | None], list[CvatImage]] = {}
        for image in images:
            by_frame.setdefault((image.key[0], image.frame), []).append(image)
        for (group, subset, frame), boxes in self._track_boxes.items():
            if not boxes:
                continue
            candidates = by_frame.get((group, frame), [])
            # A project's subsets number their frames separately, so the subset decides.
            matching = [image for image in candidates if image.subset == subset]
            if not matching and len(candidates) == 1:
                matching = candidates
            if len(matching) != 1:
                in_subset = f" in subset {subset!r}" if subset else ""
                problem = (
                    f"but no <image id=\"{frame}\">{in_subset} exists"
                    if not matching
                    else f"and {len(matching)} <image id=\"{frame}\"> elements{in_subset} "
                    "could hold it"
                )
                raise self._error(
                    f"track {boxes[0].track_id} has a shape on frame {frame}, {problem}",
                    fix=f"the export is inconsistent; {_REEXPORT}",
                    element="<track>",
                )
            matching[0].boxes.extend(boxes)

    def _video_frames(self) -> Iterator[CvatImage]:
        """One image per frame of each task in <meta>, plus any frame a track is visible on."""
        boxes: dict[tuple[str, int], list[CvatBox]] = {}
        subsets: dict[tuple[str, int], str] = {}  # every frame -> its tracks' subset, if any
        for (group, subset, frame), found in self._track_boxes.items():
            boxes.setdefault((group, frame), []).extend(found)
            subsets.setdefault((group, frame), subset)
        for group, source in self._frame_sources.items():
            for frame in source.frames or ():
                subsets.setdefault((group, frame), "")
        named = self.frame_names(self.task_name) if self.frame_names else {}
        for group, frame in sorted(subsets):
            source = self._frame_sources.get(group)
            if group == "" and frame in named:  # a frame of an image task, named by the caller
                name, width, height = named[frame]
                yield self._clip(CvatImage(key=(group, name), name=name, frame=frame, width=width, height=height,
                                           boxes=boxes.get((group, frame), []), subset=subsets[(group, frame)]))
                continue
            if source is None or source.size is None:
                task = f"task {group}" if group else "the task"
                raise self._error(
                    f"frame {frame} has no size: <meta> gives no <original_size> for {task} "
                    "(looked in <meta>, <meta><task>, <meta><job> and "
                    "<meta><project><tasks><task>), so boxes cannot be clipped",
                    fix="image tasks exported as 'CVAT for video' carry no sizes; "
                    "export the task as 'CVAT for images 1.1' instead",
                    element="<original_size>",
                )
            width, height = source.size
            name = f"frame_{frame:06d}"
            yield self._clip(
                CvatImage(
                    key=(group, name),
                    name=name,
                    frame=frame,
                    width=width,
                    height=height,
                    boxes=boxes.get((group, frame), []),
                    subset=subsets[(group, frame)] or source.subset,
                )
            )

    def _numbers(self, element: Element, names: tuple[str, ...], line: int) -> list[float]:
        return [self._number(element, name, line) for name in names]

    def _number(self, element: Element, name: str, line: int) -> float:
        text = self._attribute(element, name, line)
        value = _finite_float(text)
        if value is None:
            raise self._error(
                f"{name}={text!r} is not a number",
                fix=f"fix the coordinate or {_REEXPORT}",
                line=line,
                element=f"<{element.tag}>",
            )
        return value

    def _integer(self, element: Element, name: str, line: int) -> int:
        text = self._attribute(element, name, line)
        try:
            return int(text)
        except ValueError:
            raise self._error(
                f"{name}={text!r} is not a whole number",
                fix=f"fix the value or {_REEXPORT}",
                line=line,
                element=f"<{element.tag}>",
            ) from None

    def _rotation(self, element: Element, line: int) -> float:
        return self._number(element, "rotation", line) if "rotation" in element.attrib else 0.0

    def _points(self, element: Element, line: int) -> list[tuple[float, float]]:
        """Parse CVAT's ``"x0,y0;x1,y1;..."``."""
        text = self._attribute(element, "points", line)
        points = []
        for pair in filter(None, (part.strip() for part in text.split(";"))):
            coordinates = pair.split(",")
            if len(coordinates) != 2:
                raise self._error(
                    f"point {pair!r} is not 'x,y'",
                    fix=f"fix the points attribute or {_REEXPORT}",
                    line=line,
                    element=f"<{element.tag}>",
                )
            x, y = (_finite_float(coordinate) for coordinate in coordinates)
            if x is None or y is None:
                raise self._error(
                    f"point {pair!r} holds a coordinate that is not a number",
                    fix=f"fix the points attribute or {_REEXPORT}",
                    line=line,
                    element=f"<{element.tag}>",
                )
            points.append((x, y))
        return points

    def _attribute(self, element: Element, name: str, line: int) -> str:
        text = element.get(name)
        if text is None:
            raise self._error(
                f"attribute {name!r} is missing",
                fix=_REEXPORT,
                line=line,
                element=f"<{element.tag}>",
            )
        return text

    def _unsupported(self, element: Element, line: int, parent: str) -> CvatFormatError:
        return self._error(
            f"<{element.tag}> is not a CVAT 1.1 element inside {parent}",
            fix="export as 'CVAT for images 1.1' or 'CVAT for video 1.1'; if CVAT added a new "
            "shape type, this reader needs to learn it",
            line=line,
            element=f"<{element.tag}>",
        )

    def _error(
        self, problem: str, *, fix: str, line: int | None = None, element: str | None = None
    ) -> CvatFormatError:
        return CvatFormatError(
            problem, fix=fix, file=self.path, member=self._member, line=line, element=element
        )


def _attribute_spec(attribute: Element) -> dict:
    """A declared attribute as {input_type, mutable, default_value, values}."""
    return {
        "input_type": attribute.findtext("input_type") or "",
        "mutable": (attribute.findtext("mutable") or "").strip() == "True",
        "default_value": attribute.findtext("default_value") or "",
        # CVAT writes one value per line.
        "values": [value for value in (attribute.findtext("values") or "").split("\n") if value],
    }


def _around(
    cx: float, cy: float, half_w: float, half_h: float
) -> tuple[float, float, float, float]:
    return (cx - half_w, cy - half_h, cx + half_w, cy + half_h)


def _finite_float(text: str) -> float | None:
    """The number in ``text``; None when it is not one (NaN and infinities included)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _mentions_track(open_stream: Callable[[], IO[bytes]]) -> bool:
    """Whether the raw bytes hold a <track> start tag (a fast pre-pass, no XML parsing)."""
    tail = b""
    with open_stream() as stream:
        while chunk := stream.read(1 << 16):
            if _TRACK_START_TAG.search(tail + chunk):
                return True
            tail = chunk[-8:]
    return False


@contextmanager
def _open_source(path: Path) -> Iterator[_Source]:
    if not (zipfile.is_zipfile(path) or _looks_like_zip(path)):
        yield _Source(open=lambda: path.open("rb"), member=None, zip_images=[])
        return
    with _open_zip(path) as archive:
        names = archive.namelist()
        if ANNOTATIONS_MEMBER not in names:
            xml_members = [name for name in names if name.lower().endswith(".xml")]
            raise CvatFormatError(
                f"the zip has no {ANNOTATIONS_MEMBER} at its top level "
                f"(XML members: {', '.join(xml_members) or 'none'})",
                fix="export with the 'CVAT for images 1.1' or 'CVAT for video 1.1' format, "
                "or give the XML file itself",
                file=path,
            )
        yield _Source(
            open=lambda: archive.open(ANNOTATIONS_MEMBER),
            member=ANNOTATIONS_MEMBER,
            zip_images=_image_members(names),
        )


def _looks_like_zip(path: Path) -> bool:
    """A damaged zip (a cut-off download) is still a zip to the user: say so, not "malformed XML"."""
    with path.open("rb") as handle:
        return path.suffix.lower() == ".zip" or handle.read(4) == b"PK\x03\x04"


@contextmanager
def _open_zip(path: Path) -> Iterator[zipfile.ZipFile]:
    """Open a zip whose member paths all stay inside its folder."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise CvatFormatError(
            f"not a readable zip: {exc}", fix=f"the download is damaged; {_REEXPORT}", file=path
        ) from None
    with archive:
        for name in archive.namelist():
            parts = name.replace("\\", "/").split("/")
            if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name) or ".." in parts:
                raise CvatFormatError(
                    "the member's path points outside the export folder (absolute, or with '..')",
                    fix="refusing to unpack it; use the zip as CVAT exported it",
                    file=path,
                    element=f"zip member {name!r}",
                )
        yield archive


def _image_members(names: list[str]) -> list[str]:
    """Member files under images/, relative to it (so they match <image name>)."""
    return [
        name[len(IMAGES_PREFIX) :]
        for name in names
        if name.startswith(IMAGES_PREFIX) and not name.endswith("/")
    ]
