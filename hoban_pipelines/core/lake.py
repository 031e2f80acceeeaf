"""The lake: immutable, versioned directories under ``$HOBAN_HOME/lake``.

Every materialization writes ``lake/<asset>[/<partition>]/<version>/``: built in a hidden temp
directory beside its final place and renamed into it, so a crash never leaves a half-written
version and older versions are never touched. The version name is ``<UTC time>-<digest>``;
content identical to an existing version reuses that version instead of piling up copies.
Assets pass small ``LakeHandle`` records (path, version, counts, classes, upstream versions)
between each other, never image arrays or pickled models. Each version's ``_version.json``
records what it was built from and with (``params``, ``upstream``, ``classes``, ``counts``), so
a handle can be rebuilt from the version alone and :meth:`Lake.find_version` answers "which
version of asset X has property Y" for reuse, checks, sensors and promotion.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

VERSION_FILE = "_version.json"
TMP_PREFIX = ".tmp-"


class LakeError(RuntimeError):
    """The lake cannot be written or a version it should hold is missing."""


@dataclass(frozen=True)
class LakeHandle:
    """What one asset hands the next: where its version lives and what it holds."""

    asset: str
    version: str
    path: str  # relative to HOBAN_HOME, so a lake can be moved or mounted elsewhere
    partition: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)  # what the version's class indices name; empty: no labels
    # every lake version this one was computed from, its own inputs and theirs: asset -> version
    upstream: dict[str, str] = field(default_factory=dict)

    def resolve(self, home: Path) -> Path:
        return Path(home) / self.path

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=2)

    @classmethod
    def from_json(cls, text: str, source: str = "handle record") -> "LakeHandle":
        raw = json.loads(text)
        unknown = sorted(set(raw) - set(HANDLE_FIELDS))
        if unknown:
            raise LakeError(
                f"{source} was written by an older hoban_pipelines (fields {unknown}); "
                f"rematerialize {raw.get('asset', 'the asset')} to record it anew"
            )
        return cls(**raw)


HANDLE_FIELDS = tuple(LakeHandle.__dataclass_fields__)


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def link_or_copy(source: Path, dest: Path) -> bool:
    """Hard-link ``source`` to ``dest`` (no bytes copied); copy where links are impossible. True when linked."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, dest)
        return True
    except OSError:  # another filesystem, or links not allowed
        shutil.copy2(source, dest)
        return False


def tree_digest(root: Path) -> str:
    """sha256 over every file's relative path and content (the version file excluded)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != VERSION_FILE):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()


def write_text_atomic(path: Path, text: str) -> None:
    """Write a small file so readers see the old or the new content, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TMP_PREFIX)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def publish_directory(target: Path) -> Iterator[Path]:
    """Build a new folder at ``target`` atomically: yields a hidden staging folder beside it."""
    target = Path(target).resolve()
    if target.exists():
        raise FileExistsError(f"{target} already exists; choose a new folder (nothing is overwritten)")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f"{TMP_PREFIX}{target.name}-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    try:
        yield staging
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


class Lake:
    def __init__(self, home: Path | str):
        self.home = Path(home).expanduser().resolve()
        self.root = self.home / "lake"

    def ensure_writable(self) -> None:
        """Create the lake root and prove it writable, or say which setting to change."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=TMP_PREFIX):
                pass
        except OSError as exc:
            raise LakeError(
                f"HOBAN_HOME={self.home} is not writable ({exc.strerror or exc}): "
                "set HOBAN_HOME to a folder you can write to"
            ) from None

    def asset_dir(self, asset: str, partition: str | None = None) -> Path:
        base = self.root / asset
        return base / partition if partition else base

    def versions(self, asset: str, partition: str | None = None) -> list[str]:
        """Published versions, oldest first."""
        base = self.asset_dir(asset, partition)
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if (p / VERSION_FILE).is_file())

    def version_info(self, asset: str, version: str, partition: str | None = None) -> dict[str, Any]:
        return json.loads((self.asset_dir(asset, partition) / version / VERSION_FILE).read_text())

    def new_version(self, asset: str, *, partition: str | None = None, meta: dict[str, Any] | None = None) -> "VersionWriter":
        return VersionWriter(self, asset, partition, meta or {})

    def handle(self, asset: str, version: str, partition: str | None = None) -> LakeHandle:
        """The handle of a published version, from what the version records about itself."""
        folder = self.asset_dir(asset, partition) / version
        if not (folder / VERSION_FILE).is_file():
            raise LakeError(f"{asset} has no version {version} in {self.root}: list them under {folder.parent}")
        info = self.version_info(asset, version, partition)
        return self.handle_for(folder, asset=asset, version=version, partition=partition,
                               counts=info.get("counts") or {}, classes=info.get("classes") or [],
                               upstream=info.get("upstream") or {})

    def find_version(
        self, asset: str, matches: Callable[[dict[str, Any]], bool], partition: str | None = None,
    ) -> LakeHandle | None:
        """The newest published version of ``asset`` whose ``_version.json`` satisfies ``matches``."""
        infos = [self.version_info(asset, version, partition) for version in self.versions(asset, partition)]
        # by creation time: version names order by the second, then by digest
        for info in sorted(infos, key=lambda info: info.get("created", ""), reverse=True):
            if matches(info):
                return self.handle(asset, info["version"], partition)
        return None

    def handle_for(self, path: Path, **kwargs: Any) -> LakeHandle:
        return LakeHandle(path=Path(path).relative_to(self.home).as_posix(), **kwargs)


class VersionWriter:
    """Context manager: write into ``.path``; on success the version is published.

    Set ``.digest`` inside the block to name the content yourself (e.g. a manifest hash that
    already covers every image) instead of hashing every file again.
    """

    def __init__(self, lake: Lake, asset: str, partition: str | None, meta: dict[str, Any]):
        self.lake = lake
        self.asset = asset
        self.partition = partition
        self.meta = meta
        self.digest: str | None = None
        self.version: str | None = None
        self.final_path: Path | None = None
        self.reused = False
        self.path = Path()

    def __enter__(self) -> "VersionWriter":
        self.lake.ensure_writable()
        parent = self.lake.asset_dir(self.asset, self.partition)
        parent.mkdir(parents=True, exist_ok=True)
        self.path = parent / f"{TMP_PREFIX}{uuid.uuid4().hex}"
        self.path.mkdir()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        try:
            self._publish()
        except BaseException:
            shutil.rmtree(self.path, ignore_errors=True)
            raise

    def _publish(self) -> None:
        digest = self.digest or tree_digest(self.path)
        parent = self.path.parent
        short = digest[:12]
        same = [v for v in self.lake.versions(self.asset, self.partition) if v.endswith(f"-{short}")]
        if same:
            self._reuse(parent / same[0])
            return
        created = datetime.now(timezone.utc)
        version = f"{created:%Y%m%dT%H%M%SZ}-{short}"
        info = {
            "asset": self.asset,
            "partition": self.partition,
            "version": version,
            "digest": digest,
            "created": created.isoformat(),
            **self.meta,
        }
        (self.path / VERSION_FILE).write_text(json.dumps(info, sort_keys=True, indent=2, default=str))
        final = parent / version
        try:
            os.rename(self.path, final)
        except OSError:
            if not (final / VERSION_FILE).is_file():
                raise
            self._reuse(final)  # another run published the same content a moment ago
            return
        self.version, self.final_path = version, final

    def _reuse(self, existing: Path) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self.version, self.final_path, self.reused = existing.name, existing, True
