"""Benchmark of training through the asset against the same ultralytics call run directly.

Both sides train yolov8n.yaml on the same files (the demo site's base dataset, 300 images at
256 px, about 12 s an epoch on 2 cores; the direct side builds its own training view of it with
the asset's settings, since the asset removes its view once the version is published) with the
same arguments and torch threads. The machine's speed drifts by several percent over minutes
(one direct run measured 12.6 s an epoch, another 13.7 s a few minutes later), so the sides run
in the order asset, direct, direct, asset and each side's epoch time is the median of its
epochs' durations after each run's first (the warm-up epoch is left out; an epoch slowed by
something else on the machine does not move a median), read on both sides from the same clock:
the ``time`` column of the run's ultralytics ``results.csv`` (wall seconds since training
started, written at each epoch's end). The time between two epoch ends holds everything the
asset adds per epoch: the child's Pipes messages and callbacks, and the Dagster process sharing
the cores. The event log's timestamps would measure it only to about a second, since Dagster
polls the Pipes message file about once a second. Fixed costs of a materialization (run start, the view, validating best.pt,
publishing the version) are not per-epoch costs and are not counted.

Run ``hoban bench train --json``.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

EPOCHS = 5
ORDER = ("asset", "direct", "direct", "asset")  # drift in time weighs on both sides alike
IMGSZ = 256
# the direct side: the same call the child makes, without Dagster
_DIRECT = """
import json, sys, torch
from ultralytics import YOLO
args, threads = json.loads(sys.argv[1]), int(sys.argv[2])
model = YOLO(args["model"])
model.add_callback("on_pretrain_routine_start", lambda trainer: torch.set_num_threads(threads))
model.train(**args)
"""


def _steady_epoch_seconds(runs: list[list[float]]) -> float:
    """Median duration of the epochs after each run's first."""
    return statistics.median(later - earlier for ends in runs for earlier, later in zip(ends, ends[1:]))


def _epoch_ends(results_csv: Path) -> list[float]:
    """Seconds since training started at each epoch's end, from ultralytics' results.csv."""
    with results_csv.open(newline="") as handle:
        return [float(row["time"]) for row in csv.DictReader(handle, skipinitialspace=True)]


def _asset_side(home: Path, config: Path, epochs: int, imgsz: int) -> Path:
    """Materialize base_model through Dagster; its run folder."""
    import dagster as dg

    from hoban_pipelines.assets.training import SCRATCH
    from hoban_pipelines.definitions import defs

    os.environ.update({"HOBAN_HOME": str(home), "HOBAN_CONFIG": str(config)})
    job = defs.resolve_implicit_global_asset_job_def()
    # retrain: the second asset run must train, not report the first one's version
    run_config = {"ops": {"base_model": {"config": {"epochs": epochs, "imgsz": imgsz, "patience": epochs, "retrain": True}}}}
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(
            instance=instance, run_config=run_config, asset_selection=[dg.AssetKey("base_model")], raise_on_error=True,
        )
    return home / SCRATCH / "base_model" / result.run_id


def _direct_side(run_dir: Path, work: Path) -> Path:
    """The same ultralytics call on the same files, without Dagster; its run folder."""
    from hoban_pipelines.training.job import JOB_RECORD, SUMMARY_FILE, cpu_threads, train_args
    from hoban_pipelines.training.recipes import TrainRecipe
    from hoban_pipelines.training.view import build_training_view

    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    source = json.loads((run_dir / JOB_RECORD).read_text())["data_yaml"]
    view = summary["view"]
    data = build_training_view(
        source, work / "view", tile=view["tile"], tile_over=view["tile_over"],
        background_tiles=view["background_tiles"], max_train_entries=view["max_train_entries"],
    )
    recipe = TrainRecipe.from_dict(summary["recipe"])
    args = train_args(
        recipe, data_yaml=data.data_yaml, model="yolov8n.yaml", device=summary["device"],
        workers=2, project=work, name="direct", amp=True, cache=False,
    )
    completed = subprocess.run(
        [sys.executable, "-c", _DIRECT, json.dumps(args), str(cpu_threads())],
        capture_output=True, text=True, check=False, env={**os.environ, "YOLO_OFFLINE": "1"},
    )
    if completed.returncode:
        raise RuntimeError(f"direct ultralytics run failed: {completed.stderr[-2000:]}")
    return work / "direct"


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


def run(*, epochs: int = EPOCHS, imgsz: int = IMGSZ, site_profile: str = "demo") -> dict[str, float]:
    """The figures; tests run it on the small site at a tiny size."""
    from hoban_pipelines.demo.install import install_site
    from hoban_pipelines.training.job import RESULTS_CSV

    with tempfile.TemporaryDirectory(prefix="hoban-bench-train-") as scratch, _stdout_to_stderr():
        home = Path(scratch) / "home"
        install_site(home / "demo_site", seed=7, profile=site_profile)
        config = Path(scratch) / "hoban.yaml"
        config.write_text(f"train_profile: full\ndemo_profile: {site_profile}\n")
        ends: dict[str, list[list[float]]] = {"asset": [], "direct": []}
        asset_dir = None
        for number, side in enumerate(ORDER):
            if side == "asset":
                asset_dir = _asset_side(home, config, epochs, imgsz)
                ends["asset"].append(_epoch_ends(asset_dir / RESULTS_CSV))
            else:  # after an asset run: the direct side copies its settings
                direct_dir = _direct_side(asset_dir, Path(scratch) / f"direct{number}")
                ends["direct"].append(_epoch_ends(direct_dir / RESULTS_CSV))
    counts = {side: [len(run_ends) for run_ends in runs] for side, runs in ends.items()}
    if any(count != epochs for runs in counts.values() for count in runs):
        raise RuntimeError(f"expected {epochs} epoch ends in every run, got {counts}")
    asset, direct = _steady_epoch_seconds(ends["asset"]), _steady_epoch_seconds(ends["direct"])
    return {
        "asset_epoch_seconds": round(asset, 3),
        "direct_epoch_seconds": round(direct, 3),
        "overhead_fraction": round(asset / direct - 1, 4),
    }


if __name__ == "__main__":
    print(json.dumps(run()))
