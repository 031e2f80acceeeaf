"""Run the whole graph on the local instance, as `make demo` does; the UI shows the same runs."""

from __future__ import annotations

from typing import Callable

import dagster as dg

from hoban_pipelines.definitions import defs
from hoban_pipelines.jobs import demo_site_job, observe_inputs_job, pipeline_job
from hoban_pipelines.core.settings import hoban_home


def run_demo(*, replace_site: bool = False, echo: Callable[[str], None] = print, instance: dg.DagsterInstance | None = None) -> bool:
    """Generate the demo site, observe the inputs, materialize every asset; False if a run failed."""
    instance = instance or dg.DagsterInstance.get()
    quiet = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}  # step events stay in the UI
    steps = [
        (demo_site_job.name, {"ops": {"demo_site": {"config": {"replace": replace_site}}}, **quiet}),
        (observe_inputs_job.name, quiet),
        (pipeline_job.name, quiet),
    ]
    for name, run_config in steps:
        job = defs.resolve_job_def(name)
        if not job.asset_layer.executable_asset_keys:
            continue
        echo(f"running {name} ...")
        result = job.execute_in_process(instance=instance, run_config=run_config, raise_on_error=False)
        if not result.success:
            echo(f"{name} failed (run {result.run_id}); open the run in the UI (`make ui`) for the step logs")
            return False
    echo(f"done. Versions are under {hoban_home() / 'lake'}; the demo site is {hoban_home() / 'demo_site'}.")
    echo("Open the UI with `make ui` to browse assets, lineage and metadata.")
    return True
