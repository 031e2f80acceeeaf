"""Quality gates on a written dataset version (run as blocking Dagster asset checks).

Each function returns a list of human-readable problems; empty means the check passed.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from hoban_pipelines.core.lake import file_sha256
from hoban_pipelines.core.yolo_format import read_class_names
from hoban_pipelines.datasets.grouping import Grouping, leakage_links

MAX_LISTED = 20  # problems shown per check; the count says how many there are in all


def _listed(problems: list[str]) -> list[str]:
    extra = len(problems) - MAX_LISTED
    return problems[:MAX_LISTED] + ([f"... and {extra} more"] if extra > 0 else [])


def boxes_inside_images(boxes: pd.DataFrame, images: pd.DataFrame) -> list[str]:
    """Every box within its image's bounds with positive width and height."""
    sizes = images.set_index("image")[["width", "height"]]
    frame = boxes.join(sizes, on="image")
    bad = frame[
        (frame["x1"] < 0) | (frame["y1"] < 0) | (frame["x2"] > frame["width"]) | (frame["y2"] > frame["height"])
        | (frame["x2"] <= frame["x1"]) | (frame["y2"] <= frame["y1"]) | frame["width"].isna()
    ]
    return _listed([
        f"{row.image}: box [{row.x1:.1f}, {row.y1:.1f}, {row.x2:.1f}, {row.y2:.1f}] outside {row.width}x{row.height} or empty"
        for row in bad.itertuples()
    ])


def classes_valid(boxes: pd.DataFrame, classes: list[str]) -> list[str]:
    bad = boxes[(boxes["cls"] < 0) | (boxes["cls"] >= len(classes))]
    return _listed([f"{row.image}: class {row.cls} not in 0..{len(classes) - 1}" for row in bad.itertuples()])


def duplicate_content(images: pd.DataFrame) -> list[str]:
    """The same image bytes under two names would leak between splits and double-count."""
    groups = images.groupby("sha256")["image"].agg(list)
    return _listed([f"same content: {', '.join(sorted(names))}" for names in groups if len(names) > 1])


def files_present(root: Path, images: pd.DataFrame) -> list[str]:
    """Every image and label file a manifest references exists in the version."""
    missing = [
        rel for column in ("path", "label_path") if column in images
        for rel in images[column] if not (root / rel).is_file()
    ]
    return _listed([f"missing {rel}" for rel in missing])


def content_in_two_splits(entries: pd.DataFrame) -> list[str]:
    """The same image bytes (sha256) listed in more than one split."""
    splits = entries.groupby("sha256")["split"].nunique()
    leaked = entries[entries["sha256"].isin(splits[splits > 1].index)]
    return _listed([
        f"same content in {', '.join(sorted(group['split'].unique()))}: {', '.join(sorted(group['path'].unique())[:3])}"
        for _, group in leaked.groupby("sha256")
    ])


def linked_across_splits(entries: pd.DataFrame, pairs: list[tuple], why: str) -> list[str]:
    """Linked pairs (indices into ``entries``: near-duplicates, same burst) split across splits."""
    split, path = entries["split"].to_numpy(), entries["path"].to_numpy()
    return _listed([
        f"{why} across {split[i]}/{split[j]}: {path[i]} ~ {path[j]}"
        for i, j, *_ in pairs if split[i] != split[j]
    ])


def classes_in_every_split(box_counts: pd.DataFrame, classes: list[str]) -> list[str]:
    """``box_counts``: one row per split, a ``boxes_<class>`` column per class."""
    return _listed([
        f"no {name} boxes in {split}" for split, row in box_counts.iterrows() for name in classes
        if row.get(f"boxes_{name}", 0) == 0
    ])


def list_files_resolve(folder: Path) -> list[str]:
    """Every line of the list files names an existing image (``./`` lines are relative to the
    list file's folder, as ultralytics reads them)."""
    missing = [
        f"{listing.name}: {line}" for listing in sorted(folder.glob("*.txt"))
        for line in dict.fromkeys(listing.read_text().splitlines())
        if line and not (folder / line[2:] if line.startswith("./") else Path(line)).is_file()
    ]
    return _listed(missing)


def leakage_problems(root: Path, manifest: str, grouping: Grouping) -> list[str]:
    """Image content, near-duplicates or same-burst frames in two splits of the version at
    ``root``, linked with the ``grouping`` that version was split with."""
    entries = pd.read_parquet(Path(root) / "manifests" / manifest)
    entries = entries.assign(path=[p if Path(p).is_absolute() else str(Path(root) / p) for p in entries["path"]])
    entries = entries.drop_duplicates(["split", "path"]).reset_index(drop=True)
    if "sha256" not in entries:
        entries["sha256"] = [file_sha256(Path(p)) for p in entries["path"]]
    links = leakage_links(entries["path"], entries["camera"], entries["timestamp"], grouping)
    return (
        content_in_two_splits(entries)
        + linked_across_splits(entries, links.near_duplicates, f"near-duplicates (cosine >= {grouping.similarity:g})")
        + linked_across_splits(entries, links.bursts, f"same camera within {grouping.burst_seconds:g} s")
    )


def class_split_problems(root: Path, manifest: str) -> list[str]:
    """Every class of the version's data.yaml has boxes in every split."""
    classes = read_class_names(Path(root) / "data.yaml")
    entries = pd.read_parquet(Path(root) / "manifests" / manifest)
    table = entries.groupby("split")[[f"boxes_{name}" for name in classes]].sum()
    return classes_in_every_split(table, classes)
