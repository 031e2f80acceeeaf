"""Near-duplicate images and frozen CCTV frames, with OpenCV and numpy only.

Used by dataset building (train/valid groups that nothing similar may straddle, keep-one
dedup) and by the nightly capture ingestion (frozen frames). Hand-written rather than
fastdup because fastdup is licensed non-commercially (CC BY-NC-ND), phones home at import
(Sentry telemetry, a PyPI version check) unless told not to, hard-pins numpy<2,
Pillow==10.3.0 and scikit-learn==1.5.0 on Python < 3.13, and cannot tell a frozen CCTV frame
from a live one (DESIGN section 7: every consecutive frame scored >= 0.9967). It stays
available as an optional backend, :func:`near_duplicate_pairs_fastdup`.

Near-duplicates (:func:`thumbnails`, :func:`near_duplicate_pairs`)
    Each image is decoded at 1/4 scale in grayscale (JPEG decodes in the DCT domain, so this
    is fast), shrunk to 32x32 and made zero-mean and unit-length; similarity is the cosine,
    i.e. a dot product, so all pairs come from a blockwise matrix product. Measured on the
    demo site (``hoban demo-site --profile demo``, 360 varied 640 px "v13" images):

    * copies: re-encoded at JPEG quality 30 >= 0.9978, PNG >= 0.9952, gamma 0.8 >= 0.9962,
      half size >= 0.9898, 15% brighter (clipping) >= 0.9804; a quarter-size copy can fall
      to 0.939, a 1% crop to 0.85 and a 4 px shift to 0.962 (not found);
    * distinct images <= 0.822;
    * the largest worker painted out: <= 0.973 when it covers >= 10% of the image, <= 0.980
      at 5-10%, up to 0.995 at 2-5% and 0.998 under 1%. A 32x32 thumbnail cannot see small
      objects.

    :data:`DEFAULT_THRESHOLD` = 0.98 therefore finds copies and, beyond them, pairs that
    differ only by a small object. That is right for grouping (leakage: a scene with one
    worker moved belongs on one side of the split) but loose for *dropping* images with
    :func:`keep_one`: pass a stricter threshold there, knowing that even 0.995 pairs some
    images that differ by a worker of 2-5% of the image.

    Fixed cameras: every pair of frames from one CCTV camera scores >= 0.997 on the demo
    site (232 snapshots), whatever moved: planted bursts 1-3 s apart score 0.99974-0.99994,
    frames where a worker came or went up to 0.99990, re-encoded frozen copies >= 0.99995,
    live static frames up to 0.99997. The background dominates and a worker is a fraction
    of one thumbnail cell, so no threshold separates these, nor does a 64 or 128 px
    thumbnail or the largest per-cell difference. Pass ``cameras`` so frames of one camera
    are never paired by similarity, and group them by time instead (same camera within N
    seconds), merging the edge lists with :func:`union_groups`.

Frozen frames (:func:`frozen_flags`)
    A recorder that loses its stream repeats the last good frame, as the same bytes or
    re-encoded. Each frame of one camera is compared with the previous frame that was not
    frozen: equal SHA-256 is a byte copy; otherwise the frames are decoded at 1/4 scale in
    grayscale and the absolute difference is averaged over a 32x18 grid of blocks; the
    largest block mean (block-max MAD) below :data:`FROZEN_THRESHOLD` = 0.45 is a pixel copy.
    Measured at that scale on the demo site's 600 captures: the recorder's re-encoded repeats
    (JPEG quality 95-98) <= 0.169, and our re-encodes of 94 captures at quality 90-98 <= 0.253;
    live frames of a static scene (sensor noise only) >= 0.698, other live frames >= 1.92.
    Re-encodes at quality 85 or lower (up to 0.50 at 85) are not caught. The scale matters
    little to the separation (full resolution <= 1.06 vs >= 3.39, 1/2 scale <= 0.31 vs
    >= 1.41) but 1/4 decodes fastest and keeps quality-85 re-encodes further from live static
    frames than 1/2 does. A global mean absolute difference cannot do this (DESIGN section 7:
    it flagged every live frame of noisy cameras). The threshold sits between re-encode
    quantisation and sensor noise, so recalibrate it for cameras much cleaner than the
    demo's (the scores are returned for that).

Undecodable files are reported with a reason, skipped and counted, never raised.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import cv2
import numpy as np

DEFAULT_THRESHOLD = 0.98
FROZEN_THRESHOLD = 0.45
THUMBNAIL_SIZE = 32
FROZEN_GRID = (32, 18)  # blocks across, down
MAX_PAIRS = 5_000_000  # about 750 MB as Python tuples

_DECODE_FLAG = cv2.IMREAD_REDUCED_GRAYSCALE_4
_FROZEN_CHUNK = 64  # frames decoded ahead, so memory stays bounded on long runs
_JPEG_START, _JPEG_END = b"\xff\xd8", b"\xff\xd9"


def _default_workers() -> int:
    """Decoding threads: cv2 releases the GIL, and more than four rarely helps on disk I/O."""
    return min(4, os.cpu_count() or 1)


def _read_gray(path: Path) -> tuple[bytes, np.ndarray | None, str | None]:
    """The file's bytes and its 1/4-scale grayscale decode, or the reason it has none."""
    try:
        data = path.read_bytes()
    except OSError as error:
        return b"", None, f"cannot read: {error.strerror or error}"
    if data[:2] == _JPEG_START and data.rstrip(b"\x00")[-2:] != _JPEG_END:
        # OpenCV decodes a cut-off JPEG without complaint, the missing rows grey
        return data, None, "truncated JPEG (no end-of-image marker): the file was cut off while written or copied"
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), _DECODE_FLAG) if data else None
    except cv2.error:  # some codecs raise on corrupt input instead of returning None
        image = None
    if image is None:
        return data, None, "cannot decode as an image"
    return data, image, None


# --------------------------------------------------------------------------- near-duplicates


def thumbnail_vector(gray: np.ndarray, size: int = THUMBNAIL_SIZE) -> np.ndarray | None:
    """A grayscale image as a zero-mean, unit-length float32 row of size*size values;
    None for a blank (single-level) image, which has no direction to compare."""
    small = cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    small -= small.mean()
    norm = float(np.linalg.norm(small))
    if norm < 1e-6:
        return None
    return small / norm


@dataclass(frozen=True, eq=False)
class Thumbnails:
    """Thumbnail rows of the images that could be used.

    ``paths`` are all the paths given, in order; ``vectors`` has one row per usable image and
    ``positions[k]`` is the index in ``paths`` of row k. ``skipped`` lists (path, reason) for
    the rest: files that cannot be read or decoded, and blank images.
    """

    paths: list[str]
    vectors: np.ndarray  # float32, (len(positions), size * size)
    positions: np.ndarray  # int64 indices into paths
    skipped: list[tuple[str, str]]

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or self.vectors.dtype != np.float32:
            raise ValueError(f"vectors must be a 2-D float32 matrix, got {self.vectors.dtype} {self.vectors.shape}")
        if len(self.positions) != len(self.vectors):
            raise ValueError(f"{len(self.vectors)} vectors but {len(self.positions)} positions")
        if len(self.positions) + len(self.skipped) != len(self.paths):
            raise ValueError(f"{len(self.paths)} paths but {len(self.positions)} used + {len(self.skipped)} skipped")
        if len(self.positions) and (np.any(np.diff(self.positions) <= 0) or self.positions[0] < 0
                                    or self.positions[-1] >= len(self.paths)):
            raise ValueError("positions must be increasing indices into paths")


def thumbnails(paths: Iterable[str | Path], size: int = THUMBNAIL_SIZE, workers: int | None = None) -> Thumbnails:
    """Decode every image (1/4 scale, grayscale) into a ``size`` x ``size`` thumbnail row."""
    if size < 2:
        raise ValueError(f"thumbnail size must be at least 2, got {size}")
    names = [str(p) for p in paths]

    def load(name: str) -> np.ndarray | str:
        _, gray, reason = _read_gray(Path(name))
        if gray is None:
            return reason
        vector = thumbnail_vector(gray, size)
        return "blank image (a single grey level)" if vector is None else vector

    with ThreadPoolExecutor(max_workers=workers or _default_workers()) as pool:
        loaded = list(pool.map(load, names))
    rows = [i for i, item in enumerate(loaded) if not isinstance(item, str)]
    vectors = np.stack([loaded[i] for i in rows]) if rows else np.zeros((0, size * size), np.float32)
    skipped = [(name, item) for name, item in zip(names, loaded) if isinstance(item, str)]
    return Thumbnails(names, vectors, np.array(rows, dtype=np.int64), skipped)


def _unknown_camera(camera: object) -> bool:
    if camera is None:
        return True
    try:
        return bool(camera != camera) or camera == ""  # NaN is the one value unequal to itself
    except TypeError:  # pandas' NA has no truth value; it is missing too
        return True


def _camera_codes(cameras: Sequence[str | None], expected: int) -> np.ndarray:
    """One integer per image, equal for the same camera; -1 where the camera is unknown."""
    if len(cameras) != expected:
        raise ValueError(f"cameras has {len(cameras)} entries for {expected} paths")
    codes: dict[str, int] = {}
    return np.array([-1 if _unknown_camera(camera) else codes.setdefault(str(camera), len(codes))
                     for camera in cameras], dtype=np.int64)


def near_duplicate_pairs(
    thumbs: Thumbnails,
    threshold: float = DEFAULT_THRESHOLD,
    block: int = 4096,
    cameras: Sequence[str | None] | None = None,
    max_pairs: int = MAX_PAIRS,
) -> list[tuple[int, int, float]]:
    """Pairs (i, j, cosine) with i < j and cosine >= ``threshold``, sorted; i and j index
    ``thumbs.paths``. Skipped images are in no pair.

    Computed ``block`` x ``block`` tiles at a time (64 MB of float32 at 4096), so memory does
    not grow with n squared. ``cameras`` (one per path, None where unknown) leaves out pairs
    of frames from the same fixed camera, which the cosine cannot tell apart (see the module
    notes); group those by time. More than ``max_pairs`` pairs raises ValueError rather than
    exhausting memory: the threshold is too low for the data, or fixed-camera frames were
    passed without ``cameras``.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if block < 1:
        raise ValueError(f"block must be positive, got {block}")
    vectors, positions = thumbs.vectors, thumbs.positions
    codes = None if cameras is None else _camera_codes(cameras, len(thumbs.paths))[positions]
    n = len(vectors)
    found_rows: list[np.ndarray] = []
    found_cols: list[np.ndarray] = []
    found_sims: list[np.ndarray] = []
    total = 0
    for row_start in range(0, n, block):
        rows = vectors[row_start:row_start + block]
        for col_start in range(row_start, n, block):  # upper triangle of tiles only
            similar = rows @ vectors[col_start:col_start + block].T
            hits = similar >= threshold
            if codes is not None:
                row_codes = codes[row_start:row_start + block, None]
                hits &= (row_codes != codes[None, col_start:col_start + block]) | (row_codes < 0)
            r, c = np.nonzero(hits)
            if col_start == row_start:  # the diagonal tile: each pair once, no self-pairs
                upper = c > r
                r, c = r[upper], c[upper]
            total += len(r)
            if total > max_pairs:
                raise ValueError(
                    f"more than {max_pairs} near-duplicate pairs at threshold {threshold}: raise the "
                    "threshold, or pass cameras= so frames of one fixed camera are not compared")
            found_rows.append(r + row_start)
            found_cols.append(c + col_start)
            found_sims.append(similar[r, c])
    if not total:
        return []
    i = positions[np.concatenate(found_rows)]  # positions increase, so i < j still holds
    j = positions[np.concatenate(found_cols)]
    sims = np.concatenate(found_sims)
    order = np.lexsort((j, i))
    return [(int(a), int(b), float(s)) for a, b, s in zip(i[order], j[order], sims[order])]


def _check_pairs(n: int, pairs: Iterable[Sequence], what: str) -> list[tuple[int, int]]:
    checked = []
    for pair in pairs:
        i, j = int(pair[0]), int(pair[1])
        if not (0 <= i < n and 0 <= j < n) or i == j:
            raise ValueError(f"{what}: pair ({i}, {j}) is not two different indices in 0..{n - 1}")
        checked.append((i, j))
    return checked


def keep_one(n: int, pairs: Iterable[Sequence],
             order: Sequence[int] | None = None) -> tuple[np.ndarray, list[int | None]]:
    """Keep-one-drop-the-rest over ``n`` items linked by ``pairs`` ((i, j, ...) tuples).

    Items are visited in ``order`` (default 0..n-1, so put the preferred copy first); an
    item is kept unless it is linked to an item already kept. Returns ``keep`` (bool array)
    and ``duplicate_of``: for each dropped item the first kept item (in ``order``) it
    duplicates, None for kept ones. Whole connected components are NOT collapsed: in a chain
    A~B~C where A and C are not linked, A and C are both kept.
    """
    visit = list(range(n)) if order is None else [int(i) for i in order]
    if sorted(visit) != list(range(n)):
        raise ValueError(f"order must list each of 0..{n - 1} exactly once")
    neighbours: list[list[int]] = [[] for _ in range(n)]
    for i, j in _check_pairs(n, pairs, "keep_one"):
        neighbours[i].append(j)
        neighbours[j].append(i)
    kept_rank: list[int | None] = [None] * n  # order in which items were kept
    duplicate_of: list[int | None] = [None] * n
    kept_so_far = 0
    for item in visit:
        kept_neighbours = [k for k in neighbours[item] if kept_rank[k] is not None]
        if kept_neighbours:
            duplicate_of[item] = min(kept_neighbours, key=lambda k: kept_rank[k])
        else:
            kept_rank[item] = kept_so_far
            kept_so_far += 1
    keep = np.array([rank is not None for rank in kept_rank], dtype=bool)
    return keep, duplicate_of


def union_groups(n: int, *edge_lists: Iterable[Sequence]) -> list[int]:
    """Connected components of ``n`` items over all edge lists ((i, j, ...) tuples), e.g.
    near-duplicate pairs plus same-camera-within-N-seconds edges. Group ids run 0, 1, ...
    in order of each group's first item."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]  # path halving keeps the trees flat
            i = parent[i]
        return i

    for edges in edge_lists:
        for i, j in _check_pairs(n, edges, "union_groups"):
            a, b = root(i), root(j)
            if a != b:
                parent[max(a, b)] = min(a, b)
    ids: dict[int, int] = {}
    return [ids.setdefault(root(i), len(ids)) for i in range(n)]


# --------------------------------------------------------------------------- frozen frames


@dataclass(frozen=True)
class FrozenResult:
    """One frame of a camera's time-ordered list.

    ``reason`` is "bytes" (same SHA-256 as ``frozen_of``) or "pixels" (block-max MAD
    ``score`` below the threshold). ``score`` is the block-max MAD against the previous kept
    frame (0.0 for byte copies), None when there was nothing to compare: the first usable
    frame, a change of frame size, or an undecodable frame, whose ``error`` says why.
    """

    path: str
    is_frozen: bool
    reason: str | None
    score: float | None
    frozen_of: str | None
    error: str | None = None


def block_max_mad(a: np.ndarray, b: np.ndarray, grid: tuple[int, int] = FROZEN_GRID) -> float:
    """Mean absolute difference in each block of a ``grid`` (across, down) over two
    same-size grayscale images, the largest block's value."""
    difference = cv2.absdiff(a, b).astype(np.float32)
    return float(cv2.resize(difference, grid, interpolation=cv2.INTER_AREA).max())


def frozen_flags(paths: Iterable[str | Path], threshold: float = FROZEN_THRESHOLD,
                 workers: int | None = None) -> list[FrozenResult]:
    """Flag repeated frames in ONE camera's frames, given in time order (see the module
    notes for the metric and :data:`FROZEN_THRESHOLD`). Each frame is compared with the
    previous frame that was not frozen, so a whole frozen run points at its source."""
    if threshold <= 0:
        raise ValueError(f"threshold must be positive, got {threshold}")
    names = [str(p) for p in paths]

    def load(name: str) -> tuple[str, np.ndarray | None, str | None]:
        data, gray, reason = _read_gray(Path(name))
        return hashlib.sha256(data).hexdigest(), gray, reason

    results: list[FrozenResult] = []
    kept: tuple[str, str, np.ndarray] | None = None  # path, sha256, pixels of the last live frame
    with ThreadPoolExecutor(max_workers=workers or _default_workers()) as pool:
        remaining = iter(names)
        while chunk := list(islice(remaining, _FROZEN_CHUNK)):
            for name, (digest, gray, reason) in zip(chunk, pool.map(load, chunk)):
                if gray is None:
                    results.append(FrozenResult(name, False, None, None, None, error=reason))
                elif kept is not None and digest == kept[1]:
                    results.append(FrozenResult(name, True, "bytes", 0.0, kept[0]))
                elif kept is not None and gray.shape == kept[2].shape:
                    score = block_max_mad(gray, kept[2])
                    frozen = score < threshold
                    results.append(FrozenResult(name, frozen, "pixels" if frozen else None, score,
                                                kept[0] if frozen else None))
                    if not frozen:
                        kept = (name, digest, gray)
                else:
                    results.append(FrozenResult(name, False, None, None, None))
                    kept = (name, digest, gray)
    return results


# --------------------------------------------------------------------------- fastdup backend


def near_duplicate_pairs_fastdup(paths: Sequence[str | Path], threshold: float) -> list[tuple[int, int, float]]:
    """Pairs (i, j, similarity), i < j indexing ``paths``, from fastdup's own embedding.

    Optional (``pip install 'hoban_pipelines[fastdup]'``), and licensed for non-commercial
    use only (CC BY-NC-ND). Its similarity is not this module's cosine and has no default
    here: on CCTV, consecutive frames all scored >= 0.9967 (DESIGN section 7), so calibrate
    ``threshold`` on the data at hand.
    """
    # fastdup reports to Sentry and checks PyPI at import unless these are set first.
    os.environ["SENTRY_OPT_OUT"] = "1"
    os.environ["FASTDUP_PRODUCTION"] = "1"
    try:
        import fastdup
    except ImportError as error:
        raise RuntimeError(
            "the fastdup backend needs the optional 'fastdup' extra: pip install 'hoban_pipelines[fastdup]'. "
            "fastdup is licensed for non-commercial use only (CC BY-NC-ND); the default OpenCV backend, "
            "near_duplicate_pairs(thumbnails(paths)), needs nothing extra."
        ) from error
    names = [os.path.abspath(p) for p in paths]
    index = {name: i for i, name in enumerate(names)}
    with tempfile.TemporaryDirectory(prefix="hoban-fastdup-") as work_dir:
        fd = fastdup.create(work_dir=work_dir, input_dir=names)
        fd.run(threshold=threshold, overwrite=True, print_summary=False)
        table = fd.similarity()
    best: dict[tuple[int, int], float] = {}
    if table is not None:
        for source, target, similarity in zip(table["filename_from"], table["filename_to"], table["distance"]):
            i, j = index.get(os.path.abspath(source)), index.get(os.path.abspath(target))
            if i is None or j is None:
                raise RuntimeError(f"fastdup reported files it was not given: {source}, {target}")
            if i != j and similarity >= threshold:
                key = (min(i, j), max(i, j))  # fastdup lists both directions
                best[key] = max(best.get(key, -1.0), float(similarity))
    return [(i, j, s) for (i, j), s in sorted(best.items())]
