"""Jobs: what `make demo` runs, and selections the UI and schedules reuse."""

from __future__ import annotations

import dagster as dg

import hoban_pipelines.beta_apis  # noqa: F401
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
# Everything else, materialized in dependency order; `make demo` runs it after the two above,
# then evaluation_job for the demo's go2k_v2.
pipeline_job = dg.define_asset_job(
    "pipeline_job",
    selection=dg.AssetSelection.all() - dg.AssetSelection.groups("demo") - input_observations - evaluation_selection,
    description="Every unpartitioned lake asset up to the models, in dependency order.",
)

all_jobs = [demo_site_job, observe_inputs_job, pipeline_job, evaluation_job]
