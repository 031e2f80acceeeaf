"""Pictures for people: box-size histograms, sample images with their boxes drawn, previews.

Rendered offline (matplotlib's bundled font, OpenCV's Hershey font) and saved as PNG in the
lake; the UI shows a small JPEG preview of each (:func:`jpeg_preview`), not the file itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

# BGR, one per class; removed boxes are drawn in magenta
CLASS_COLOURS = [(60, 200, 60), (40, 40, 230), (230, 160, 40), (200, 200, 40), (160, 60, 200)]
REMOVED_COLOUR = (255, 0, 255)


def box_size_histogram(boxes: pd.DataFrame, classes: Sequence[str], path: Path, title: str) -> Path:
    """Histogram of box heights in pixels per class (columns cls, y1, y2)."""
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    heights = boxes["y2"] - boxes["y1"]
    top = max(float(heights.max()) if len(heights) else 1.0, 1.0)
    bins = np.linspace(0, top, 40)
    for index, name in enumerate(classes):
        values = heights[boxes["cls"] == index]
        if len(values):
            ax.hist(values, bins=bins, alpha=0.6, label=f"{name} ({len(values)})")
    ax.set_xlabel("box height (px)")
    ax.set_ylabel("boxes")
    ax.set_title(title)
    if len(heights):
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def sample_grid(
    samples: Iterable[tuple[Path, pd.DataFrame, pd.DataFrame]],
    classes: Sequence[str],
    path: Path,
    columns: int = 3,
    tile_width: int = 640,
    removed_by: str = "cleaning",
) -> Path:
    """Images with kept boxes in class colours and boxes ``removed_by`` a step in magenta, in a grid.

    ``samples`` yields (image path, kept boxes, removed boxes), boxes in pixel columns x1 y1 x2 y2 cls.
    """
    tiles = []
    for image_path, kept, removed in samples:
        image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        if image is None:
            continue
        scale = tile_width / image.shape[1]
        for frame, colour_of in ((kept, lambda c: CLASS_COLOURS[int(c) % len(CLASS_COLOURS)]), (removed, lambda c: REMOVED_COLOUR)):
            for row in frame.itertuples():
                cv2.rectangle(image, (int(row.x1), int(row.y1)), (int(row.x2), int(row.y2)), colour_of(row.cls), 2)
        tile = cv2.resize(image, (tile_width, int(round(image.shape[0] * scale))), interpolation=cv2.INTER_AREA)
        cv2.putText(tile, image_path.name[:60], (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
    if not tiles:
        tiles = [np.zeros((360, tile_width, 3), np.uint8)]
    height = max(t.shape[0] for t in tiles)
    tiles = [cv2.copyMakeBorder(t, 0, height - t.shape[0], 0, 0, cv2.BORDER_CONSTANT) for t in tiles]
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[i : i + columns]) for i in range(0, len(tiles), columns)]
    legend = np.zeros((28, rows[0].shape[1], 3), np.uint8)
    x = 6
    for index, name in enumerate([*classes, f"removed by {removed_by}"]):
        colour = REMOVED_COLOUR if index == len(classes) else CLASS_COLOURS[index % len(CLASS_COLOURS)]
        cv2.rectangle(legend, (x, 8), (x + 14, 22), colour, -1)
        cv2.putText(legend, name, (x + 20, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        x += 30 + 10 * len(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.vstack([legend, *rows]))
    return path


SHEET_TILE = 96  # px per contact-sheet tile
SHEET_COLUMNS = 10
SHEET_MAX_TILES = 60


def contact_sheet(paths: Iterable[Path], path: Path, captions: Sequence[str] | None = None, tile: int = SHEET_TILE,
                  columns: int = SHEET_COLUMNS) -> Path:
    """Square tiles of small crops in a grid, a caption under each (the file's name by default).
    Beside :func:`sample_grid`, which draws boxes and a class legend on full frames."""
    paths = list(paths)[:SHEET_MAX_TILES]
    captions = list(captions) if captions is not None else [p.stem[-18:] for p in paths]
    tiles = []
    for crop_path, caption in zip(paths, captions):
        image = cv2.imread(str(crop_path), cv2.IMREAD_COLOR)
        if image is None:
            continue
        scale = tile / max(image.shape[:2])
        image = cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                           interpolation=cv2.INTER_AREA)
        canvas = np.zeros((tile + 14, tile, 3), np.uint8)
        canvas[: image.shape[0], : image.shape[1]] = image
        cv2.putText(canvas, caption, (2, tile + 11), cv2.FONT_HERSHEY_SIMPLEX, 0.28, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(canvas)
    if not tiles:
        tiles = [np.zeros((tile + 14, tile, 3), np.uint8)]
    while len(tiles) % columns and len(tiles) > columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[i : i + columns]) for i in range(0, len(tiles), columns)]
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.vstack(rows), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return path


PREVIEW_WIDTH = 960  # px: readable in the asset page's metadata panel
PREVIEW_MAX_BYTES = 200_000
PREVIEW_QUALITIES = (80, 65, 50)


def jpeg_preview(path: Path, width: int = PREVIEW_WIDTH, max_bytes: int = PREVIEW_MAX_BYTES) -> bytes:
    """A JPEG of the picture at ``path``, at most ``width`` px wide and, where quality allows,
    ``max_bytes`` long: a 2-3 MB PNG sample grid becomes about 100 KB."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: cannot decode the picture for a preview")
    while True:
        if image.shape[1] > width:
            height = max(1, round(image.shape[0] * width / image.shape[1]))
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        for quality in PREVIEW_QUALITIES:
            ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if ok and len(encoded) <= max_bytes:
                return encoded.tobytes()
        if width <= 240:
            return encoded.tobytes()
        width = width * 3 // 4

