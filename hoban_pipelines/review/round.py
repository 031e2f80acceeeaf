"""A review round's images: go2k_manual with its hand labels, then the pseudo-labelled captures.

go2k_manual goes first, as the team's part 1 did (go2k 604 + captures 598): its labels get a
second look beside the captures, and reviewers see the hand labels as the house standard before
the model's. Captures come in the selection's order (cameras interleaved) with the boxes the
full-image gate kept, each carrying its score.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from hoban_pipelines.captures.pseudo_labels import BOXES
from hoban_pipelines.captures.selection import SELECTION
from hoban_pipelines.core.report import BuildReport
from hoban_pipelines.evaluation.predictions import load_predictions
from hoban_pipelines.review.packages import CAPTURES, GO2K_MANUAL, ReviewBox, ReviewImage, build_review_packages


def labelled_images(root: Path, classes: list[str]) -> list[ReviewImage]:
    """go2k_manual's images (its ``manifests``) with their boxes, unscored: a person drew them."""
    images = pd.read_parquet(Path(root) / "manifests" / "images.parquet")
    boxes = pd.read_parquet(Path(root) / "manifests" / "boxes.parquet")
    by_image = {name: group for name, group in boxes.groupby("image", sort=False)}
    empty = boxes.iloc[0:0]
    return [ReviewImage(path=Path(root) / row.path, name=f"go2k/{row.image}", source=GO2K_MANUAL,
                        width=int(row.width), height=int(row.height),
                        camera=row.camera if isinstance(row.camera, str) else None,
                        boxes=tuple(ReviewBox(classes[int(b.cls)], float(b.x1), float(b.y1), float(b.x2), float(b.y2),
                                              None) for b in by_image.get(row.image, empty).itertuples()))
            for row in images.itertuples()]


def pseudo_labelled_images(selection_root: Path, pseudo_root: Path) -> list[ReviewImage]:
    """The selected captures in review order, with the boxes the gate kept and their scores."""
    selection = pd.read_parquet(Path(selection_root) / SELECTION).sort_values("order")
    boxes = pd.read_parquet(Path(pseudo_root) / BOXES)
    boxes = boxes[boxes["kept_by_gate"]]
    frames = load_predictions(Path(pseudo_root)).frames.set_index("image")
    by_path = {path: group for path, group in boxes.groupby("path", sort=False)}
    empty = boxes.iloc[0:0]
    images = []
    for row in selection.itertuples():
        size = frames.loc[row.path]
        if size["width"] <= 0:
            continue  # unreadable when pseudo-labelled: nothing to review
        images.append(ReviewImage(
            path=Path(row.path), name=f"captures/{row.camera}/{Path(row.path).name}", source=CAPTURES,
            width=int(size["width"]), height=int(size["height"]), camera=row.camera,
            boxes=tuple(ReviewBox(b.label, float(b.x1), float(b.y1), float(b.x2), float(b.y2), float(b.score))
                        for b in by_path.get(row.path, empty).itertuples())))
    return images


def build_review_round(labelled_root: Path | None, selection_root: Path, pseudo_root: Path, classes: list[str],
                       out_dir: Path, max_images: int) -> BuildReport:
    """The round's CVAT task packages (``labelled_root`` None: captures only)."""
    images = [*(labelled_images(labelled_root, classes) if labelled_root else []),
              *pseudo_labelled_images(selection_root, pseudo_root)]
    return build_review_packages(images, classes, out_dir, max_images=max_images)
