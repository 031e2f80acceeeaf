"""The review loop as assets and sensors: a reviewer's CVAT export lands in the drop folder, its
labels merge, the model retrains, the better model is promoted, with no button between.

- ``cvat_completed_tasks_sensor`` (on by default; idle without a CVAT server) exports each review
  task marked completed on the team's CVAT server into the drop folder.
- ``reviewed_exports_sensor`` (on by default) watches the ``review_drop`` folder. A file is
  taken once it held still for a tick (see ``review/drop_folder.py``), keyed by its content
  hash: a dynamic partition of ``reviewed_exports`` and a run of ``review_import_job`` whose
  run key holds the hash, so a daemon restart, a copy of the same file or a re-touched file never
  trigger again and a changed file does.
- ``review_import_job`` keeps the export in the lake (``reviewed_exports``) and reads it back
  against the review packages (``reviewed_labels``: the labels, and what reviewers changed).
- ``retrain_after_review`` (a run-status sensor, on by default) launches ``retrain_job`` when an
  import succeeds: ``go2k_v4_mix`` (go2k_v2's mix plus every reviewed capture so far),
  ``model_go2k_v4`` (from the production checkpoint), its sliced evaluation, and
  ``production_model``, whose blocking check decides the promotion.
"""

import json
from pathlib import Path

import dagster as dg

from hoban_pipelines.assets.datasets import grouping_of, split_dataset_checks
from hoban_pipelines.assets.publishing import lake_output, partition_of, publish
from hoban_pipelines.assets.run_config import config_class, parameters_of
from hoban_pipelines.assets.training import RETRAINING_GROUP
from hoban_pipelines.core.fingerprints import fingerprint_folder
from hoban_pipelines.core.lake import LakeHandle, file_sha256, link_or_copy
from hoban_pipelines.core.report import BuildReport
from hoban_pipelines.captures.ingest import Timestamping
from hoban_pipelines.datasets.mix import MIX_MANIFEST, MixParameters
from hoban_pipelines.resources import CvatResource, LakeResource, SettingsResource
from hoban_pipelines.review.changes import build_reviewed_labels
from hoban_pipelines.review.drop_folder import KEY_LENGTH, DropCursor, DropFolderError, is_export_name, scan
from hoban_pipelines.review.mix import build_reviewed_mix
from hoban_pipelines.review.cvat_server import fetch_completed_tasks
from hoban_pipelines.review.packages import TASK_PREFIX, package_with

REVIEWED_EXPORTS = dg.DynamicPartitionsDefinition(name="reviewed_exports")


class ReviewedExportConfig(dg.Config):
    path: str = ""  # the export file; empty: found in the drop folder by the partition's hash
    sha256: str = ""


@dg.asset(group_name=RETRAINING_GROUP, kinds={"cvat"}, partitions_def=REVIEWED_EXPORTS, code_version="1")
def reviewed_exports(context: dg.AssetExecutionContext, lake: LakeResource, settings: SettingsResource,
                     config: ReviewedExportConfig) -> dg.Output:
    """A reviewer's CVAT export, one partition per content: the file kept as it was dropped."""
    key = partition_of(context)
    source = Path(config.path) if config.path else find_export(settings.get().path("review_drop"), key)
    return lake_output(publish(context, lake, lambda out: keep_export(source, out),
                               params={"source": str(source), "sha256": config.sha256}))


def find_export(folder: Path, key: str) -> Path:
    """The export of the drop folder whose content has the partition key ``key`` (a partition
    materialized again from the UI, without the sensor's config)."""
    for path in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
        if path.is_file() and is_export_name(path.name) and file_sha256(path)[:KEY_LENGTH] == key:
            return path
    raise DropFolderError(f"no export in {folder} (setting review_drop) has content {key}: "
                          "the file was moved or changed; drop the export there again")


def keep_export(source: Path, out_dir: Path) -> BuildReport:
    """The export under its own name (so an error reading it names the file the reviewer dropped)."""
    kept = Path(out_dir) / source.name
    link_or_copy(source, kept)
    return BuildReport(counts={"bytes": kept.stat().st_size}, details={"source": str(source), "export": kept.name})


def exported_file(version: Path) -> Path:
    return next(path for path in sorted(Path(version).iterdir()) if is_export_name(path.name))


@dg.asset(group_name=RETRAINING_GROUP, kinds={"parquet"}, partitions_def=REVIEWED_EXPORTS, code_version="1",
          deps=["cvat_review_packages"])
def reviewed_labels(context: dg.AssetExecutionContext, lake: LakeResource, settings: SettingsResource,
                    reviewed_exports: LakeHandle) -> dg.Output:
    """The export's labels mapped back to the review packages' images, and what reviewers changed
    against the pseudo-labels: the pseudo-labeller's real precision and recall, per class and camera."""
    store = lake.get()
    export = exported_file(reviewed_exports.resolve(store.home))
    packages = [store.asset_dir("cvat_review_packages") / v for v in reversed(store.versions("cvat_review_packages"))]
    package_dir = package_with(export, packages)
    classes = settings.get().classes
    return lake_output(publish(
        context, lake, lambda out: build_reviewed_labels(export, package_dir, out, classes),
        upstream={"reviewed_exports": reviewed_exports.version, "cvat_review_packages": package_dir.name},
        classes=classes,
    ))


ReviewedMixConfig = config_class(
    "ReviewedMixConfig", "go2k_v2's numbers, and how often each reviewed capture is listed.", MixParameters,
    extra={"reviewed_oversample": (int, 1)},
)


@dg.asset(group_name=RETRAINING_GROUP, kinds={"yolo"}, code_version="1", deps=["base_dataset", "reviewed_labels"])
def go2k_v4_mix(context: dg.AssetExecutionContext, config: ReviewedMixConfig, lake: LakeResource,
                settings: SettingsResource, go2k_split: LakeHandle) -> dg.Output[LakeHandle]:
    """go2k_v2's mix plus every capture reviewed so far, with its reviewed labels (never a
    pseudo-label; an image not reviewed yet is left out); go2k valid stays the validation set."""
    configured = settings.get()
    base_root = configured.require("base_dataset", "YOLO dataset folder (with data.yaml)")
    store = lake.get()
    grouping = grouping_of(go2k_split, lake)
    reviews = {key: lake.recorded("reviewed_labels", key) for key in lake.recorded_partitions("reviewed_labels")}
    ordered = sorted(reviews.items(), key=lambda item: item[1].version)  # versions name their creation time
    params = parameters_of(config, MixParameters)
    upstream = {"go2k_split": go2k_split.version, **go2k_split.upstream,
                "base_dataset": fingerprint_folder(base_root, content=True).version,
                **{f"reviewed_labels/{key}": handle.version for key, handle in ordered}}
    return lake_output(publish(
        context, lake,
        lambda out: build_reviewed_mix(base_root, go2k_split.resolve(store.home),
                                       [handle.resolve(store.home) for _, handle in ordered], go2k_split.classes,
                                       params, out, grouping, reviewed_oversample=config.reviewed_oversample,
                                       timestamping=Timestamping(tuple(configured.capture_patterns),
                                                                 configured.capture_timezone)),
        params={**config.model_dump(), "grouping": grouping.as_params()},
        upstream=upstream, classes=go2k_split.classes,
    ))


go2k_v4_mix_checks = split_dataset_checks("go2k_v4_mix", MIX_MANIFEST)


def reviewed_exports_sensor_fn(context: dg.SensorEvaluationContext, settings: SettingsResource):
    """One tick: the drop folder's complete new exports become partitions and import runs."""
    folder = settings.get().path("review_drop")
    try:
        result = scan(folder, DropCursor.from_json(context.cursor))
    except DropFolderError as exc:
        return dg.SkipReason(str(exc))
    requests = [dg.RunRequest(run_key=export.run_key, partition_key=export.partition_key,
                              run_config={"ops": {"reviewed_exports": {"config": {"path": str(export.path),
                                                                                   "sha256": export.sha256}}}},
                              tags={"hoban/export": export.name})
                for export in result.ready]
    context.update_cursor(result.cursor.to_json())
    context.log.info(result.describe())
    if not requests:
        return dg.SkipReason(result.describe())
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[REVIEWED_EXPORTS.build_add_request([e.partition_key for e in result.ready])],
    )


def cvat_completed_tasks_sensor_fn(context: dg.SensorEvaluationContext, cvat: CvatResource,
                                   settings: SettingsResource):
    """One tick: completed review tasks on the CVAT server exported into the drop folder (the
    drop-folder sensor then imports them). Without a configured server, nothing is contacted."""
    if not cvat.configured:
        return dg.SkipReason("no CVAT server configured (CVAT_HOST): exports come through the drop folder only")
    folder = settings.get().path("review_drop")
    folder.mkdir(parents=True, exist_ok=True)
    fetched = json.loads(context.cursor) if context.cursor else {}
    with cvat.client() as client:
        written = fetch_completed_tasks(client, folder, fetched, TASK_PREFIX)
    context.update_cursor(json.dumps(fetched, sort_keys=True))
    return dg.SkipReason(f"exported {len(written)} completed task(s) into {folder}: "
                         f"{', '.join(p.name for p in written) or 'none new'}")
