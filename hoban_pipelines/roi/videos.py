"""The ``roi_videos`` input: one JSON spec per video (ROIs, label map, labelled segments), checked.

Spec fields: ``video_path``, ``roi`` (``[x, y, w, h]`` or a list of them), ``label_map``
(``{id: name}``), ``segments`` (``[{start_frame, end_frame, label}]``, ``end_frame``
inclusive, ``label`` an id of ``label_map``), optional ``group``.

The group rule: a video is ``simulation`` or ``real``. The JSON's ``group`` field decides
when present; otherwise the name of the folder holding the JSON does (``.../simulation/a.json``,
``.../real/b.json``). Anything else is a :class:`RoiSpecError` saying to add the field.

``video_path`` is tried as given, then relative to the JSON, then by file name beside the JSON
(the team's script did the last); :attr:`RoiVideo.path_found` says which worked, and the last
also warns, since the written path is stale. A video that
is missing or that OpenCV cannot open is reported in :attr:`RoiVideoSet.unopened`, not raised,
so the other videos go on; a spec that is wrong raises, since only its author can fix it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2

GROUPS = ("simulation", "real")
# how video_path was resolved, in the order tried
FOUND_AS_GIVEN = "as given"
FOUND_RELATIVE_TO_JSON = "relative to the JSON"
FOUND_BESIDE_JSON = "beside the JSON by file name"


class RoiSpecError(ValueError):
    """A video spec that cannot be used; the message names the JSON, the field and what to do."""

    def __init__(self, spec_path: Path, field_name: str, problem: str, fix: str):
        self.spec_path = Path(spec_path)
        self.field_name = field_name
        super().__init__(f"{spec_path}: field '{field_name}': {problem}. {fix}")


@dataclass(frozen=True)
class Segment:
    """Frames ``start_frame``..``end_frame`` (both inclusive) carry ``label`` (a label name)."""

    start_frame: int
    end_frame: int
    label: str


@dataclass(frozen=True)
class RoiVideo:
    """One checked spec with the video's facts read from the file."""

    name: str  # the JSON's stem: names crops and rows
    spec_path: Path
    video_path: Path
    path_found: str  # one of FOUND_*
    group: str  # simulation or real
    rois: tuple[tuple[int, int, int, int], ...]  # x, y, w, h in pixels
    label_map: dict[str, str]  # id -> name
    segments: tuple[Segment, ...]  # sorted, clipped to the video
    frame_count: int
    width: int
    height: int

    def label_at(self, frame: int) -> str | None:
        """The label of ``frame``, or None outside every segment."""
        for segment in self.segments:
            if segment.start_frame <= frame <= segment.end_frame:
                return segment.label
        return None


@dataclass(frozen=True)
class UnopenedVideo:
    spec_path: Path
    video_path: str  # as written in the JSON
    reason: str


@dataclass
class RoiVideoSet:
    """What a folder of specs yields: usable videos, the ones that could not be opened, warnings."""

    videos: list[RoiVideo] = field(default_factory=list)
    unopened: list[UnopenedVideo] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        """Every label name the usable videos' label maps give, sorted."""
        return sorted({name for video in self.videos for name in video.label_map.values()})


def read_roi_videos(folder: Path) -> RoiVideoSet:
    """Every ``*.json`` under ``folder`` (recursively), checked; see the module docstring."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder of video specs; give the folder holding one JSON per video")
    result = RoiVideoSet()
    seen: dict[str, Path] = {}
    for spec_path in sorted(folder.rglob("*.json")):
        if spec_path.stem in seen:
            raise RoiSpecError(
                spec_path, "file name", f"the same name as {seen[spec_path.stem]}",
                "Rename one: the JSON's name names the video's crops.",
            )
        seen[spec_path.stem] = spec_path
        read_roi_spec(spec_path, result)
    return result


def read_roi_spec(spec_path: Path, into: RoiVideoSet) -> RoiVideo | None:
    """Check one spec and add the video (or its reason for not opening) and warnings to ``into``."""
    spec_path = Path(spec_path)
    try:
        spec = json.loads(spec_path.read_text())
    except json.JSONDecodeError as error:
        raise RoiSpecError(spec_path, "(file)", f"not valid JSON ({error})", "Fix the JSON syntax.") from None
    if not isinstance(spec, dict):
        raise RoiSpecError(spec_path, "(file)", "not a JSON object", "Write one object with video_path, roi, label_map, segments.")
    for name in ("video_path", "roi", "label_map", "segments"):
        if name not in spec:
            raise RoiSpecError(spec_path, name, "missing", f"Add '{name}' (see hoban_pipelines/roi/videos.py for the format).")
    group = _group(spec_path, spec)
    label_map = _label_map(spec_path, spec["label_map"])
    rois = _rois(spec_path, spec["roi"])
    raw_segments = _segments(spec_path, spec["segments"], label_map)

    video_path, path_found = _resolve_video(spec_path, str(spec["video_path"]))
    if video_path is None:
        into.unopened.append(UnopenedVideo(spec_path, str(spec["video_path"]), path_found))
        into.warnings.append(f"{spec_path}: video {spec['video_path']!r} {path_found}; skipped")
        return None
    capture = cv2.VideoCapture(str(video_path))
    try:
        if not capture.isOpened():
            reason = "cannot be opened by OpenCV (unknown codec or damaged file)"
            into.unopened.append(UnopenedVideo(spec_path, str(spec["video_path"]), reason))
            into.warnings.append(f"{spec_path}: video {video_path} {reason}; skipped")
            return None
        frame_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        capture.release()
    if path_found == FOUND_BESIDE_JSON:  # the written path is stale: say so
        into.warnings.append(f"{spec_path}: video_path {spec['video_path']!r} found {path_found}: {video_path}")

    for roi in rois:
        x, y, w, h = roi
        if x < 0 or y < 0 or x + w > width or y + h > height:
            raise RoiSpecError(
                spec_path, "roi", f"ROI {list(roi)} lies outside the frame of {video_path} ({width}x{height})",
                "Give x, y, w, h inside the frame (x + w <= width, y + h <= height).",
            )
    segments = []
    for segment in raw_segments:
        if segment.start_frame >= frame_count:
            into.warnings.append(
                f"{spec_path}: segment {segment.start_frame}-{segment.end_frame} ({segment.label}) starts past the "
                f"video's end ({frame_count} frames); dropped"
            )
            continue
        if segment.end_frame >= frame_count:
            into.warnings.append(
                f"{spec_path}: segment {segment.start_frame}-{segment.end_frame} ({segment.label}) ends past the "
                f"video's end ({frame_count} frames); clipped to {frame_count - 1}"
            )
            segment = Segment(segment.start_frame, frame_count - 1, segment.label)
        segments.append(segment)
    video = RoiVideo(
        name=spec_path.stem, spec_path=spec_path, video_path=video_path, path_found=path_found, group=group,
        rois=tuple(rois), label_map=label_map, segments=tuple(segments),
        frame_count=frame_count, width=width, height=height,
    )
    into.videos.append(video)
    return video


def _group(spec_path: Path, spec: dict[str, Any]) -> str:
    group = spec.get("group", spec_path.parent.name)
    if group not in GROUPS:
        raise RoiSpecError(
            spec_path, "group", f"{group!r} is neither of {list(GROUPS)} (the field, else the JSON's folder name)",
            "Add \"group\": \"simulation\" or \"real\" to the JSON, or keep it in a folder named simulation or real.",
        )
    return group


def _label_map(spec_path: Path, raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict) or not raw:
        raise RoiSpecError(spec_path, "label_map", "not a non-empty object", 'Give {"0": "false", "1": "true", ...}.')
    return {str(key): str(value) for key, value in raw.items()}


def _rois(spec_path: Path, raw: Any) -> list[tuple[int, int, int, int]]:
    # one ROI [x, y, w, h] or a list of them
    items = [raw] if isinstance(raw, list) and raw and not isinstance(raw[0], list) else raw
    if not isinstance(items, list) or not items:
        raise RoiSpecError(spec_path, "roi", f"{raw!r} is not [x, y, w, h] or a list of them", "Give pixel boxes [x, y, w, h].")
    rois = []
    for item in items:
        if not (isinstance(item, list) and len(item) == 4 and all(isinstance(v, (int, float)) for v in item)):
            raise RoiSpecError(spec_path, "roi", f"{item!r} is not [x, y, w, h]", "Give four pixel numbers per ROI.")
        x, y, w, h = (int(round(v)) for v in item)
        if w <= 0 or h <= 0:
            raise RoiSpecError(spec_path, "roi", f"ROI {item} has no area", "Give a positive width and height.")
        rois.append((x, y, w, h))
    return rois


def _segments(spec_path: Path, raw: Any, label_map: dict[str, str]) -> list[Segment]:
    if not isinstance(raw, list) or not raw:
        raise RoiSpecError(spec_path, "segments", "not a non-empty list", "Give [{start_frame, end_frame, label}, ...].")
    segments = []
    for index, item in enumerate(raw):
        where = f"segments[{index}]"
        if not isinstance(item, dict) or not {"start_frame", "end_frame", "label"} <= item.keys():
            raise RoiSpecError(spec_path, where, f"{item!r} lacks start_frame, end_frame or label", "Give all three.")
        start, end, label_id = item["start_frame"], item["end_frame"], str(item["label"])
        if not (isinstance(start, int) and isinstance(end, int)) or start < 0 or end < start:
            raise RoiSpecError(spec_path, where, f"frames {start!r}-{end!r} are not 0 <= start <= end", "Fix the frame numbers.")
        if label_id not in label_map:
            raise RoiSpecError(
                spec_path, f"{where}.label", f"label id {label_id!r} is not in label_map {sorted(label_map)}",
                "Use an id of label_map or add it there.",
            )
        segments.append(Segment(start, end, label_map[label_id]))
    segments.sort(key=lambda s: (s.start_frame, s.end_frame))
    for before, after in zip(segments, segments[1:]):
        if after.start_frame <= before.end_frame and after.label != before.label:
            raise RoiSpecError(
                spec_path, "segments",
                f"{before.start_frame}-{before.end_frame} ({before.label}) overlaps {after.start_frame}-{after.end_frame} ({after.label})",
                "A frame carries one label: make the segments disjoint.",
            )
    return segments


def _resolve_video(spec_path: Path, written: str) -> tuple[Path | None, str]:
    """(path, how it was found), or (None, why not)."""
    given = Path(written)
    if given.is_file():
        return given, FOUND_AS_GIVEN
    relative = spec_path.parent / given
    if not given.is_absolute() and relative.is_file():
        return relative, FOUND_RELATIVE_TO_JSON
    beside = spec_path.parent / given.name
    if beside.is_file():
        return beside, FOUND_BESIDE_JSON
    return None, f"not found (tried as given, relative to the JSON and {beside})"
