"""Fingerprints of the folders the team's inputs live in (CVAT exports, captures, base dataset).

Two kinds, both over every file's relative path and size:

- ``content=True`` adds the content: the whole file up to 1 MB (labels, exports, yaml), the
  first and last 64 KB of larger ones (an image that changes changes there). Copying or
  touching a folder keeps its version; editing a label changes it.
- ``content=False`` adds the modification time instead: cheap enough to observe a capture
  folder of 100k frames on every tick.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class FolderFingerprint:
    digest: str
    files: int
    bytes: int
    by_suffix: dict[str, int] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return self.digest[:16]


# ultralytics writes labels/<split>.cache beside the labels of whatever it trains on: not content
IGNORED_SUFFIXES = (".cache",)
WHOLE_FILE = 1 << 20
EDGE = 1 << 16


def _content_digest(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        if size <= WHOLE_FILE:
            digest.update(handle.read())
        else:
            digest.update(handle.read(EDGE))
            handle.seek(size - EDGE)
            digest.update(handle.read(EDGE))
    return digest.hexdigest()


def fingerprint_folder(root: Path, suffixes: tuple[str, ...] | None = None, *, content: bool = False) -> FolderFingerprint:
    """Fingerprint of every file under ``root`` (only ``suffixes``, lower-case, when given)."""
    entries: list[tuple[str, int, int | str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith(".") or name.endswith(IGNORED_SUFFIXES) or (suffixes and not name.lower().endswith(suffixes)):
                continue
            path = Path(dirpath) / name
            stat = path.stat()
            mark = _content_digest(path, stat.st_size) if content else stat.st_mtime_ns
            entries.append((path.relative_to(root).as_posix(), stat.st_size, mark))
    entries.sort()
    digest = hashlib.sha256()
    for rel, size, mark in entries:
        digest.update(f"{rel}\0{size}\0{mark}\n".encode())
    suffix_counts = Counter(Path(rel).suffix.lower() or "(none)" for rel, _, _ in entries)
    return FolderFingerprint(
        digest=digest.hexdigest(),
        files=len(entries),
        bytes=sum(size for _, size, _ in entries),
        by_suffix=dict(sorted(suffix_counts.items())),
    )
