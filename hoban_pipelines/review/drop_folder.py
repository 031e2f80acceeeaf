"""The review drop folder: which finished CVAT exports are complete and new, decided once per sensor tick.

Reviewers export finished CVAT tasks (task or job exports, "CVAT for images 1.1" or "CVAT for
video 1.1", as ``.zip`` or ``.xml``) into the folder named by the setting ``review_drop``. The
sensor calls :func:`scan` once a tick with the cursor it stored, hands out each
:class:`ReadyExport` as one run of its own dynamic partition, and stores ``result.cursor``.
Plain Python, no Dagster: all state lives in the cursor string, so a daemon restart, which
starts again from the stored cursor, hands nothing out twice.

Which files count: the regular files directly in the folder (not in subfolders) whose name ends
in ``.zip`` or ``.xml`` (any case), except hidden files (``.name``) and lock or backup files
(``~$name``, ``~name``). Everything else (``.tmp``, ``.part``, ``.zip.part``, ``.crdownload``,
folders) is ignored without a word and never enters the cursor. Files are taken in name order.

The rules, per file, per tick (a tick is one sensor evaluation; the sensor's interval is the
stability window):

1. **Seen for the first time, or its size or mtime changed since the last tick**: ``waiting``.
   A file is never read until it has stood still for a tick.
2. **Size and mtime unchanged since the last tick**: read once, hashing (sha256) and checking
   that it is complete in the same pass: a zip's central directory must be readable (it is
   written last, so a truncated copy or one that preallocates the file lacks it), an XML must
   be well-formed to its end (defusedxml, no tree kept). Member CRCs are not checked here:
   ``testzip()`` would decompress every image of an export with images on every stable tick;
   the import that reads the members finds a bad one and names it.
3. **Stable but incomplete**: held back and read again on each following tick; the first such
   tick reports it in ``skipped`` with the reason, later ones list it in ``waiting``. Once it has
   been held back on ``INCOMPLETE_TICKS`` (3) stable ticks it is handed out anyway, with the
   reason in ``ReadyExport.problem``: its own run then fails with the reader's error naming the
   file, and no other file ever waits on it. Any change to the file starts again at rule 1.
4. **Stable and complete (or out of patience)**: its content key (below) decides. Content
   already handed out (the same export copied under another name, re-touched, deleted and
   dropped again, or two identical copies on one tick) goes to ``skipped`` once, naming the file
   it was handed out as; new content is ``ready``. A file whose content changed is new content:
   a new key, a new partition, a new run.
5. **Decided (handed out or skipped as a copy) and unchanged since**: ``settled``, not read
   again. A file that cannot be read at all stays ``waiting`` (reported once in ``skipped``):
   there is nothing to hash, so nothing to hand out.

Each considered file is in exactly one of ``ready``, ``waiting``, ``skipped`` and ``settled``.

The content key, and the dynamic partition key of the export, is the first ``KEY_LENGTH`` (16)
hex characters of the file's sha256: short enough for the UI, stable across names, machines and
restarts, and 64 bits, so a collision between two exports is not a practical concern. The full
sha256 travels in :class:`ReadyExport` (``run_key`` includes it).

The cursor (``DropCursor.to_json``), compact JSON keyed by file name in the folder::

    {"v": 1,
     "watch": {"<name>": [size, mtime_ns, held], ...},   files not yet decided, as last seen
     "done":  {"<name>": [size, mtime_ns, "<key>"], ...}, files decided, as they were then
     "seen":  {"<key>": "<name>", ...}}                   every key ever handed out, and as what

``watch`` and ``done`` hold only files present at the last tick; ``seen`` grows by one short
entry per export ever handed out (about 40 bytes) and is never pruned: that is what keeps a
deleted and re-dropped export from running twice.
"""

from __future__ import annotations

import hashlib
import json
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser, ParseError

SETTING = "review_drop"
EXPORT_SUFFIXES = frozenset({".zip", ".xml"})
IGNORED_PREFIXES = (".", "~")  # hidden files; "~$name" Office locks and "~name" backups
KEY_LENGTH = 16
INCOMPLETE_TICKS = 3
CURSOR_VERSION = 1
_CHUNK = 1 << 20


class DropFolderError(ValueError):
    """The drop folder or the sensor's cursor cannot be used; the message says which and what to do."""


@dataclass(frozen=True)
class Watched:
    """A file not decided yet, as the last tick saw it; ``held``: stable ticks it failed the completeness check."""

    size: int
    mtime_ns: int
    held: int = 0


@dataclass(frozen=True)
class Decided:
    """A file handed out or skipped as a copy, as it was then, and the key of its content."""

    size: int
    mtime_ns: int
    key: str


@dataclass(frozen=True)
class DropCursor:
    """The sensor's whole memory of the drop folder (format in the module docstring)."""

    watch: dict[str, Watched] = field(default_factory=dict)
    done: dict[str, Decided] = field(default_factory=dict)
    seen: dict[str, str] = field(default_factory=dict)  # key -> name it was handed out as

    @classmethod
    def from_json(cls, text: str | None) -> DropCursor:
        """The cursor a sensor stored; ``None`` or ``""`` (a sensor's first tick) is the empty cursor."""
        if not text:
            return cls()
        try:
            data = json.loads(text)
            if data.get("v") != CURSOR_VERSION:
                raise ValueError(f"version {data.get('v')!r}, expected {CURSOR_VERSION}")
            return cls(
                watch={name: Watched(int(s), int(m), int(h)) for name, (s, m, h) in data["watch"].items()},
                done={name: Decided(int(s), int(m), str(k)) for name, (s, m, k) in data["done"].items()},
                seen={str(k): str(name) for k, name in data["seen"].items()},
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DropFolderError(
                f"the sensor cursor is not a review drop-folder cursor ({type(exc).__name__}: {exc}): {text[:80]!r}. "
                "Reset the sensor's cursor in the Dagster UI; exports already run keep their run keys, "
                "so Dagster does not launch them again."
            ) from exc

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "v": CURSOR_VERSION,
            "watch": {name: [w.size, w.mtime_ns, w.held] for name, w in sorted(self.watch.items())},
            "done": {name: [d.size, d.mtime_ns, d.key] for name, d in sorted(self.done.items())},
            "seen": dict(sorted(self.seen.items())),
        }
        return json.dumps(data, separators=(",", ":"))


@dataclass(frozen=True)
class ReadyExport:
    """An export to hand out: one run of its own dynamic partition.

    ``problem`` is None for a complete file, else why it still looked incomplete when it was
    handed out after ``INCOMPLETE_TICKS`` stable ticks (its run is expected to fail on it).
    """

    path: Path
    sha256: str
    size: int
    problem: str | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def partition_key(self) -> str:
        """The dynamic partition key: the first ``KEY_LENGTH`` hex characters of the sha256."""
        return self.sha256[:KEY_LENGTH]

    @property
    def run_key(self) -> str:
        """A run key that includes the content hash: one run per content, ever."""
        return f"{SETTING}:{self.sha256}"


@dataclass(frozen=True)
class ScanResult:
    """One tick's decisions (file names relative to ``folder``) and the cursor to store."""

    folder: Path
    ready: list[ReadyExport]
    waiting: list[str]
    skipped: list[tuple[str, str]]
    settled: list[str]
    cursor: DropCursor

    def describe(self) -> str:
        """One line for a sensor's skip reason or log."""
        text = (
            f"review drop folder {self.folder}: {len(self.ready)} ready, {len(self.waiting)} waiting, "
            f"{len(self.skipped)} skipped, {len(self.settled)} already decided"
        )
        if self.waiting:
            text += "; waiting: " + ", ".join(self.waiting[:5]) + (", ..." if len(self.waiting) > 5 else "")
        for name, reason in self.skipped:
            text += f"; {name}: {reason}"
        return text


def scan(folder: Path, cursor: DropCursor, *, incomplete_ticks: int = INCOMPLETE_TICKS) -> ScanResult:
    """Decide every export in ``folder`` for this tick (rules in the module docstring); ``cursor`` is not changed."""
    folder = Path(folder)
    watch: dict[str, Watched] = {}
    done: dict[str, Decided] = {}
    seen = dict(cursor.seen)
    ready: list[ReadyExport] = []
    waiting: list[str] = []
    skipped: list[tuple[str, str]] = []
    settled: list[str] = []
    for name, size, mtime_ns in _candidates(folder, skipped):
        decided = cursor.done.get(name)
        if decided is not None and (decided.size, decided.mtime_ns) == (size, mtime_ns):
            done[name] = decided
            settled.append(name)
            continue
        last = cursor.watch.get(name)
        if last is None or (last.size, last.mtime_ns) != (size, mtime_ns):
            watch[name] = Watched(size, mtime_ns)
            waiting.append(name)
            continue
        path = folder / name
        try:
            sha256, problem = _digest(path)
        except OSError as exc:
            watch[name] = Watched(size, mtime_ns, last.held + 1)
            if last.held == 0:
                skipped.append((name, f"cannot be read ({exc.strerror or exc}); trying again each tick"))
            else:
                waiting.append(name)
            continue
        if problem is not None and last.held < incomplete_ticks:
            watch[name] = Watched(size, mtime_ns, last.held + 1)
            if last.held == 0:
                skipped.append((
                    name,
                    f"{problem}; waiting up to {incomplete_ticks} ticks for the copy to finish, "
                    "then handing it out so that its own run fails naming it",
                ))
            else:
                waiting.append(name)
            continue
        key = sha256[:KEY_LENGTH]
        done[name] = Decided(size, mtime_ns, key)
        if key in seen:
            skipped.append((name, f"same content as {seen[key]!r}, already handed out as partition {key}"))
            continue
        seen[key] = name
        ready.append(ReadyExport(path, sha256, size, problem))
    return ScanResult(folder, ready, waiting, skipped, settled, DropCursor(watch, done, seen))


def is_export_name(name: str) -> bool:
    """Whether a file of this name is a candidate export (not hidden, not a lock, .zip or .xml)."""
    return not name.startswith(IGNORED_PREFIXES) and Path(name).suffix.lower() in EXPORT_SUFFIXES


def _candidates(folder: Path, skipped: list[tuple[str, str]]) -> list[tuple[str, int, int]]:
    """(name, size, mtime_ns) of the candidate exports in ``folder``, by name; stat failures go to ``skipped``."""
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise DropFolderError(
            f"review drop folder {folder} {what} (setting '{SETTING}'). Point '{SETTING}' in hoban.yaml at the "
            "folder reviewers export finished CVAT tasks into, or create that folder."
        )
    try:
        names = sorted(entry.name for entry in folder.iterdir())
    except OSError as exc:
        raise DropFolderError(
            f"review drop folder {folder} cannot be listed ({exc.strerror or exc}; setting '{SETTING}'). "
            "Give the Dagster daemon's user read access to it."
        ) from exc
    found = []
    for name in names:
        if not is_export_name(name):
            continue
        try:
            info = (folder / name).stat()
        except FileNotFoundError:
            continue  # removed or renamed since the listing
        except OSError as exc:
            skipped.append((name, f"cannot be read ({exc.strerror or exc})"))
            continue
        if stat.S_ISREG(info.st_mode):
            found.append((name, info.st_size, info.st_mtime_ns))
    return found


def _digest(path: Path) -> tuple[str, str | None]:
    """The file's sha256 and, read in the same pass, why it looks incomplete (None when complete)."""
    digest = hashlib.sha256()
    xml = _XmlCheck() if path.suffix.lower() == ".xml" else None
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
            if xml is not None:
                xml.feed(chunk)
    problem = xml.close() if xml is not None else _zip_problem(path)
    return digest.hexdigest(), problem


def _zip_problem(path: Path) -> str | None:
    """Why the zip's central directory cannot be read, or None."""
    try:
        with zipfile.ZipFile(path) as archive:
            archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, NotImplementedError, OSError) as exc:
        return f"zip central directory cannot be read ({exc})"
    return None


class _Discard:
    """A parser target that keeps nothing: the check needs only the parser's verdict."""


class _XmlCheck:
    """Whether bytes fed in order form a well-formed XML document, without keeping a tree.

    A DTD or entity declaration defusedxml refuses ends the check as complete: that is a
    content problem, and the reader refuses the file with its own error naming it.
    """

    def __init__(self) -> None:
        self._parser: DefusedXMLParser | None = DefusedXMLParser(target=_Discard())
        self.problem: str | None = None

    def feed(self, chunk: bytes) -> None:
        if self._parser is None:
            return
        try:
            self._parser.feed(chunk)
        except ParseError as exc:
            self.problem = f"XML is not well-formed to its end ({exc})"
            self._parser = None
        except DefusedXmlException:
            self._parser = None

    def close(self) -> str | None:
        if self._parser is not None:
            try:
                self._parser.close()
            except ParseError as exc:
                self.problem = f"XML is not well-formed to its end ({exc})"
            except DefusedXmlException:
                pass
            self._parser = None
        return self.problem
