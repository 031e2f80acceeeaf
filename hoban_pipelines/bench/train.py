"""Benchmark of training through the asset against the same ultralytics call run directly.

Both sides train yolov8n.yaml on the same files (the asset's own training view of the demo
site's base dataset, 300 images at 256 px, about 12 s an epoch on 2 cores) with the same
arguments and torch threads, one after the other. An epoch's time is the span from the first
epoch's end to the last one's divided by the epochs between (the warm-up epoch is left out): on
the asset side from the timestamps of the epoch lines in the Dagster run's event log (they
crossed Pipes from the child; Dagster polls the Pipes message file about once a second, so the
span is known to about a second, ~2% of it), on the direct side from an ``on_fit_epoch_end``
callback. Fixed costs of a materialization (run start, the view, validating best.pt, publishing
the version) are not per-epoch costs and are not counted.

Run ``hoban bench train --json``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

EPOCHS = 5
IMGSZ = 256
_EPOCH_LINE = re.compile(r"^epoch (\d+)/\d+ ")
# the direct side: the same call the child makes, without Dagster, printing each epoch end's time
_DIRECT = """
import json, sys, time, torch
from ultralytics import YOLO
args, threads = json.loads(sys.argv[1]), int(sys.argv[2])
model = YOLO(args["model"])
model.add_callback("on_pretrain_routine_start", lambda trainer: torch.set_num_threads(threads))
model.add_callback("on_fit_epoch_end", lambda trainer: print("EPOCH_END", time.time(), flush=True))
model.train(**args)
"""


def _steady_epoch_seconds(ends: list[float]) -> float:
    return (ends[-1] - ends[0]) / (len(ends) - 1)


def _asset_side(home: Path, config: Path) -> tuple[list[float], dict]:
    import dagster as dg

    from hoban_pipelines.definitions import defs

    os.environ.update({"HOBAN_HOME": str(home), "HOBAN_CONFIG": str(config)})
    job = defs.resolve_implicit_global_asset_job_def()
    run_config = {"ops": {"base_model": {"config": {"epochs": EPOCHS, "imgsz": IMGSZ, "patience": EPOCHS}}}}
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(
            instance=instance, run_config=run_config, asset_selection=[dg.AssetKey("base_model")], raise_on_error=True,
        )
        ends = [
            record.timestamp for record in instance.all_logs(result.run_id)
            if _EPOCH_LINE.match(record.user_message or "")
        ]
    run_dir = next((home / "runs" / "base_model").iterdir())
    return ends, json.loads((run_dir / "summary.json").read_text())


def _direct_side(summary: dict, work: Path) -> list[float]:
    from hoban_pipelines.training import TrainRecipe, cpu_threads, train_args

    recipe = TrainRecipe.from_dict(summary["recipe"])
    args = train_args(
        recipe, data_yaml=summary["view"]["data_yaml"], model="yolov8n.yaml", device=summary["device"],
        workers=2, project=work, name="direct", amp=True, cache=False,
    )
    completed = subprocess.run(
        [sys.executable, "-c", _DIRECT, json.dumps(args), str(cpu_threads())],
        capture_output=True, text=True, check=False, env={**os.environ, "YOLO_OFFLINE": "1"},
    )
    if completed.returncode:
        raise RuntimeError(f"direct ultralytics run failed: {completed.stderr[-2000:]}")
    # ultralytics ends with one more on_fit_epoch_end after validating best.pt: not an epoch
    return [float(line.split()[1]) for line in completed.stdout.splitlines() if line.startswith("EPOCH_END")][:EPOCHS]


@contextmanager
def _stdout_to_stderr():
    """Console output of the run and its training child goes to stderr: stdout carries only the JSON."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def run() -> dict[str, float]:
    from hoban_pipelines.demo.install import install_site

    with tempfile.TemporaryDirectory(prefix="hoban-bench-train-") as scratch, _stdout_to_stderr():
        home = Path(scratch) / "home"
        install_site(home / "demo_site", seed=7, profile="demo")
        config = Path(scratch) / "hoban.yaml"
        config.write_text("train_profile: full\n")
        asset_ends, summary = _asset_side(home, config)
        direct_ends = _direct_side(summary, Path(scratch) / "direct")
    if len(asset_ends) != EPOCHS or len(direct_ends) != EPOCHS:
        raise RuntimeError(f"expected {EPOCHS} epoch ends, got {len(asset_ends)} (asset) and {len(direct_ends)} (direct)")
    asset, direct = _steady_epoch_seconds(asset_ends), _steady_epoch_seconds(direct_ends)
    return {
        "asset_epoch_seconds": round(asset, 3),
        "direct_epoch_seconds": round(direct, 3),
        "overhead_fraction": round(asset / direct - 1, 4),
    }


if __name__ == "__main__":
    print(json.dumps(run()))
