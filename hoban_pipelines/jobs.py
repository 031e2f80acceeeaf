"""Jobs: what `make demo` runs, and selections the UI and schedules reuse."""

from __future__ import annotations

import dagster as dg

import hoban_pipelines.beta_apis  # noqa: F401

input_observations = dg.AssetSelection.groups("inputs", include_sources=True)

demo_site_job = dg.define_asset_job(
    "demo_site_job", selection=dg.AssetSelection.groups("demo"), description="Generate the embedded demo site."
)
observe_inputs_job = dg.define_asset_job(
    "observe_inputs_job", selection=input_observations, description="Observe the configured input folders."
)
# Everything else, materialized in dependency order; `make demo` runs it after the two above.
pipeline_job = dg.define_asset_job(
    "pipeline_job",
    selection=dg.AssetSelection.all() - dg.AssetSelection.groups("demo") - input_observations,
    description="Every lake asset, in dependency order.",
)

all_jobs = [demo_site_job, observe_inputs_job, pipeline_job]
