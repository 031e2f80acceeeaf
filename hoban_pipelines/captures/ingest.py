"""One day of a site's continuous captures, per camera, as a manifest: every frame's file, camera,
time, size and sha256.

A frame's time comes from its file name (the recorders write ``cam1_20260211_070546.jpg``; the
patterns are a setting), else from its EXIF DateTimeOriginal, else from the file's mtime, and
the manifest says which for every frame (a warning counts the fallbacks: an mtime is when the
file was copied, not when it was taken). Names and EXIF carry the site's local time, with no
zone: they are read in the configured time zone (the sites are in Korea). Nothing here writes
to or deletes from the capture folders.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd

from hoban_pipelines.core.report import BuildReport, Table
from hoban_pipelines.core.settings import Settings
from hoban_pipelines.core.yolo_format import IMAGE_SUFFIXES

MANIFEST = "manifest.parquet"
COLUMNS = ["camera", "path", "name", "timestamp", "timestamp_source", "bytes", "sha256"]
# YYYYMMDD_HHMMSS anywhere in the name: the demo's recorders and the team's (the setting's default)
DEFAULT_PATTERNS = tuple(Settings().capture_patterns)
STAMP_FORMAT = "%Y%m%d_%H%M%S"
EXIF_DATETIME_ORIGINAL, EXIF_DATETIME, EXIF_IFD = 0x9003, 0x0132, 0x8769
NAME, EXIF, MTIME = "name", "exif", "mtime"
_DAY_FOLDER = re.compile(r"\d{8}")


class CaptureError(ValueError):
    """Capture settings or folders that cannot be ingested as given."""


@dataclass(frozen=True)
class Timestamping:
    """How a frame's time is read: regexes with a ``stamp`` group in ``STAMP_FORMAT``, and the site's zone."""

    patterns: tuple[str, ...] = DEFAULT_PATTERNS
    timezone: str = "Asia/Seoul"
    compiled: tuple[re.Pattern, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise CaptureError(f"time zone {self.timezone!r} is not known; use an IANA name like 'Asia/Seoul'") from None
        compiled = []
        for pattern in self.patterns:
            try:
                regex = re.compile(pattern)
            except re.error as exc:
                raise CaptureError(f"capture name pattern {pattern!r} is not a regular expression: {exc}") from None
            if "stamp" not in regex.groupindex:
                raise CaptureError(f"capture name pattern {pattern!r} needs a (?P<stamp>...) group in {STAMP_FORMAT}")
            compiled.append(regex)
        object.__setattr__(self, "compiled", tuple(compiled))

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def from_name(self, name: str) -> datetime | None:
        for regex in self.compiled:
            found = regex.search(name)
            if found:
                try:
                    return datetime.strptime(found.group("stamp"), STAMP_FORMAT).replace(tzinfo=self.zone)
                except ValueError:
                    continue  # digits that are not a date (e.g. a counter): try the next pattern
        return None


def _exif_time(path: Path, zone: ZoneInfo) -> datetime | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            exif = image.getexif()
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    value = exif.get_ifd(EXIF_IFD).get(EXIF_DATETIME_ORIGINAL) or exif.get(EXIF_DATETIME)
    try:
        return datetime.strptime(str(value).strip(), "%Y:%m:%d %H:%M:%S").replace(tzinfo=zone) if value else None
    except ValueError:
        return None


def capture_time(path: Path, rule: Timestamping) -> tuple[datetime, str]:
    """The frame's local time and where it came from (``name``, ``exif`` or ``mtime``)."""
    named = rule.from_name(Path(path).name)
    if named is not None:
        return named, NAME
    exif = _exif_time(Path(path), rule.zone)
    if exif is not None:
        return exif, EXIF
    return datetime.fromtimestamp(Path(path).stat().st_mtime, rule.zone), MTIME


def _candidates(camera_root: Path, day: date) -> list[Path]:
    """The image files that may belong to ``day``. A recorder that files frames in YYYYMMDD
    folders (the demo's layout, and the team's) may file a frame taken just after midnight under
    the day before, or the other way round, so the folders of the day and of both neighbours are
    read; without day folders, every image under the camera's folder is."""
    if any(_DAY_FOLDER.fullmatch(child.name) and child.is_dir() for child in camera_root.iterdir()):
        folders = [camera_root / (day + timedelta(days=shift)).strftime("%Y%m%d") for shift in (-1, 0, 1)]
        bases = [folder for folder in folders if folder.is_dir()]
    else:
        bases = [camera_root]
    return sorted(p for base in bases for p in base.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_captures(roots: dict[str, Path], day: date, rule: Timestamping, out_dir: Path) -> BuildReport:
    """The manifest of ``day``'s frames over every camera folder in ``roots`` (camera -> folder).

    A day without frames is an empty manifest, not an error. A file that vanishes between
    listing and hashing (a folder moved or cleaned mid-run) is counted and left out."""
    rows, vanished, sources = [], Counter(), Counter()
    for camera, root in sorted(roots.items()):
        root = Path(root)
        try:
            candidates = _candidates(root, day)
        except FileNotFoundError:
            candidates = []
            vanished[camera] += 1
        for path in candidates:
            try:
                stamp, source = capture_time(path, rule)
                if stamp.date() != day:
                    continue
                rows.append({"camera": camera, "path": str(path), "name": str(path.relative_to(root)),
                             "timestamp": stamp, "timestamp_source": source, "bytes": path.stat().st_size,
                             "sha256": _sha256(path)})
                sources[(camera, source)] += 1
            except FileNotFoundError:
                vanished[camera] += 1
    manifest = pd.DataFrame(rows, columns=COLUMNS)
    if not manifest.empty:
        manifest = manifest.sort_values(["camera", "timestamp", "name"], kind="stable").reset_index(drop=True)
    manifest["timestamp"] = pd.to_datetime(manifest["timestamp"], utc=True).dt.tz_convert(rule.timezone)
    manifest.to_parquet(Path(out_dir) / MANIFEST, index=False)
    warnings = []
    fallbacks = {EXIF: "EXIF DateTimeOriginal", MTIME: "the file's mtime (when it was written, maybe by a copy: check)"}
    for (camera, source), count in sorted(sources.items()):
        if source != NAME:
            warnings.append(f"{count} frames of {camera} have no time in their name ({', '.join(rule.patterns)}): "
                            f"timed by {fallbacks[source]}")
    for camera, count in sorted(vanished.items()):
        warnings.append(f"{count} files of {camera} vanished while the day was read (folder moved or cleaned "
                        f"mid-run?); they are not in the manifest")
    return BuildReport(
        counts={"frames": len(manifest), **{f"frames_{camera}": int((manifest["camera"] == camera).sum())
                                            for camera in sorted(roots)}},
        details={
            "day": day.isoformat(), "timezone": rule.timezone, "bytes": int(manifest["bytes"].sum()),
            "cameras": Table([_camera_row(manifest, camera) for camera in sorted(roots)],
                             ["camera", "frames", "bytes", "first", "last"]),
            "timestamp_sources": dict(Counter(manifest["timestamp_source"])),
        },
        warnings=warnings,
    )


def _camera_row(manifest: pd.DataFrame, camera: str) -> dict:
    mine = manifest[manifest["camera"] == camera]
    times = mine["timestamp"]
    return {"camera": camera, "frames": len(mine), "bytes": int(mine["bytes"].sum()),
            "first": times.min().isoformat() if len(mine) else "", "last": times.max().isoformat() if len(mine) else ""}
