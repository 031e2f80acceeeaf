"""Jobs: what `make demo` runs, and selections the UI and schedules reuse."""

from __future__ import annotations

import dagster as dg

import hoban_pipelines.beta_apis  # noqa: F401
from hoban_pipelines.assets.captures import CAPTURE_DAYS, NIGHTLY_HOUR, REVIEW_GROUP
from hoban_pipelines.assets.evaluation import MODEL_PARTITIONS

input_observations = dg.AssetSelection.groups("inputs", include_sources=True)

demo_site_job = dg.define_asset_job(
    "demo_site_job", selection=dg.AssetSelection.groups("demo"), description="Generate the embedded demo site."
)
observe_inputs_job = dg.define_asset_job(
    "observe_inputs_job", selection=input_observations, description="Observe the configured input folders."
)
# One model's evaluation (a partition: the model's asset name) and the comparison it feeds.
evaluation_selection = dg.AssetSelection.groups("evaluation") | dg.AssetSelection.assets("model_comparison")
evaluation_job = dg.define_asset_job(
    "evaluation_job", selection=evaluation_selection, partitions_def=MODEL_PARTITIONS,
    description="Evaluate one model (pick its partition): export, sliced inference, sweeps, adopted setting, "
                "report card, and the model comparison.",
)
capture_days = dg.AssetSelection.groups("captures")
captures_job = dg.define_asset_job(
    "captures_job", selection=capture_days, partitions_def=CAPTURE_DAYS,
    description="Ingest one day of captures and find its frozen frames (pick its partition; the nightly schedule "
                "runs yesterday's).",
)
# Launched when the team starts a review round, not nightly: a round's packages stay put while
# reviewers work through them, however many days are ingested meanwhile.
review_round = dg.AssetSelection.groups(REVIEW_GROUP)
review_round_job = dg.define_asset_job(
    "review_round_job", selection=review_round,
    description="A review round: select capture frames, pseudo-label them with model_go2k_v2's adopted setting, "
                "package them with go2k_manual as CVAT tasks.",
)
nightly_captures = dg.build_schedule_from_partitioned_job(
    captures_job, hour_of_day=NIGHTLY_HOUR, name="nightly_captures", default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every night at 02:00 site time, the day that just ended.",
)
# Everything else, materialized in dependency order; `make demo` runs it after the two above,
# then evaluation_job for the demo's go2k_v2, captures_job for each of the demo's days and a review round.
pipeline_job = dg.define_asset_job(
    "pipeline_job",
    selection=(dg.AssetSelection.all() - dg.AssetSelection.groups("demo") - input_observations
               - evaluation_selection - capture_days - review_round),
    description="Every unpartitioned lake asset up to the models, in dependency order.",
)

all_jobs = [demo_site_job, observe_inputs_job, pipeline_job, evaluation_job, captures_job, review_round_job]
all_schedules = [nightly_captures]
