"""Captures as assets: one partition a day (the site's day, in its time zone), ingested every
night by a schedule for the day that just ended; past days are backfilled from the UI (select
the partitions of ``captures`` and materialize them).

The partitions start on ``CAPTURE_START`` and their zone is the ``capture_timezone`` setting as
the code location loads (the schedule fires at 02:00 there).
"""

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import dagster as dg
import pandas as pd

from hoban_pipelines.assets.evaluation import DEFAULT_MODEL
from hoban_pipelines.assets.training import PRODUCTION
from hoban_pipelines.assets.publishing import asset_name, lake_output, partition_of, publish, reused_version
from hoban_pipelines.captures.dedup import build_dedup
from hoban_pipelines.captures.ingest import Timestamping, build_captures
from hoban_pipelines.captures.pseudo_labels import build_pseudo_labels, matching_cache, review_scorer
from hoban_pipelines.captures.selection import SELECTION, SelectionRule, build_selection, labelled_snapshots, live_frames
from hoban_pipelines.core.lake import LakeHandle
from hoban_pipelines.core.settings import load_settings
from hoban_pipelines.datasets.near_duplicates import FROZEN_THRESHOLD
from hoban_pipelines.evaluation import builds
from hoban_pipelines.evaluation.engine import Detector, EvaluationError
from hoban_pipelines.promotion.decide import read_promotion
from hoban_pipelines.resources import LakeResource, SettingsResource, YoloRuntime
from hoban_pipelines.training.job import resolve_device

CAPTURE_START = "2026-01-01"
REVIEW_GROUP = "review"  # a review round: selection, pseudo-labels, CVAT packages
NIGHTLY_HOUR = 2  # local: the recorders have closed the day's folders
CAPTURE_DAYS = dg.DailyPartitionsDefinition(start_date=CAPTURE_START, timezone=load_settings().capture_timezone)


@dg.asset(group_name="captures", kinds={"parquet"}, partitions_def=CAPTURE_DAYS, deps=["capture_folders"],
          code_version="1")
def captures(context: dg.AssetExecutionContext, lake: LakeResource, settings: SettingsResource) -> dg.Output:
    """One day of every camera's frames (setting ``captures``: camera -> folder) as a manifest:
    path, camera, local time and where it was read from (file name, EXIF, mtime), size, sha256."""
    configured = settings.get()
    roots = {camera: configured.require(f"captures.{camera}", f"capture folder of {camera}")
             for camera in sorted(configured.captures)}
    rule = Timestamping(tuple(configured.capture_patterns), configured.capture_timezone)
    day = date.fromisoformat(partition_of(context))
    context.log.info(f"{asset_name(context)} {day}: reading {', '.join(f'{c} ({p})' for c, p in roots.items())}")
    return lake_output(publish(context, lake, lambda out: build_captures(roots, day, rule, out),
                               params={"timezone": rule.timezone, "patterns": list(rule.patterns),
                                       "roots": {camera: str(path) for camera, path in roots.items()}}))


class DedupConfig(dg.Config):
    threshold: float = FROZEN_THRESHOLD  # block-max MAD under which a frame repeats the last live one


@dg.asset(group_name="captures", kinds={"parquet"}, partitions_def=CAPTURE_DAYS, code_version="1")
def captures_dedup(context: dg.AssetExecutionContext, lake: LakeResource, config: DedupConfig,
                   captures: LakeHandle) -> dg.Output:
    """The day's frozen frames per camera (byte copies by sha256, re-encoded repeats by block-max MAD
    against the last live frame), the keep-list, the runs and the bytes deleting them would free.
    Nothing is deleted: `hoban captures prune --day DAY --dry-run`, then `--apply`, does that."""
    key = {"captures": captures.version, "threshold": config.threshold}
    reused = reused_version(context, lake, key)
    if reused:
        return lake_output(reused)
    folder = captures.resolve(lake.get().home)
    return lake_output(publish(context, lake, lambda out: build_dedup(folder, out, config.threshold),
                               params={"reuse_key": key}, upstream={"captures": captures.version}))


class SelectionConfig(dg.Config):
    """The team's rule by default: every ingested day, one frame per 10 s a camera, none within
    10 s of a go2k_manual snapshot, at most 3,000. ``review_value`` prefers frames the detector
    is unsure of (it runs the labelling model on every candidate first)."""

    first_day: str = ""  # YYYY-MM-DD; empty: the first ingested day
    last_day: str = ""  # YYYY-MM-DD; empty: the last ingested day
    interval_s: float = 10.0
    exclusion_s: float = 10.0
    target: int = 3000
    policy: str = "time_uniform"  # time_uniform | review_value
    uncertain_band: float = 0.15  # review_value: a detection this close to the adopted conf is a doubt
    labeller: str = PRODUCTION  # review_value: the model that values the frames (see pseudo_labels)


# Captures are labelled by the production model (its promoted version, at the inference setting
# adopted for that version), or by go2k_v2 before anything is promoted. Production is read at run
# time, not declared: the review loop is a cycle (labels -> review -> retrained model -> its
# evaluation -> production -> labels) and an asset graph has none; the versions used are in each
# version's upstream.
FIRST_LABELLER = DEFAULT_MODEL


@dg.asset(group_name=REVIEW_GROUP, kinds={"parquet"}, code_version="1",
          deps=["captures_dedup"])
def captures_selection(context: dg.AssetExecutionContext, lake: LakeResource, yolo: YoloRuntime,
                       config: SelectionConfig, settings: SettingsResource, go2k_manual: LakeHandle) -> dg.Output:
    """The live frames to pseudo-label and review, over a range of ingested days, in review
    order (cameras interleaved), with what each policy picked per camera."""
    rule = SelectionRule(config.interval_s, config.exclusion_s, config.target, config.policy, config.uncertain_band)
    days = [day for day in lake.recorded_partitions("captures_dedup")
            if (not config.first_day or day >= config.first_day) and (not config.last_day or day <= config.last_day)]
    home = lake.get().home
    dedups = {day: lake.recorded("captures_dedup", day) for day in days}
    frames = live_frames({day: handle.resolve(home) for day, handle in dedups.items()})
    labelled = labelled_snapshots(go2k_manual.resolve(home), settings.get().capture_timezone)
    upstream = {f"captures_dedup/{day}": handle.version for day, handle in dedups.items()}
    upstream["go2k_manual"] = go2k_manual.version
    scorer = labeller = None
    if rule.policy == "review_value":
        labeller = _labeller(lake, yolo, config.labeller)
        upstream.update(labeller.upstream)
    key = {"rule": rule.as_dict(), **upstream, **(labeller.key if labeller else {})}
    reused = reused_version(context, lake, key)
    if reused:
        return lake_output(reused)
    if labeller:
        scorer = review_scorer(labeller.detector, labeller.config, rule.uncertain_band, about=labeller.about)
    return lake_output(publish(context, lake, lambda out: build_selection(frames, labelled, rule, out, scorer),
                               params={"reuse_key": key, "days": days}, upstream=upstream))


@dataclass(frozen=True)
class _Labeller:
    """The labelling model's adopted setting, with what it was computed from; the detector loads on use."""

    config: dict
    key: dict  # what a labelling pass depends on, besides its frames
    about: dict
    upstream: dict
    model_root: Path
    export_root: Path
    backend: str
    device: str
    threads: int
    classes: list

    @property
    def detector(self) -> Detector:
        return builds.load_detector(self.backend, self.model_root, self.export_root, device=self.device,
                                    threads=self.threads)


def _labeller(lake: LakeResource, yolo: YoloRuntime, labeller: str) -> _Labeller:
    """``labeller``: 'production' (go2k_v2 before any promotion), or a model asset's current version."""
    store = lake.get()
    home = store.home
    if labeller == PRODUCTION and store.versions(PRODUCTION):
        production = lake.recorded(PRODUCTION)
        promoted = read_promotion(production.resolve(home))["production"]
        name, version, model_root = promoted["model"], promoted["version"], home / promoted["path"]
        chosen = {PRODUCTION: production.version}
    else:
        name = FIRST_LABELLER if labeller == PRODUCTION else labeller
        model = lake.recorded(name)
        version, model_root, chosen = model.version, model.resolve(home), {}
    adopted = lake.recorded("inference_config", name)
    export = lake.recorded("model_export", name)
    config = builds.read_inference_config(adopted.resolve(home))
    if config.get("model_version") != version:
        raise EvaluationError(f"inference_config for {name} was adopted for version {config.get('model_version')}, "
                              f"not the labelling version {version}: run evaluation_job for {name} first")
    device = resolve_device(yolo.device)
    backend = builds.resolve_backend("auto", device)
    versions = {name: version, "inference_config": adopted.version, "model_export": export.version, **chosen}
    return _Labeller(config=config, key={**versions, "backend": backend}, upstream=versions,
                     about={"model": name, "model_version": version, "inference_config": adopted.version,
                            "export_version": export.version},
                     model_root=model_root, export_root=export.resolve(home), backend=backend, device=device,
                     threads=yolo.threads, classes=lake.recorded(name).classes)


class PseudoLabelsConfig(dg.Config):
    labeller: str = PRODUCTION  # 'production' (go2k_v2 before any promotion) or a model asset, e.g. model_go2k_v2


@dg.asset(group_name=REVIEW_GROUP, kinds={"pytorch", "parquet"}, pool="gpu", code_version="1",
          ins={"selection": dg.AssetIn("captures_selection")})
def pseudo_labels(context: dg.AssetExecutionContext, lake: LakeResource, yolo: YoloRuntime,
                  config: PseudoLabelsConfig, selection: LakeHandle) -> dg.Output:
    """The selected frames labelled by the production model's adopted sliced inference + full-image gate:
    every box with whether the gate kept it, counts before and after the gate per camera and
    class, and the busiest frames as pictures."""
    labeller = _labeller(lake, yolo, config.labeller)
    key = {**labeller.key, "captures_selection": selection.version}
    reused = reused_version(context, lake, key)
    if reused:
        return lake_output(reused)
    root = selection.resolve(lake.get().home)
    frames = pd.read_parquet(root / SELECTION)
    cache = matching_cache(root, labeller.about, labeller.config)  # the review-value policy predicted them already
    classes = labeller.classes
    return lake_output(publish(
        context, lake,
        lambda out: build_pseudo_labels(frames, labeller.config, classes, out, cache=cache,
                                        detector=None if cache else labeller.detector, about=labeller.about),
        params={"reuse_key": key}, upstream={**labeller.upstream, "captures_selection": selection.version},
        classes=classes,
    ))
