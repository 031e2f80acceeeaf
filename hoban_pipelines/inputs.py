"""Fingerprints of the folders the team's inputs live in (CVAT exports, captures, base dataset).

A fingerprint hashes every file's relative path, size and modification time: cheap enough to
run on every observation of a capture folder with 100k frames, and it changes whenever a file
is added, removed or rewritten.
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


def fingerprint_folder(root: Path, suffixes: tuple[str, ...] | None = None) -> FolderFingerprint:
    """Fingerprint of every file under ``root`` (only ``suffixes``, lower-case, when given)."""
    entries: list[tuple[str, int, int]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith(".") or (suffixes and not name.lower().endswith(suffixes)):
                continue
            path = Path(dirpath) / name
            stat = path.stat()
            entries.append((path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns))
    entries.sort()
    digest = hashlib.sha256()
    for rel, size, mtime in entries:
        digest.update(f"{rel}\0{size}\0{mtime}\n".encode())
    suffix_counts = Counter(Path(rel).suffix.lower() or "(none)" for rel, _, _ in entries)
    return FolderFingerprint(
        digest=digest.hexdigest(),
        files=len(entries),
        bytes=sum(size for _, size, _ in entries),
        by_suffix=dict(sorted(suffix_counts.items())),
    )
