"""Jobs, schedules and sensors: what `make demo` runs, what the daemon runs on its own, and the
selections the UI reuses. A job with a step in the ``gpu`` pool carries the Kubernetes GPU run
tag (resources/kubernetes.py): on Kubernetes its run pod gets a GPU, elsewhere nothing changes."""

from __future__ import annotations

import dagster as dg

import hoban_pipelines.beta_apis  # noqa: F401
from hoban_pipelines.assets.captures import NIGHTLY_HOUR, REVIEW_GROUP
from hoban_pipelines.assets.catalog import all_assets
from hoban_pipelines.assets.promotion import CANDIDATE
from hoban_pipelines.assets.retraining import cvat_completed_tasks_sensor_fn, reviewed_exports_sensor_fn
from hoban_pipelines.assets.training import RETRAINING_GROUP
from hoban_pipelines.resources.kubernetes import gpu_run_tags

input_observations = dg.AssetSelection.groups("inputs", include_sources=True)


def asset_job(name: str, selection: dg.AssetSelection, description: str):
    """An asset job whose runs carry the GPU pod config when it selects a ``gpu``-pool asset."""
    return dg.define_asset_job(name, selection=selection, description=description,
                               run_tags=gpu_run_tags(selection, all_assets))


demo_site_job = asset_job(
    "demo_site_job", selection=dg.AssetSelection.groups("demo"), description="Generate the embedded demo site."
)
observe_inputs_job = asset_job(
    "observe_inputs_job", selection=input_observations, description="Observe the configured input folders."
)
# One model's evaluation (a partition: the model's asset name) and the comparison it feeds.
evaluation_selection = dg.AssetSelection.groups("evaluation") | dg.AssetSelection.assets("model_comparison")
evaluation_job = asset_job(
    "evaluation_job", selection=evaluation_selection,
    description="Evaluate one model (pick its partition): export, sliced inference, sweeps, adopted setting, "
                "report card, and the model comparison.",
)
capture_days = dg.AssetSelection.groups("captures")
captures_job = asset_job(
    "captures_job", selection=capture_days,
    description="Ingest one day of captures and find its frozen frames (pick its partition; the nightly schedule "
                "runs yesterday's).",
)
# Launched when the team starts a review round, not nightly: a round's packages stay put while
# reviewers work through them, however many days are ingested meanwhile.
review_round = dg.AssetSelection.groups(REVIEW_GROUP)
review_round_job = asset_job(
    "review_round_job", selection=review_round,
    description="A review round: select capture frames, pseudo-label them with the production model's adopted setting, "
                "package them with go2k_manual as CVAT tasks.",
)
nightly_captures = dg.build_schedule_from_partitioned_job(
    captures_job, hour_of_day=NIGHTLY_HOUR, name="nightly_captures", default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every night at 02:00 site time, the day that just ended.",
)
# The review loop: an export's import (one partition per export), then the retraining it triggers.
review_import_job = asset_job(
    "review_import_job", selection=dg.AssetSelection.assets("reviewed_exports", "reviewed_labels"),
    description="Keep one reviewer's CVAT export and read its labels against the review packages (the sensor "
                "launches it per dropped export).",
)
retraining = (dg.AssetSelection.groups(RETRAINING_GROUP) - dg.AssetSelection.assets("reviewed_exports",
                                                                                    "reviewed_labels"))
retrain_job = asset_job(
    "retrain_job", selection=retraining | evaluation_selection,
    description=f"Retrain after review: go2k_v4_mix, {CANDIDATE} from the production checkpoint, its sliced "
                "evaluation (partition: the model) and the promotion decision.",
)
promotion_job = asset_job(
    "promotion_job", selection=dg.AssetSelection.assets("production_model"),
    description="Decide whether a candidate (run config: candidate) replaces the production model, or roll back "
                "to a named production version (rollback_to).",
)
reviewed_exports_sensor = dg.sensor(
    name="reviewed_exports_sensor", job=review_import_job, minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Imports each complete new CVAT export dropped in the review_drop folder, once.",
)(reviewed_exports_sensor_fn)

cvat_completed_tasks_sensor = dg.sensor(
    name="cvat_completed_tasks_sensor", minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.RUNNING,
    description="With a CVAT server configured, exports each completed review task into the review_drop folder.",
)(cvat_completed_tasks_sensor_fn)


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, monitored_jobs=[review_import_job],
                      request_job=retrain_job, default_status=dg.DefaultSensorStatus.RUNNING,
                      name="retrain_after_review")
def retrain_after_review(context: dg.RunStatusSensorContext):
    """Every successful import retrains, evaluates and decides once (run key: the import's run)."""
    return dg.RunRequest(run_key=f"retrain_after:{context.dagster_run.run_id}", partition_key=CANDIDATE,
                         tags={"hoban/reviewed_export": context.dagster_run.tags.get("dagster/partition", "")})


# Everything else, materialized in dependency order; `make demo` runs it after the two above,
# then evaluation_job for the demo's go2k_v2, captures_job for each of the demo's days and a review round.
pipeline_job = asset_job(
    "pipeline_job",
    selection=(dg.AssetSelection.all() - dg.AssetSelection.groups("demo") - input_observations
               - evaluation_selection - capture_days - review_round - dg.AssetSelection.groups(RETRAINING_GROUP)),
    description="Every unpartitioned lake asset up to the models, in dependency order.",
)

all_jobs = [demo_site_job, observe_inputs_job, pipeline_job, evaluation_job, captures_job, review_round_job,
            review_import_job, retrain_job, promotion_job]
all_schedules = [nightly_captures]
all_sensors = [cvat_completed_tasks_sensor, reviewed_exports_sensor, retrain_after_review]
