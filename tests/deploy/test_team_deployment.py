"""The team deployment with real processes: PostgreSQL, a gRPC code server, the webserver and the
daemon started by `hoban serve` from deploy/dagster.yaml and deploy/workspace.yaml. Everything is
driven the way the UI drives it, through the webserver's GraphQL API: a launched slice of the
graph materializes through the daemon's run queue and its metadata and lineage read back; two GPU
materializations requested at once take turns in the ``gpu`` pool; the schedule and the
drop-folder sensor are turned on and the daemon imports a dropped export; a code location that
fails to load shows its error while the daemon keeps going; and `hoban serve` refuses a wrong
PostgreSQL password and a port in use with one clear line each."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import time
import zipfile
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import cv2
import numpy as np
import psycopg2

from deployment_support import BIN, BROKEN_LOCATION, LOCATION, LOCATIONS, REPO, Deployment, base_env, free_port, metadata
from hoban_pipelines.core.lake import Lake
from hoban_pipelines.cvat.writer import BoxShape, ImageEntry, LabelSpec, write_images_export
from hoban_pipelines.review.drop_folder import KEY_LENGTH
from hoban_pipelines.review.packages import SCORE_ATTRIBUTE, ReviewBox, ReviewImage, build_review_packages

SLICE = ["demo_site", "go2k_manual", "go2k_split"]
CLASSES = ["person_with_helmet", "person_without_helmet"]
WIDTH, HEIGHT = 320, 180
SITE_TIMEZONE = "Asia/Seoul"


def ensure(deployment: Deployment, assets: list[str]) -> None:
    """Materialize what a test builds on, once per session (each test can run alone)."""
    missing = [asset for asset in assets if not deployment.materialized(asset)]
    if missing:
        deployment.succeed(assets=missing)


def step_span(deployment: Deployment, run_id: str, step: str) -> tuple[float, float]:
    events = deployment.graphql(STEP_EVENTS, {"runId": run_id})["logsForRun"]["events"]
    times = {e["__typename"]: float(e["timestamp"]) / 1000 for e in events
             if e.get("stepKey") == step and e["__typename"] in ("ExecutionStepStartEvent", "ExecutionStepSuccessEvent")}
    return times["ExecutionStepStartEvent"], times["ExecutionStepSuccessEvent"]


def event_types(deployment: Deployment, run_id: str) -> list[str]:
    return [e["__typename"] for e in deployment.graphql(STEP_EVENTS, {"runId": run_id})["logsForRun"]["events"]]


def test_a_launched_slice_materializes_with_metadata_and_lineage_in_postgres(team_deployment: Deployment):
    deployment = team_deployment
    ensure(deployment, ["demo_site"])  # the site is the inputs' folder, not an upstream asset: its own run first
    run_id = deployment.succeed(assets=SLICE[1:])
    assert {"RunEnqueuedEvent", "RunStartingEvent"} <= set(event_types(deployment, run_id))  # the daemon's queue

    split = deployment.latest_materialization("go2k_split")
    manual = deployment.latest_materialization("go2k_manual")
    assert split["runId"] == manual["runId"] == run_id
    split_meta, manual_meta = metadata(split), metadata(manual)
    assert (deployment.hoban_home / split_meta["lake_path"] / "_version.json").is_file()
    assert manual_meta["count/images"] == split_meta["count/train_images"] + split_meta["count/val_images"] > 0
    assert metadata(deployment.latest_materialization("demo_site"))["count/snapshots"] > 0
    # lineage: the graph's edges and the exact upstream version the split was made from
    nodes = {n["assetKey"]["path"][0]: n for n in deployment.graphql(LINEAGE, {"keys": [{"path": [a]} for a in SLICE]})
             ["assetNodes"]}
    assert ["go2k_manual"] in [k["path"] for k in nodes["go2k_split"]["dependencyKeys"]]
    assert {"cvat_exports", "snapshots"} <= {k["path"][0] for k in nodes["go2k_manual"]["dependencyKeys"]}
    assert split_meta["upstream"]["go2k_manual"] == manual_meta["version"]
    checks = {c["name"]: c["executionForLatestMaterialization"]["status"]
              for c in nodes["go2k_manual"]["assetChecksOrError"]["checks"]}
    assert checks and set(checks.values()) == {"SUCCEEDED"}, checks

    # the run history is PostgreSQL's, not a file beside the webserver
    env = deployment.env
    with psycopg2.connect(host=env["DAGSTER_PG_HOST"], port=env["DAGSTER_PG_PORT"], user=env["DAGSTER_PG_USER"],
                          password=env["DAGSTER_PG_PASSWORD"], dbname=env["DAGSTER_PG_DB"]) as connection:
        with connection.cursor() as cursor:
            cursor.execute("SELECT status FROM runs WHERE run_id = %s", (run_id,))
            assert cursor.fetchone() == ("SUCCESS",)
    assert not list(Path(env["DAGSTER_HOME"]).glob("**/*.db"))


def test_two_gpu_materializations_requested_at_once_run_one_after_the_other(team_deployment: Deployment):
    deployment = team_deployment
    ensure(deployment, ["demo_site"])
    # both requested before either started: each waits in the daemon's queue, then in the gpu pool
    first, second = (deployment.launch(assets=["base_model"], run_config={"ops": {"base_model": {"config": {
        "retrain": True}}}}) for _ in range(2))
    runs = deployment.wait_for_runs([first, second], timeout=900)
    assert [run["status"] for run in runs] == ["SUCCESS", "SUCCESS"], [deployment.failure(r) for r in (first, second)]
    spans = {run_id: step_span(deployment, run_id, "base_model") for run_id in (first, second)}
    earlier, later = sorted(spans, key=spans.get)
    assert spans[earlier][1] <= spans[later][0], spans  # never two trainings at once on the one GPU
    for run_id in (first, second):
        assert {"RunEnqueuedEvent", "RunStartingEvent"} <= set(event_types(deployment, run_id))
    messages = [e.get("message") or "" for e in
                deployment.graphql(STEP_EVENTS, {"runId": later})["logsForRun"]["events"]]
    started = {run["runId"]: run["startTime"] for run in runs}
    # the later one either waited at its step for the pool's slot or in the queue until it was free
    assert (any("blocked by limit for pool gpu" in m for m in messages)
            or started[later] >= spans[earlier][1] - 1), messages[-20:]
    pool = deployment.graphql(POOL)["instance"]["concurrencyLimit"]
    assert pool["slotCount"] == 1 and pool["activeSlotCount"] == 0 and pool["pendingStepCount"] == 0


def _package(home: Path, frames: Path) -> list[str]:
    """A review round's package in the lake, as cvat_review_packages leaves it (the round itself
    needs a trained labeller; it is tested in tests/review and the demo)."""
    images, names = [], []
    for n in range(2):
        path = frames / f"cam1_20260211_07050{n}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.random.default_rng(n).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8))
        names.append(f"captures/cam1/{path.name}")
        images.append(ReviewImage(path, names[-1], "captures", WIDTH, HEIGHT,
                                  (ReviewBox("person_with_helmet", 10, 10, 40, 80, 0.9),), camera="cam1"))
    with Lake(home).new_version("cvat_review_packages") as version:
        build_review_packages(images, CLASSES, version.path)
    return names


def _drop_export(drop: Path, names: list[str], scratch: Path) -> Path:
    """A reviewer's CVAT export (first box deleted, second kept), copied in as a whole file."""
    xml = scratch / "annotations.xml"
    entries = [ImageEntry(0, names[0], WIDTH, HEIGHT, []),
               ImageEntry(1, names[1], WIDTH, HEIGHT, [BoxShape("person_with_helmet", 10, 10, 40, 80)])]
    write_images_export(xml, task_name="review_part1", labels=[LabelSpec(c, [SCORE_ATTRIBUTE]) for c in CLASSES],
                        images=entries)
    staged = scratch / "review_part1.zip"
    with zipfile.ZipFile(staged, "w") as archive:
        archive.write(xml, "annotations.xml")
    target = drop / staged.name
    staged.rename(target)
    return target


def _instigator(deployment: Deployment, kind: str, name: str) -> dict:
    selector = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__", f"{kind}Name": name}
    query = SENSOR if kind == "sensor" else SCHEDULE
    found = deployment.graphql(query, {"selector": selector})[f"{kind}OrError"]
    assert found["__typename"] == kind.capitalize(), found
    return found


def _set_sensor(deployment: Deployment, name: str, on: bool) -> None:
    sensor = _instigator(deployment, "sensor", name)
    if on:
        selector = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__", "sensorName": name}
        result = deployment.graphql(START_SENSOR, {"selector": selector})["startSensor"]
        assert result["__typename"] == "Sensor" and result["sensorState"]["status"] == "RUNNING", result
    else:
        result = deployment.graphql(STOP_SENSOR, {"id": sensor["sensorState"]["id"]})["stopSensor"]
        assert result["__typename"] == "StopSensorMutationResult", result
        assert result["instigationState"]["status"] == "STOPPED", result


def test_the_schedule_and_the_sensor_turned_on_and_the_daemon_imports_a_dropped_export(team_deployment, tmp_path):
    deployment = team_deployment
    # the retraining this import would trigger trains go2k_v4 from go2k_v2: tested in tests/review
    _set_sensor(deployment, "retrain_after_review", on=False)
    _set_sensor(deployment, "reviewed_exports_sensor", on=False)  # default RUNNING: turned on below

    schedule = _instigator(deployment, "schedule", "nightly_captures")
    stopped = deployment.graphql(STOP_SCHEDULE, {"id": schedule["scheduleState"]["id"]})["stopRunningSchedule"]
    assert stopped["instigationState"]["status"] == "STOPPED", stopped
    selector = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__", "scheduleName": "nightly_captures"}
    started = deployment.graphql(START_SCHEDULE, {"selector": selector})["startSchedule"]
    assert started["__typename"] == "ScheduleStateResult" and started["scheduleState"]["status"] == "RUNNING", started
    next_tick = _instigator(deployment, "schedule", "nightly_captures")["futureTicks"]["results"][0]["timestamp"]
    assert datetime.fromtimestamp(next_tick, ZoneInfo(SITE_TIMEZONE)).strftime("%H:%M") == "02:00"

    names = _package(deployment.hoban_home, tmp_path / "frames")
    export = _drop_export(deployment.drop, names, tmp_path)
    key = hashlib.sha256(export.read_bytes()).hexdigest()[:KEY_LENGTH]
    _set_sensor(deployment, "reviewed_exports_sensor", on=True)

    deadline = time.monotonic() + 240  # two ticks 30 s apart: the file must hold still for one
    run_ids: list[str] = []
    while not run_ids:
        deployment.alive()
        assert time.monotonic() < deadline, f"the daemon launched no import for {export}\n{deployment.log_tails()}"
        ticks = _instigator(deployment, "sensor", "reviewed_exports_sensor")["sensorState"]["ticks"]
        run_ids = [run_id for tick in ticks for run_id in tick["runIds"]]
        time.sleep(2)
    run = deployment.wait_for_runs(run_ids)[0]
    assert run["status"] == "SUCCESS", deployment.failure(run["runId"])
    assert run["jobName"] == "review_import_job"
    assert {"key": "dagster/partition", "value": key} in run["tags"]
    labels = metadata(deployment.latest_materialization("reviewed_labels", key))
    assert labels["count/kept"] == 1 and labels["count/deleted"] == 1
    assert labels["precision"] == 0.5 and labels["recall"] == 1.0
    # lineage across the loop: the labels name the export version and the package they were read against
    assert set(labels["upstream"]) >= {"reviewed_exports", "cvat_review_packages"}

    health = deployment.graphql(DAEMONS)["instance"]["daemonHealth"]["allDaemonStatuses"]
    assert all(d["healthy"] for d in health if d["required"]), health


def test_a_code_location_that_fails_to_load_shows_its_error_and_the_daemon_keeps_running(team_deployment):
    deployment = team_deployment
    entries = {e["name"]: e for e in deployment.graphql(LOCATIONS)["workspaceOrError"]["locationEntries"]}
    broken = entries[BROKEN_LOCATION]["locationOrLoadError"]
    assert broken["__typename"] == "PythonError" and "broken_location.py" in broken["message"]
    assert any("broken on purpose" in cause["message"] for cause in broken["causes"]), broken
    assert entries[LOCATION]["locationOrLoadError"]["__typename"] == "RepositoryLocation"
    health = deployment.graphql(DAEMONS)["instance"]["daemonHealth"]["allDaemonStatuses"]
    required = {d["daemonType"]: d["healthy"] for d in health if d["required"]}
    assert {"SENSOR", "SCHEDULER", "QUEUED_RUN_COORDINATOR"} <= set(required) and all(required.values()), health
    # and it keeps ticking our location's sensors
    ticks = _instigator(deployment, "sensor", "cvat_completed_tasks_sensor")["sensorState"]["ticks"]
    assert ticks, "the daemon evaluated none of hoban_pipelines' sensors"
    deployment.alive()


def _serve(env: dict, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "hoban"), "serve", "-w", str(REPO / "deploy" / "workspace.yaml"), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_a_wrong_postgres_password_is_one_clear_line_and_nothing_starts(postgres_server, tmp_path):
    env = {**base_env(tmp_path), **postgres_server.env(postgres_server.create_database("dagster_wrong"),
                                                       password="not-the-password")}
    result = _serve(env, "--port", str(free_port()))
    assert result.returncode != 0
    assert "password authentication failed" in result.stderr and "DAGSTER_PG_PASSWORD" in result.stderr
    assert "started dagster" not in result.stderr and "Traceback" not in result.stderr


def test_a_port_in_use_is_refused_before_anything_starts(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _serve(base_env(tmp_path), "--port", str(port), timeout=60)
    assert result.returncode != 0
    assert f"port {port} on 127.0.0.1 is in use" in result.stderr and "--port" in result.stderr
    assert "started dagster" not in result.stderr


def test_a_public_address_needs_an_explicit_expose(tmp_path):
    result = _serve(base_env(tmp_path), "--host", "0.0.0.0", "--port", str(free_port()), timeout=60)
    assert result.returncode != 0 and "no login" in result.stderr and "--expose" in result.stderr


STEP_EVENTS = """
query Events($runId: ID!) {
  logsForRun(runId: $runId, limit: 10000) {
    ... on EventConnection { events { __typename ... on MessageEvent { message timestamp stepKey } } }
  }
}"""
LINEAGE = """
query Lineage($keys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    dependencyKeys { path }
    assetChecksOrError {
      __typename
      ... on AssetChecks { checks { name executionForLatestMaterialization { status } } }
    }
  }
}"""
POOL = """
{ instance { concurrencyLimit(concurrencyKey: "gpu") { slotCount activeSlotCount pendingStepCount } } }"""
DAEMONS = """
{ instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }"""
SENSOR = """
query Sensor($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { name sensorState { id status ticks(limit: 20) { status runIds timestamp } } }
  }
}"""
SCHEDULE = """
query Schedule($selector: ScheduleSelector!) {
  scheduleOrError(scheduleSelector: $selector) {
    __typename
    ... on Schedule { name scheduleState { id status } futureTicks(limit: 1) { results { timestamp } } }
  }
}"""
START_SENSOR = """
mutation Start($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status } }
    ... on PythonError { message }
  }
}"""
STOP_SENSOR = """
mutation Stop($id: String!) {
  stopSensor(id: $id) {
    __typename
    ... on StopSensorMutationResult { instigationState { status } }
    ... on PythonError { message }
  }
}"""
START_SCHEDULE = """
mutation Start($selector: ScheduleSelector!) {
  startSchedule(scheduleSelector: $selector) {
    __typename
    ... on ScheduleStateResult { scheduleState { status } }
    ... on PythonError { message }
  }
}"""
STOP_SCHEDULE = """
mutation Stop($id: String!) {
  stopRunningSchedule(id: $id) {
    __typename
    ... on ScheduleStateResult { instigationState: scheduleState { status } }
    ... on PythonError { message }
  }
}"""
