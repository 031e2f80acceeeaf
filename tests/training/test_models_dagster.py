"""Model training through real Dagster, on a persistent instance configured with the project's own
dagster.yaml (concurrency: pools: default_limit 1): a training child killed by SIGKILL after its
first epoch fails the run cleanly, and a re-execution from failure (same root run id, so the same
scratch folder) resumes from weights/last.pt; two training runs launched at once take turns in
the ``gpu`` pool. Real child processes, real ultralytics (yolov8n.yaml at 64 px), no mocks."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import psutil
import pytest
import yaml

from hoban_pipelines.assets.training import SCRATCH, base_model
from hoban_pipelines.definitions import defs
from hoban_pipelines.core.lake import Lake

REPO = Path(__file__).resolve().parents[2]
STEP = "base_model"
CHILD_MODULE = "hoban_pipelines.training.child"
EPOCHS = 3  # of the killed and resumed training


def base_model_job() -> dg.JobDefinition:
    """base_model alone, with the code location's own resources (lake, settings, IO manager, YOLO
    runtime, training child) and the default executor of its jobs (multiprocess)."""
    job = dg.define_asset_job("base_model_job", selection=[base_model.key])
    return dg.Definitions(assets=[base_model], jobs=[job], resources=defs.resources).resolve_job_def(job.name)


def reconstructable_base_model_job() -> dg.ReconstructableJob:
    # the multiprocess executor runs the step in its own process (which starts the training
    # child); that process imports this module from the working directory given here
    return dg.build_reconstructable_job(
        __name__, base_model_job.__name__, reconstructor_working_directory=str(Path(__file__).parent)
    )


@pytest.fixture
def project_instance(tmp_path):
    """A persistent SQLite instance with the concurrency settings of the project's dagster.yaml."""
    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    assert config["concurrency"]["pools"]["default_limit"] == 1
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home), overrides={"concurrency": config["concurrency"]}) as instance:
        yield instance


def _settings(tmp_path, small_site, monkeypatch, profile: str) -> None:
    """Settings: the small site's base dataset (read in place: training reads a view in its run
    folder), no base_checkpoint (so base_model trains from yolov8n.yaml), a training profile."""
    config = tmp_path / "hoban.yaml"
    config.write_text(yaml.safe_dump({"base_dataset": str(small_site / "base_dataset"), "train_profile": profile}))
    monkeypatch.setenv("HOBAN_CONFIG", str(config))


class KillAfterFirstCheckpoint(threading.Thread):
    """Waits for the first ``weights/last.pt`` under ``runs``, then SIGKILLs the training child
    (a descendant of this process: step process, then child) while a later epoch trains."""

    def __init__(self, runs: Path, timeout: float = 240):
        super().__init__(daemon=True)
        self.runs, self.timeout = runs, timeout
        self.killed: list[int] = []
        self.run_dir: Path | None = None

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout
        sizes: list[int] = []
        while time.monotonic() < deadline:
            found = sorted(self.runs.glob("*/weights/last.pt"))
            if found:
                # ultralytics writes the whole checkpoint in one write: wait until its size holds
                sizes.append(found[0].stat().st_size)
                if len(sizes) >= 2 and sizes[-1] == sizes[-2] > 0:
                    self.run_dir = found[0].parents[1]
                    for process in psutil.Process().children(recursive=True):
                        try:
                            if CHILD_MODULE in process.cmdline():
                                os.kill(process.pid, signal.SIGKILL)
                                self.killed.append(process.pid)
                        except psutil.NoSuchProcess:
                            pass
                    return
            time.sleep(0.01)


# one run of base_model_job in its own process, on the instance in $DAGSTER_HOME; prints the run id
RUN_BASE_MODEL = (
    "import sys\n"
    "import dagster as dg\n"
    "module, folder = sys.argv[1:3]\n"
    "with dg.DagsterInstance.get() as instance:\n"
    "    job = dg.build_reconstructable_job(module, 'base_model_job', reconstructor_working_directory=folder)\n"
    # retrain: the second run must train too, not reuse the first one's identical published job
    "    run_config = {'ops': {'base_model': {'config': {'retrain': True}}}}\n"
    "    result = dg.execute_job(job, instance=instance, run_config=run_config)\n"
    "print(result.run_id)\n"
    "sys.exit(0 if result.success else 1)\n"
)


def _messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [record.user_message or "" for record in instance.all_logs(run_id)]


def _step_times(instance: dg.DagsterInstance, run_id: str, event_type: dg.DagsterEventType) -> list[float]:
    return [
        record.timestamp for record in instance.all_logs(run_id, of_type=event_type)
        if record.step_key == STEP
    ]


@pytest.mark.timeout(300)
def test_killed_training_child_fails_the_run_and_reexecution_resumes(
    hoban_home, small_site, tmp_path, monkeypatch, project_instance
):
    # three epochs at 64 px: base_model's run config (the recipe's numbers, editable in the
    # launchpad) under the 'full' profile, which trains a recipe as configured. An epoch here
    # takes about 0.35 s on 2 idle cores; after epoch 1's checkpoint, two more epochs leave
    # the kill a wider window than one would.
    _settings(tmp_path, small_site, monkeypatch, "full")
    run_config = {"ops": {"base_model": {"config": {"epochs": EPOCHS, "imgsz": 64}}}}
    instance = project_instance
    job = reconstructable_base_model_job()
    runs = hoban_home / SCRATCH / "base_model"

    killer = KillAfterFirstCheckpoint(runs)
    killer.start()
    first = dg.execute_job(job, instance=instance, run_config=run_config)
    killer.join(timeout=5)

    # the child died mid-run: a step failure, a failed run, nothing published
    assert killer.killed, f"no training child was killed (runs: {sorted(runs.rglob('*')) if runs.exists() else 'none'})"
    assert not first.success
    assert instance.get_run_by_id(first.run_id).status == dg.DagsterRunStatus.FAILURE
    failures = first.get_step_failure_events()
    assert [event.step_key for event in failures] == [STEP]
    assert "failed with code -9" in failures[0].step_failure_data.error.to_string()
    assert not first.get_asset_materialization_events()
    assert Lake(hoban_home).versions("base_model") == []
    assert instance.get_latest_materialization_event(dg.AssetKey("base_model")) is None
    # the scratch folder is keyed by the run id, and the kill landed before the last epoch ended
    run_dir = runs / first.run_id
    assert killer.run_dir == run_dir
    results = run_dir / "results.csv"
    done = pd.read_csv(results)["epoch"].tolist()
    assert done in ([1], [1, 2]), f"the kill came too late: {results.read_text()}"

    # re-execute from failure (as the UI does: the parent's run config, the failed step):
    # the same root run id, so the same folder, so a resume
    options = dg.ReexecutionOptions.from_failure(run_id=first.run_id, instance=instance)
    second = dg.execute_job(job, instance=instance, reexecution_options=options)
    messages = _messages(instance, second.run_id)
    assert second.success, "\n".join(messages[-30:])
    rerun = instance.get_run_by_id(second.run_id)
    assert second.run_id != first.run_id
    assert rerun.root_run_id == first.run_id and rerun.parent_run_id == first.run_id
    assert rerun.run_config == run_config

    resumed = [message for message in messages if "resuming" in message]
    assert len(resumed) == 1 and re.search(r"after epoch [12]\b", resumed[0]), messages
    assert any(f"epoch {EPOCHS}/{EPOCHS}" in message for message in messages)
    assert not any(f"epoch 1/{EPOCHS}" in message for message in messages)  # epoch 1 was not trained again
    assert pd.read_csv(results)["epoch"].tolist() == list(range(1, EPOCHS + 1))
    assert not any(runs.glob(f"{second.run_id}*"))  # no fresh folder for the re-execution

    versions = Lake(hoban_home).versions("base_model")
    assert len(versions) == 1
    published = hoban_home / "lake" / "base_model" / versions[0]
    assert (published / "weights" / "best.pt").is_file()
    assert pd.read_csv(published / "results.csv")["epoch"].tolist() == list(range(1, EPOCHS + 1))

    event = instance.get_latest_materialization_event(dg.AssetKey("base_model"))
    assert event.run_id == second.run_id
    metadata = event.asset_materialization.metadata
    assert isinstance(metadata["val/mAP50"].value, float)
    assert metadata["epochs"].value == EPOCHS
    assert metadata["version"].value == versions[0]


@pytest.mark.timeout(300)
def test_gpu_pool_runs_one_training_at_a_time(hoban_home, small_site, tmp_path, monkeypatch, project_instance):
    """Two run processes (as two launched runs have) on one instance: $DAGSTER_HOME's
    dagster.yaml, written by the fixture with the project's concurrency settings."""
    _settings(tmp_path, small_site, monkeypatch, "test")  # one epoch at 64 px per run
    instance = project_instance
    assert os.environ["DAGSTER_HOME"] == str(instance.root_directory)
    assert instance.event_log_storage.get_pool_config().default_pool_limit == 1
    launched = []
    for index in range(2):
        # files, not pipes: a run blocked on a full pipe could hold the pool's slot forever
        out, err = (open(tmp_path / f"run{index}.{kind}", "w") for kind in ("out", "err"))
        launched.append(subprocess.Popen(
            [sys.executable, "-c", RUN_BASE_MODEL, __name__, str(Path(__file__).parent)],
            cwd=REPO, stdout=out, stderr=err,
        ))
        out.close()
        err.close()
    deadline = time.monotonic() + 240
    for process in launched:
        try:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other in launched:
                other.kill()
            pytest.fail(f"a run did not finish in time; see {tmp_path}/run*.err")
    run_ids = [(tmp_path / f"run{index}.out").read_text().split()[-1] for index in range(2)]
    for index, process in enumerate(launched):
        assert process.returncode == 0, (tmp_path / f"run{index}.err").read_text()[-4000:]
    for run_id in run_ids:
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS

    spans = []
    for run_id in run_ids:
        started = _step_times(instance, run_id, dg.DagsterEventType.STEP_START)
        succeeded = _step_times(instance, run_id, dg.DagsterEventType.STEP_SUCCESS)
        run_started = [r.timestamp for r in instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_START)]
        assert len(started) == len(succeeded) == len(run_started) == 1, run_id
        spans.append((started[0], succeeded[0], run_started[0], run_id))
    (_, first_end, first_run_start, first_id), (second_start, second_end, second_run_start, second_id) = sorted(spans)

    # both runs were in progress while the first one trained ...
    assert max(first_run_start, second_run_start) < first_end
    # ... yet the second training step started only after the first one had finished
    assert first_end <= second_start < second_end
    # because its claim on the pool's one slot was refused until then
    assert any("Step blocked by limit for pool gpu" in m for m in _messages(instance, second_id))
    assert not any("blocked by limit" in m for m in _messages(instance, first_id))
    info = instance.event_log_storage.get_concurrency_info("gpu")
    assert info.slot_count == 1 and info.active_slot_count == 0 and info.pending_step_count == 0

    # both trained: the same dataset and seed may give the same weights, whose version is then reused
    for run_id in (first_id, second_id):
        assert any("epoch 1/1" in m for m in _messages(instance, run_id))
        assert (hoban_home / SCRATCH / "base_model" / run_id / "weights" / "best.pt").is_file()
    assert instance.get_latest_materialization_event(dg.AssetKey("base_model")).run_id == second_id
    assert 1 <= len(Lake(hoban_home).versions("base_model")) <= 2


def test_an_unchanged_job_is_reused_and_a_changed_dataset_retrains(hoban_home, small_site, tmp_path, monkeypatch):
    dataset = tmp_path / "base_dataset"
    shutil.copytree(small_site / "base_dataset", dataset)
    config = tmp_path / "hoban.yaml"
    config.write_text(yaml.safe_dump({"base_dataset": str(dataset), "train_profile": "test"}))
    monkeypatch.setenv("HOBAN_CONFIG", str(config))
    job = base_model_job()
    with dg.instance_for_test() as instance:
        def materialize(**config) -> dict:
            run_config = {"ops": {"base_model": {"config": config}}} if config else None
            result = job.execute_in_process(instance=instance, run_config=run_config)
            return result.asset_materializations_for_node("base_model")[0].metadata

        first = materialize()
        assert first["reused_version"].value is False
        again = materialize()
        assert again["reused_version"].value is True and again["version"] == first["version"]
        assert again["val/mAP50"] == first["val/mAP50"]
        assert materialize(retrain=True)["reused_version"].value is False
        label = next((dataset / "labels" / "train").glob("*.txt"))
        label.write_text(label.read_text() + "0 0.5 0.5 0.1 0.1\n")
        assert materialize()["reused_version"].value is False  # the dataset changed: trained anew
    assert len(list((hoban_home / "runs" / "base_model").iterdir())) == 3
