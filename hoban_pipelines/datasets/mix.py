"""Training mixes as image-list files: the go2k split and the go2k_v2 mix.

A mix copies no image bytes. It writes ultralytics list files (one image path per line; a
path repeated k times is oversampled k times) and a ``data.yaml`` without ``path``, which
ultralytics then resolves against the yaml's own folder. List entries point at the exact
upstream versions (a go2k_manual version in the lake, the base dataset's folder), so a mix
records precisely which images, from where, in which split, how many times.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from hoban_pipelines.datasets import near_duplicates as dedup
from hoban_pipelines.datasets.split import grouped_stratified_split, time_groups
from hoban_pipelines.core.yolo_format import YoloListing, image_size, parse_label_file

TRAIN, VALID = "train", "valid"


@dataclass(frozen=True)
class SplitRecipe:
    valid_fraction: float = 0.2
    seed: int = 0
    burst_seconds: float = 60.0  # frames of one camera this close are one group
    similarity: float = dedup.DEFAULT_THRESHOLD  # thumbnails this similar are one group


def split_manual(images: pd.DataFrame, boxes: pd.DataFrame, root: Path, n_classes: int, recipe: SplitRecipe) -> pd.DataFrame:
    """go2k_manual's images with ``split`` (train/valid) and ``group`` columns.

    ``images`` has image, path (relative to ``root``), camera, timestamp; ``boxes`` image, cls.
    """
    thumbs = dedup.thumbnails([root / p for p in images["path"]])
    # one camera's frames all look alike to a thumbnail: they are grouped by time instead
    pairs = dedup.near_duplicate_pairs(thumbs, recipe.similarity, cameras=list(images["camera"]))
    edges = time_groups(images["camera"], images["timestamp"], recipe.burst_seconds)
    groups = dedup.union_groups(len(images), [(i, j) for i, j, _ in pairs], edges)
    split = grouped_stratified_split(
        images, boxes, groups, {TRAIN: 1 - recipe.valid_fraction, VALID: recipe.valid_fraction}, n_classes, recipe.seed
    )
    return images.assign(split=split.to_numpy(), group=groups)


def with_box_counts(images: pd.DataFrame, boxes: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """``images`` with a ``boxes_<class>`` column per class (from ``boxes``: image, cls)."""
    per = boxes.groupby(["image", "cls"]).size().unstack(fill_value=0)
    return images.assign(**{
        f"boxes_{name}": images["image"].map(per[i] if i in per else {}).fillna(0).astype(int).to_numpy()
        for i, name in enumerate(classes)
    })


@dataclass(frozen=True)
class MixRecipe:
    """The team's go2k_v2 numbers are the defaults."""

    base_train: int = 8000
    base_valid: int = 1000
    domain_oversample: int = 8
    seed: int = 0


@dataclass
class MixResult:
    entries: pd.DataFrame  # source, split, path, label_path, copies, camera, timestamp (domain only)
    warnings: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), skipped


def _sample(frame: pd.DataFrame, wanted: int, what: str, seed: int, warnings: list[str], unreadable: list) -> pd.DataFrame:
    """``wanted`` readable images in a seeded order; unreadable ones are skipped and listed."""
    order = np.random.default_rng(seed).permutation(len(frame))
    picked: list[int] = []
    for position in order:
        if len(picked) == wanted:
            break
        problem = image_size(Path(frame["path"].iloc[position]))
        if isinstance(problem, str):
            unreadable.append((frame["path"].iloc[position], problem))
        else:
            picked.append(position)
    if len(picked) < wanted:
        warnings.append(f"{what}: asked for {wanted} images but there are {len(picked)} readable; taking all {len(picked)}")
    return frame.iloc[np.sort(picked)]


def assemble_mix(base: YoloListing, domain: pd.DataFrame, recipe: MixRecipe) -> MixResult:
    """Choose the mix's entries. ``domain`` has path, label_path, split (train/valid), absolute paths."""
    warnings: list[str] = []
    unreadable: list[tuple[str, str]] = []
    splits = base.entries["split"]
    base_train = _sample(base.entries[splits == "train"], recipe.base_train, "base train", recipe.seed, warnings, unreadable)
    base_valid = _sample(base.entries[splits == "val"], recipe.base_valid, "base valid", recipe.seed + 1, warnings, unreadable)
    if unreadable:
        shown = "; ".join(f"{path} ({why})" for path, why in unreadable[:5])
        warnings.append(f"{len(unreadable)} base image(s) cannot be read and were skipped: {shown}")
    parts = [
        base_train.assign(source="base", split=TRAIN, copies=1),
        base_valid.assign(source="base", split=VALID, copies=1),
        domain[domain["split"] == TRAIN].assign(source="go2k", copies=recipe.domain_oversample),
        domain[domain["split"] == VALID].assign(source="go2k", copies=1),
    ]
    columns = ["source", "split", "path", "label_path", "copies", "camera", "timestamp"]
    entries = pd.concat([p.reindex(columns=columns) for p in parts], ignore_index=True)
    return MixResult(entries=entries, warnings=warnings, unreadable=unreadable)


def write_lists(entries: pd.DataFrame, out_dir: Path, classes: list[str]) -> None:
    """``train.txt``/``valid.txt`` (each path ``copies`` times) and a ``data.yaml`` that points at them."""
    copies = entries["copies"] if "copies" in entries else pd.Series(1, index=entries.index)
    for split in (TRAIN, VALID):
        chosen = entries["split"] == split
        lines = [path for path, k in zip(entries.loc[chosen, "path"], copies[chosen]) for _ in range(int(k))]
        (out_dir / f"{split}.txt").write_text("".join(f"{line}\n" for line in lines))
    (out_dir / "data.yaml").write_text(
        yaml.safe_dump({"train": f"{TRAIN}.txt", "val": f"{VALID}.txt", "names": dict(enumerate(classes))}, sort_keys=False)
    )


def write_mix(result: MixResult, classes: list[str], out_dir: Path) -> dict:
    """List files, data.yaml and the entries manifest; returns counts per source, split and class."""
    write_lists(result.entries, out_dir, classes)
    boxes = np.array([
        np.bincount([b[0] for b in parse_label_file(Path(label), len(classes))], minlength=len(classes))
        if Path(label).is_file() else np.zeros(len(classes), int)
        for label in result.entries["label_path"]
    ]).reshape(len(result.entries), len(classes))
    entries = result.entries.assign(**{f"boxes_{name}": boxes[:, i] for i, name in enumerate(classes)})
    (out_dir / "manifests").mkdir(exist_ok=True)
    entries.to_parquet(out_dir / "manifests" / "entries.parquet", index=False)
    return mix_counts(entries, classes)


def mix_counts(entries: pd.DataFrame, classes: list[str]) -> dict:
    """Images (list entries, oversampling counted) and boxes per source and split, and the domain share."""
    weighted = entries.assign(
        entries=entries["copies"],
        **{f"boxes_{name}": entries[f"boxes_{name}"] * entries["copies"] for name in classes},
    )
    table = weighted.groupby(["split", "source"])[["entries", *[f"boxes_{n}" for n in classes]]].sum()
    per = {f"{split}/{source}": {k: int(v) for k, v in row.items()} for (split, source), row in table.iterrows()}
    train = weighted[weighted["split"] == TRAIN]
    share = float(train.loc[train["source"] == "go2k", "entries"].sum() / max(train["entries"].sum(), 1))
    return {
        "per_split_source": per,
        "train_entries": int(train["entries"].sum()),
        "valid_entries": int(weighted.loc[weighted["split"] == VALID, "entries"].sum()),
        "domain_share_of_training": round(share, 4),
    }

