"""Which checkpoint is the production model, and why.

A candidate is promoted only when its sliced F1 at its own adopted setting (its report card, on
the fixed go2k valid split) is at least the production model's minus ``tolerance``; the first
model ever is promoted. Both cards must come from the same evaluation-set version, or the
comparison says so instead of comparing numbers measured on different frames. A promotion is a
small version that points at the candidate's checkpoint version (nothing is copied); a rejected
candidate stays in the lake, evaluated and visible. Rolling back is a promotion of a named
earlier production version, recorded as such.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hoban_pipelines.core.report import BuildReport, Table

PROMOTION_FILE = "promotion.json"


class PromotionError(ValueError):
    """A promotion that cannot be decided as asked; the message says what to materialize first."""


@dataclass(frozen=True)
class Contender:
    """A checkpoint version with the card that measured it."""

    model: str  # the model asset
    version: str  # its lake version
    path: str  # the version folder, relative to HOBAN_HOME
    card_version: str
    evaluation_data: str  # the evaluation set's version the card was scored on
    f1: float
    precision: float
    recall: float
    setting: str

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Contender:
        return cls(**{key: data[key] for key in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    gain: float | None  # candidate F1 minus production F1; None for the first model


def decide(candidate: Contender, production: Contender | None, tolerance: float) -> Decision:
    """Promote the candidate when it is at least as good as production, within ``tolerance`` F1."""
    if tolerance < 0:
        raise PromotionError(f"tolerance must be 0 or more (F1 a candidate may lose), got {tolerance}")
    if production is None:
        return Decision(True, "the first model ever promoted", None)
    if production.evaluation_data != candidate.evaluation_data:
        raise PromotionError(
            f"{candidate.model} was scored on evaluation set {candidate.evaluation_data} and production "
            f"({production.model}) on {production.evaluation_data}: evaluate both on the same go2k_split version "
            f"(run evaluation_job for {production.model} again) before comparing")
    gain = candidate.f1 - production.f1
    if gain >= -tolerance:
        return Decision(True, f"F1 {candidate.f1:.3f} against production's {production.f1:.3f} "
                              f"({gain:+.3f}, tolerance {tolerance:g})", gain)
    return Decision(False, f"F1 {candidate.f1:.3f} is {-gain:.3f} below production's {production.f1:.3f} "
                           f"(tolerance {tolerance:g}): not promoted", gain)


def read_promotion(version_dir: Path) -> dict[str, Any]:
    return json.loads((Path(version_dir) / PROMOTION_FILE).read_text())


def build_promotion(promoted: Contender, previous: Contender | None, reason: str, out_dir: Path) -> BuildReport:
    """The production version: a pointer at ``promoted``'s checkpoint, with what it replaced and why."""
    record = {"production": asdict(promoted), "previous": asdict(previous) if previous else None, "reason": reason}
    (Path(out_dir) / PROMOTION_FILE).write_text(json.dumps(record, indent=2))
    rows = [{"role": role, "model": c.model, "version": c.version, "f1": c.f1, "precision": c.precision,
             "recall": c.recall, "setting": c.setting} for role, c in (("production", promoted), ("previous", previous))
            if c is not None]
    return BuildReport(details={
        "model": promoted.model, "model_version": promoted.version, "checkpoint": promoted.path,
        "f1": promoted.f1, "reason": reason,
        "contenders": Table(rows, ["role", "model", "version", "f1", "precision", "recall", "setting"]),
    })
