"""Every setting the team studied, scored from one cache of raw detections, and the one adopted.

A setting is a confidence threshold, a sahi merge and, optionally, the full-image gate, applied in
that order to the cached sliced detections (``final_detections``). Because the cache holds every
raw tile detection above a low floor, a setting costs a merge and a matching, not an inference
pass: the team's 40-run postprocess study re-ran sahi 40 times; here it is seconds.

Two facts keep it fast and exact:
- Greedy matching in score order is prefix-consistent, so one matching at the floor gives TP/FP
  at every higher confidence (``metrics.counts_by_conf``).
- NMS commutes with a confidence threshold (a box is suppressed only by a higher-scored one), so
  the conf sweep of an NMS setting is one merge and one matching. A merge (NMM, GREEDYNMM) grows
  boxes from lower-scored members and is run again at each confidence.

The adopted setting follows a stated policy (``Policy``): by default the highest precision among
settings that keep recall at or above a minimum (a wrong alarm costs more than a miss on site),
or the best F1 when none does, or always the best F1. It is chosen in two steps: the confidence
and merge over the postprocess sweep, then the gate (or none) over the gate sweep at that setting.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from itertools import product
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from hoban_pipelines.evaluation.engine import EvaluationError
from hoban_pipelines.evaluation.gate import Gate, anchor_distances, apply_gate
from hoban_pipelines.evaluation.metrics import Scores, counts_by_conf, match, score, score_subsets
from hoban_pipelines.evaluation.postprocess import METHODS, METRICS, Postprocess, postprocess_frames
from hoban_pipelines.evaluation.predictions import EvaluationSet, Predictions, check_classes

# the team's table (0.15 .. 0.50 by 0.05), and the finer grid the curves are drawn from
TEAM_CONFS = tuple(round(0.15 + 0.05 * step, 2) for step in range(8))
FINE_CONFS = tuple(round(0.05 + 0.01 * step, 2) for step in range(91))
TEAM_POSTPROCESS = Postprocess("NMS", "IOS", 0.4)  # adopted by the team
MERGE_THRESHOLDS = (0.3, 0.4, 0.5)
TEAM_GATE = Gate(0.20, 40.0)
GATE_CONFS = (0.10, 0.15, 0.20, 0.25, 0.30, 0.40)
GATE_RADII = (10.0, 20.0, 30.0, 40.0, 60.0, 80.0, 120.0, 160.0)
POLICIES = ("precision_at_recall", "best_f1")


@dataclass(frozen=True)
class Setting:
    """What turns cached raw detections into final ones."""

    conf: float
    postprocess: Postprocess = TEAM_POSTPROCESS
    gate: Gate | None = None

    @property
    def name(self) -> str:
        return f"conf {self.conf:g}, {self.postprocess.name}, " + (f"gate {self.gate.name}" if self.gate else "no gate")

    def as_dict(self) -> dict[str, Any]:
        return {"conf": self.conf, "postprocess": asdict(self.postprocess),
                "gate": asdict(self.gate) if self.gate else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Setting":
        gate = data.get("gate")
        return cls(float(data["conf"]), Postprocess(**data["postprocess"]), Gate(**gate) if gate else None)


@dataclass(frozen=True)
class Policy:
    kind: str = "precision_at_recall"
    min_recall: float = 0.85

    def __post_init__(self) -> None:
        if self.kind not in POLICIES:
            raise ValueError(f"policy {self.kind!r} is not one of {list(POLICIES)}")
        if not 0 <= self.min_recall <= 1:
            raise ValueError(f"min_recall {self.min_recall!r} must be in [0, 1]")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def choose(self, rows: pd.DataFrame) -> tuple[int, str]:
        """The index of the row this policy picks (columns precision, recall, f1) and why, in words."""
        if rows.empty:
            raise ValueError("no settings to choose from")
        by_f1 = rows.sort_values(["f1", "precision"], ascending=False, kind="stable")
        if self.kind == "best_f1":
            return by_f1.index[0], "the best F1"
        enough = rows[rows["recall"] >= self.min_recall]
        if enough.empty:
            return by_f1.index[0], (f"the best F1: no setting keeps recall >= {self.min_recall:g} "
                                    f"(the best recall is {rows['recall'].max():.3f})")
        best = enough.sort_values(["precision", "f1"], ascending=False, kind="stable")
        return best.index[0], f"the highest precision with recall >= {self.min_recall:g}"


def evaluation_inputs(predictions: Predictions, data: EvaluationSet, model: str, dataset: str) -> tuple[pd.DataFrame, list[str]]:
    """The truth of the frames the cache could read, named as the cache names them, and those
    frames; an error if the classes differ or the cache and the labels share no frame.

    Frames are paired by their files' resolved paths, so a cache made from an image folder
    scores against a dataset that names the same files differently."""
    check_classes(predictions.classes, data.classes, model, dataset)
    readable = predictions.frames[predictions.frames["width"] > 0]
    cache_name = {str(Path(path).resolve()): name for name, path in zip(readable["image"], readable["path"])}
    renamed = {name: cache_name.get(str(Path(path).resolve())) for name, path in data.images}
    covered = {name: ours for name, ours in renamed.items() if ours is not None}
    if not covered:
        raise EvaluationError(f"the predictions of {model} cover none of {dataset}'s {len(data.images)} labelled frames "
                              "(paired by file path): predict on the same image files")
    truth = data.truth[data.truth["image"].isin(covered)].assign(image=lambda t: t["image"].map(covered))
    return truth.reset_index(drop=True), sorted(covered.values())


def at_conf(detections: pd.DataFrame, conf: float) -> pd.DataFrame:
    """The detections scoring ``conf`` or more, compared in float64 as ``metrics`` counts them:
    cached scores are float32, and float32(0.35) is below 0.35 (a float32 comparison keeps it)."""
    return detections[detections["score"].to_numpy(np.float64) >= conf]


def final_detections(predictions: Predictions, setting: Setting) -> pd.DataFrame:
    sliced = at_conf(predictions.sliced, setting.conf)
    return apply_gate(postprocess_frames(sliced, setting.postprocess), predictions.full, setting.gate)


@dataclass
class Sweep:
    """One sweep's table (a row a setting) and what else it measured."""

    rows: pd.DataFrame
    extra: dict[str, Any] = field(default_factory=dict)


def conf_sweep(predictions: Predictions, truth: pd.DataFrame, frames: list[str], classes: Sequence[str],
               postprocess: Postprocess = TEAM_POSTPROCESS, confs: Sequence[float] = FINE_CONFS) -> Sweep:
    """P, R, F1, TP/FP/FN at every confidence in ``confs`` (per class and "all") after one merge,
    plus the PR curve and mAP of the merged detections."""
    confs = sorted(set(confs) | set(TEAM_CONFS))
    if postprocess.method == "NMS":
        merged = postprocess_frames(predictions.sliced, postprocess)
        table = counts_by_conf(match(merged, truth, images=frames), confs, classes)
    else:
        parts = []
        for conf in confs:
            merged = postprocess_frames(at_conf(predictions.sliced, conf), postprocess)
            part = counts_by_conf(match(merged, truth, images=frames), [conf], classes)
            parts.append(part)
        merged = postprocess_frames(predictions.sliced, postprocess)
        table = pd.concat(parts, ignore_index=True)
    floor = score(merged, truth, frames, classes)
    return Sweep(table, {"map50": floor.map50, "map50_95": floor.map50_95, "postprocess": postprocess.name,
                         "pr_curve": pr_curve(table)})


def pr_curve(table: pd.DataFrame) -> pd.DataFrame:
    """Precision against recall over the conf grid, "all" classes."""
    return table[table["class"] == "all"].sort_values("conf")[["conf", "precision", "recall", "f1"]]


def postprocess_settings() -> list[Postprocess]:
    """NMS, NMM and GREEDYNMM x IOU and IOS x 0.3 / 0.4 / 0.5: 18 merges (the team's 10 among them)."""
    return [Postprocess(method, metric, threshold) for method, metric, threshold in product(METHODS, METRICS, MERGE_THRESHOLDS)]


def postprocess_sweep(predictions: Predictions, truth: pd.DataFrame, frames: list[str], classes: Sequence[str],
                      settings: Sequence[Postprocess] | None = None, confs: Sequence[float] = TEAM_CONFS) -> Sweep:
    """Every merge at every confidence: a row per (merge, conf)."""
    rows = []
    for setting in settings or postprocess_settings():
        merge = {"method": setting.method, "metric": setting.metric, "threshold": setting.threshold}
        if setting.method == "NMS":  # one merge and one matching serve every confidence
            counts = counts_by_conf(match(postprocess_frames(predictions.sliced, setting), truth, images=frames),
                                    confs, classes)
            rows += [{**merge, "conf": float(item.conf), "precision": item.precision, "recall": item.recall,
                      "f1": item.f1, "tp": int(item.tp), "fp": int(item.fp), "fn": int(item.fn)}
                     for item in counts[counts["class"] == "all"].itertuples()]
            continue
        for conf in confs:  # a merge grows boxes from lower-scored members: merge again at each confidence
            merged = postprocess_frames(at_conf(predictions.sliced, conf), setting)
            scored = score_subsets(merged, truth, frames, [np.ones(len(merged), bool)])[0]
            rows.append({**merge, "conf": float(conf), "precision": scored.precision, "recall": scored.recall,
                         "f1": scored.f1, "tp": scored.tp, "fp": scored.fp, "fn": scored.fn})
    return Sweep(pd.DataFrame(rows))


def gate_sweep(predictions: Predictions, truth: pd.DataFrame, frames: list[str], classes: Sequence[str],
               base: Setting, confs: Sequence[float] = GATE_CONFS, radii: Sequence[float] = GATE_RADII,
               class_agnostic: bool = TEAM_GATE.class_agnostic) -> Sweep:
    """``base`` without the gate and with every gate conf x radius (48 by default), with recall by truth size;
    ``class_agnostic``: a full-image detection of any class vouches for a sliced one (the team's), or its own only.

    One merge serves every gate: the distances to the full-image detections are measured once per gate conf,
    and the gated subsets are matched on one scene (``metrics.score_subsets``)."""
    merged = postprocess_frames(at_conf(predictions.sliced, base.conf), base.postprocess)
    nearest = anchor_distances(merged, predictions.full, confs, class_agnostic)
    gates: list[Gate | None] = [None, *(Gate(conf, radius, class_agnostic) for conf, radius in product(confs, radii))]
    keeps = [np.ones(len(merged), bool), *(nearest[:, k] <= radius for k, radius in product(range(len(confs)), radii))]
    rows, sizes = [], []
    for gate, scores in zip(gates, score_subsets(merged, truth, frames, keeps)):
        name = gate.name if gate else "no gate"
        rows.append({"gate": name, "gate_conf": gate.conf if gate else None, "radius": gate.radius if gate else None,
                     "class_agnostic": class_agnostic, "precision": scores.precision, "recall": scores.recall, "f1": scores.f1, "tp": scores.tp,
                     "fp": scores.fp, "fn": scores.fn})
        sizes += [{"gate": name, **bucket} for bucket in scores.sizes]
    return Sweep(pd.DataFrame(rows), {"sizes": pd.DataFrame(sizes), "base": base.name})


@dataclass(frozen=True)
class Adoption:
    setting: Setting
    policy: Policy
    reasons: list[str]
    with_gate: Scores
    without_gate: Scores


def base_setting(postprocess_rows: pd.DataFrame, policy: Policy) -> tuple[Setting, str]:
    """The confidence and merge ``policy`` picks from the postprocess sweep, and why."""
    index, reason = policy.choose(postprocess_rows)
    row = postprocess_rows.loc[index]
    return Setting(float(row["conf"]), Postprocess(row["method"], row["metric"], float(row["threshold"]))), reason


def adopt(predictions: Predictions, truth: pd.DataFrame, frames: list[str], classes: Sequence[str],
          postprocess_rows: pd.DataFrame, gate_rows: pd.DataFrame, policy: Policy) -> Adoption:
    """The setting ``policy`` picks: confidence and merge from the postprocess sweep, then the gate
    (or none) from the gate sweep; scored without a gate and with its gate (the team's C 0.20 /
    R 40 when it adopts none, so the card always shows what the gate would do)."""
    base, merge_reason = base_setting(postprocess_rows, policy)
    index, gate_reason = policy.choose(gate_rows)
    chosen = gate_rows.loc[index]
    agnostic = bool(chosen["class_agnostic"])
    gate = None if pd.isna(chosen["gate_conf"]) else Gate(float(chosen["gate_conf"]), float(chosen["radius"]), agnostic)
    setting = Setting(base.conf, base.postprocess, gate)
    plain = Setting(base.conf, base.postprocess, None)
    gated = Setting(base.conf, base.postprocess, gate or replace(TEAM_GATE, class_agnostic=agnostic))
    return Adoption(
        setting, policy, [f"conf and merge: {merge_reason} ({base.name})",
                          f"gate: {gate_reason} ({'gate ' + gate.name if gate else 'no gate'})"],
        with_gate=score(final_detections(predictions, gated), truth, frames, classes),
        without_gate=score(final_detections(predictions, plain), truth, frames, classes),
    )


def grid(rows: pd.DataFrame, index: list[str], columns: str, value: str = "f1") -> pd.DataFrame:
    """A sweep table pivoted for a heatmap."""
    return rows.pivot_table(index=index, columns=columns, values=value, aggfunc="first").sort_index()
