"""Benchmark of training through the asset against the same ultralytics call run directly.

Both sides train yolov8n.yaml on the same files (the asset's own training view of the small
demo site's base dataset) with the same arguments and torch threads, one after the other in one
process tree. An epoch's time is the wall time between two consecutive epoch ends: on the asset
side the timestamps of the epoch lines in the Dagster run's event log (they crossed Pipes from the
child), on the direct side an ``on_fit_epoch_end`` callback. The first epoch (warm-up) is left
out. Fixed costs of a materialization (run start, the view, validating best.pt, publishing the
version) are not per-epoch costs and are not counted.

Run ``hoban bench train --json``.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
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
    gaps = [later - earlier for earlier, later in zip(ends, ends[1:])]
    return statistics.median(gaps)


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
    return [float(line.split()[1]) for line in completed.stdout.splitlines() if line.startswith("EPOCH_END")]


def run() -> dict[str, float]:
    from hoban_pipelines.demo.install import install_site

    with tempfile.TemporaryDirectory(prefix="hoban-bench-train-") as scratch:
        home = Path(scratch) / "home"
        install_site(home / "demo_site", seed=7, profile="small")
        config = Path(scratch) / "hoban.yaml"
        config.write_text("train_profile: full\ndemo_profile: small\n")
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
