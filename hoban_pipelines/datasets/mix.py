"""Training mixes as image-list files: the go2k_v2 mix.

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

from hoban_pipelines.core.report import BuildReport, Table
from hoban_pipelines.core.yolo_format import (
    TRAIN, VAL, YoloFormatError, YoloListing, image_size, list_yolo_dataset, parse_label_file, write_data_yaml,
    write_list_files,
)
from hoban_pipelines.datasets.split import SPLIT_MANIFEST

MIX_MANIFEST = "entries.parquet"


@dataclass(frozen=True)
class MixParameters:
    """The team's go2k_v2 numbers are the defaults."""

    base_train: int = 8000
    base_val: int = 1000
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


def assemble_mix(base: YoloListing, domain: pd.DataFrame, params: MixParameters) -> MixResult:
    """Choose the mix's entries. ``domain`` has path, label_path, split (train/val), absolute paths,
    and optionally source and copies per row."""
    warnings: list[str] = []
    unreadable: list[tuple[str, str]] = []
    splits = base.entries["split"]
    base_train = _sample(base.entries[splits == TRAIN], params.base_train, "base train", params.seed, warnings, unreadable)
    base_val = _sample(base.entries[splits == VAL], params.base_val, "base val", params.seed + 1, warnings, unreadable)
    if unreadable:
        shown = "; ".join(f"{path} ({why})" for path, why in unreadable[:5])
        warnings.append(f"{len(unreadable)} base image(s) cannot be read and were skipped: {shown}")
    # domain rows may name their own source and copies (reviewed captures beside go2k); go2k's by default
    domain = domain.assign(
        source=domain["source"].fillna("go2k") if "source" in domain else "go2k",
        copies=domain["copies"].fillna(params.domain_oversample) if "copies" in domain else params.domain_oversample,
    )
    parts = [
        base_train.assign(source="base", split=TRAIN, copies=1),
        base_val.assign(source="base", split=VAL, copies=1),
        domain[domain["split"] == TRAIN],
        domain[domain["split"] == VAL].assign(copies=1),
    ]
    columns = ["source", "split", "path", "label_path", "copies", "camera", "timestamp"]
    entries = pd.concat([p.reindex(columns=columns) for p in parts], ignore_index=True)
    return MixResult(entries=entries, warnings=warnings, unreadable=unreadable)


def write_mix(result: MixResult, classes: list[str], out_dir: Path) -> dict:
    """List files, data.yaml and the entries manifest; returns counts per source, split and class.
    A relative path or label path is relative to ``out_dir`` (files the mix carries itself)."""
    write_data_yaml(out_dir, write_list_files(out_dir, result.entries), classes)
    labels = [Path(label) if Path(label).is_absolute() else out_dir / label for label in result.entries["label_path"]]
    boxes = np.array([
        np.bincount([b[0] for b in parse_label_file(label, len(classes))], minlength=len(classes))
        if label.is_file() else np.zeros(len(classes), int)
        for label in labels
    ]).reshape(len(result.entries), len(classes))
    entries = result.entries.assign(**{f"boxes_{name}": boxes[:, i] for i, name in enumerate(classes)})
    (out_dir / "manifests").mkdir(exist_ok=True)
    entries.to_parquet(out_dir / "manifests" / MIX_MANIFEST, index=False)
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
    share = float(train.loc[train["source"] != "base", "entries"].sum() / max(train["entries"].sum(), 1))
    return {
        "per_split_source": per,
        "train_entries": int(train["entries"].sum()),
        "val_entries": int(weighted.loc[weighted["split"] == VAL, "entries"].sum()),
        "domain_share_of_training": round(share, 4),
    }



def build_mix(base_root: Path, split_root: Path, classes: list[str], params: MixParameters, out_dir: Path) -> BuildReport:
    """The go2k_v2 mix of the base dataset at ``base_root`` and the go2k split at ``split_root``."""
    base = list_yolo_dataset(base_root)
    if base.classes != classes:
        raise YoloFormatError(
            f"{base.root / 'data.yaml'} names {base.classes} but the project's classes are {classes}; "
            "remap the base dataset with a recipe (recipes/) or fix 'classes' in the settings"
        )
    domain = pd.read_parquet(Path(split_root) / "manifests" / SPLIT_MANIFEST)
    result = assemble_mix(base, domain, params)
    counts = write_mix(result, classes, out_dir)
    rows = [{"split/source": key, **values} for key, values in counts["per_split_source"].items()]
    return BuildReport(
        counts={"train_entries": counts["train_entries"], "val_entries": counts["val_entries"]},
        details={
            "mix": Table(rows, ["split/source", "entries", *[f"boxes_{c}" for c in classes]]),
            "domain_share_of_training": counts["domain_share_of_training"],
            "unreadable_images_skipped": len(result.unreadable),
        },
        warnings=result.warnings,
    )
