"""The deployment tests' servers: a PostgreSQL server started for the session, a gRPC code
server, and `hoban serve` (the webserver and the daemon) on loopback with deploy/dagster.yaml
and deploy/workspace.yaml, every port picked free. Nothing here is mocked; a server that cannot
start fails the test with its reason and its log, never a skip."""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LOCATION = "hoban_pipelines"
BROKEN_LOCATION = "broken_location"
PG_USER = "hoban"
START_TIMEOUT_S = 180
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else f"({path} not written)"


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    initdb = found[-1] if found else shutil.which("initdb")
    if not initdb:
        pytest.fail("no PostgreSQL server here (initdb not found): run deploy/test-system-packages.sh "
                    "(`make test` does) or install Debian's postgresql")
    return Path(initdb).parent


@dataclass
class PostgresServer:
    """One PostgreSQL cluster on 127.0.0.1 in a temp folder; as root it runs as user postgres
    (the server refuses root)."""

    bin: Path
    root: Path
    port: int
    password: str
    log: Path
    as_user: list[str]

    def run(self, tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([*self.as_user, str(self.bin / tool), *args], capture_output=True, text=True,
                              timeout=timeout)

    def create_database(self, name: str) -> str:
        import psycopg2

        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user=PG_USER, password=self.password,
                                      dbname="postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        connection.close()
        return name

    def env(self, database: str, password: str | None = None) -> dict[str, str]:
        return {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(self.port), "DAGSTER_PG_USER": PG_USER,
                "DAGSTER_PG_PASSWORD": self.password if password is None else password, "DAGSTER_PG_DB": database}


@pytest.fixture(scope="session")
def postgres_server():
    bin_dir = _postgres_bin()
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="hoban-pg-"))
    if os.geteuid() == 0:
        if not shutil.which("runuser"):
            pytest.fail("running as root, PostgreSQL needs another user and runuser is missing")
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root and there is no `postgres` user to run the server as "
                        "(Debian's postgresql package creates it)")
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    root.chmod(0o700)
    password = secrets.token_hex(12)
    pwfile = root / "pw"
    pwfile.write_text(password + "\n")
    if as_user:
        shutil.chown(pwfile, "postgres")
    server = PostgresServer(bin_dir, root, free_port(), password, root / "server.log", as_user)
    made = server.run("initdb", "-D", str(root / "data"), "-U", PG_USER, "--auth=scram-sha-256",
                      f"--pwfile={pwfile}", "-E", "UTF8")
    if made.returncode:
        pytest.fail(f"initdb failed:\n{made.stdout}\n{made.stderr}")
    options = f"-c listen_addresses=127.0.0.1 -p {server.port} -k {root} -c fsync=off -c max_connections=200"
    started = server.run("pg_ctl", "-D", str(root / "data"), "-l", str(server.log), "-o", options, "-w", "-t", "60",
                         "start")
    if started.returncode:
        pytest.fail(f"PostgreSQL did not start:\n{started.stdout}\n{started.stderr}\n{_tail(server.log)}")
    try:
        yield server
    finally:
        server.run("pg_ctl", "-D", str(root / "data"), "-m", "fast", "-w", "stop", timeout=60)
        shutil.rmtree(root, ignore_errors=True)


class GraphQLError(AssertionError):
    pass


@dataclass
class Deployment:
    """The running deployment: its folders, its processes' logs and its GraphQL endpoint."""

    root: Path
    url: str
    env: dict[str, str]
    hoban_home: Path
    drop: Path
    logs: dict[str, Path] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 60) -> dict:
        request = urllib.request.Request(f"{self.url}/graphql", method="POST",
                                         data=json.dumps({"query": query, "variables": variables or {}}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.load(response)
        if body.get("errors"):
            raise GraphQLError(json.dumps(body["errors"], indent=1)[:4000])
        return body["data"]

    def log_tails(self) -> str:
        return "\n".join(f"--- {name} ---\n{_tail(path, 3000)}" for name, path in self.logs.items())

    def alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                pytest.fail(f"{name} exited with {process.returncode}\n{self.log_tails()}")

    def launch(self, *, job: str = "__ASSET_JOB", assets: list[str] | None = None, partition: str | None = None,
               run_config: dict | None = None) -> str:
        selector = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__", "jobName": job}
        if assets:
            selector["assetSelection"] = [{"path": [name]} for name in assets]
        tags = [{"key": "dagster/partition", "value": partition}] if partition else []
        data = self.graphql(LAUNCH, {"params": {"selector": selector, "runConfigData": run_config or {},
                                                "executionMetadata": {"tags": tags}}})
        result = data["launchRun"]
        assert result["__typename"] == "LaunchRunSuccess", json.dumps(result)[:3000]
        return result["run"]["runId"]

    def run_status(self, run_id: str) -> dict:
        return self.graphql(RUN, {"runId": run_id})["runOrError"]

    def wait_for_runs(self, run_ids: list[str], timeout: float = 600) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            runs = [self.run_status(run_id) for run_id in run_ids]
            if all(run["status"] in TERMINAL for run in runs):
                return runs
            self.alive()
            if time.monotonic() > deadline:
                pytest.fail(f"runs not finished after {timeout} s: {[(r['runId'], r['status']) for r in runs]}\n"
                            f"{self.log_tails()}")
            time.sleep(1)

    def succeed(self, **launch) -> str:
        run_id = self.launch(**launch)
        run = self.wait_for_runs([run_id])[0]
        assert run["status"] == "SUCCESS", f"run {run_id} {run['status']}:\n{self.failure(run_id)}"
        return run_id

    def failure(self, run_id: str) -> str:
        data = self.graphql(RUN_EVENTS, {"runId": run_id})
        events = data["logsForRun"].get("events") or []
        return "\n".join(f"{e['__typename']}: {e.get('message')} {json.dumps(e.get('error') or '')[:1500]}"
                         for e in events if "Failure" in e["__typename"] or e.get("level") == "ERROR")[-6000:]

    def materialized(self, asset: str, partition: str | None = None) -> bool:
        return bool(self.latest_materialization(asset, partition))

    def latest_materialization(self, asset: str, partition: str | None = None) -> dict | None:
        data = self.graphql(MATERIALIZATIONS, {"key": {"path": [asset]},
                                               "partitions": [partition] if partition else None})
        found = data["assetOrError"]
        if found["__typename"] != "Asset" or not found["assetMaterializations"]:
            return None
        return found["assetMaterializations"][0]


def metadata(materialization: dict) -> dict[str, object]:
    """label -> value of a materialization's metadata entries, as GraphQL returns them."""
    values = {}
    for entry in materialization["metadataEntries"]:
        value = next((entry[k] for k in ("intValue", "floatValue", "text", "path", "jsonString", "mdStr", "boolValue")
                      if entry.get(k) is not None), None)
        values[entry["label"]] = json.loads(value) if entry["__typename"] == "JsonMetadataEntry" else value
    return values


LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidOutputError { stepKey }
  }
}"""
RUN = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId status jobName startTime endTime tags { key value } }
  }
}"""
RUN_EVENTS = """
query Events($runId: ID!) {
  logsForRun(runId: $runId, limit: 5000) {
    __typename
    ... on EventConnection {
      events {
        __typename
        ... on MessageEvent { message level timestamp stepKey }
        ... on ExecutionStepFailureEvent { error { message causes { message } } }
        ... on RunFailureEvent { error { message } }
      }
    }
  }
}"""
MATERIALIZATIONS = """
query Materializations($key: AssetKeyInput!, $partitions: [String!]) {
  assetOrError(assetKey: $key) {
    __typename
    ... on Asset {
      assetMaterializations(limit: 1, partitions: $partitions) {
        runId partition timestamp
        metadataEntries {
          label __typename
          ... on IntMetadataEntry { intValue }
          ... on FloatMetadataEntry { floatValue }
          ... on TextMetadataEntry { text }
          ... on PathMetadataEntry { path }
          ... on JsonMetadataEntry { jsonString }
          ... on MarkdownMetadataEntry { mdStr }
          ... on BoolMetadataEntry { boolValue }
        }
      }
    }
  }
}"""
LOCATIONS = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name loadStatus
        locationOrLoadError { __typename ... on PythonError { message causes { message } } }
      }
    }
  }
}"""

# a code location that cannot load, beside ours: the webserver must show its error, the daemon go on
BROKEN_SOURCE = 'raise RuntimeError("this code location is broken on purpose (team deployment test)")\n'


def _workspace(root: Path) -> Path:
    """deploy/workspace.yaml's gRPC location, plus the broken one."""
    config = yaml.safe_load((REPO / "deploy" / "workspace.yaml").read_text())
    (root / "broken_location.py").write_text(BROKEN_SOURCE)
    config["load_from"].append({"python_file": {"relative_path": "broken_location.py",
                                                "location_name": BROKEN_LOCATION}})
    path = root / "workspace.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _start(deployment: Deployment, name: str, command: list[str]) -> subprocess.Popen:
    log = deployment.root / f"{name}.log"
    deployment.logs[name] = log
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=REPO, env=deployment.env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    deployment.processes[name] = process
    return process


def _wait_until_loaded(deployment: Deployment) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        deployment.alive()
        try:
            data = deployment.graphql(LOCATIONS, timeout=10)
            entries = {e["name"]: e for e in data["workspaceOrError"]["locationEntries"]}
            ours = entries.get(LOCATION)
            if ours and ours["loadStatus"] == "LOADED" and ours["locationOrLoadError"]:
                assert ours["locationOrLoadError"]["__typename"] == "RepositoryLocation", ours
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError, GraphQLError):
            pass
        time.sleep(1)
    pytest.fail(f"the webserver did not serve a loaded {LOCATION} within {START_TIMEOUT_S} s\n{deployment.log_tails()}")


def base_env(root: Path) -> dict[str, str]:
    """What every process of a deployment sees: its own instance and lake, the test profiles."""
    home = root / "hoban"
    config = root / "hoban.yaml"
    config.write_text(yaml.safe_dump({"demo_profile": "small", "train_profile": "test",
                                      "review_drop": str(root / "drop")}))
    dagster_home = root / "dagster_home"
    dagster_home.mkdir(exist_ok=True)
    shutil.copy(REPO / "deploy" / "dagster.yaml", dagster_home / "dagster.yaml")
    return {**os.environ, "DAGSTER_HOME": str(dagster_home), "HOBAN_HOME": str(home), "HOBAN_CONFIG": str(config),
            "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false", "YOLO_CONFIG_DIR": str(home / "ultralytics"),
            "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}


def stop_processes(processes: dict[str, subprocess.Popen]) -> None:
    for process in processes.values():
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes.values():
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="session")
def team_deployment(postgres_server, tmp_path_factory):
    """PostgreSQL, one gRPC code server, `hoban serve` with deploy/ files; runs go through the
    daemon's queue. Shared by the deployment and browser tests (starting it takes about 20 s)."""
    root = tmp_path_factory.mktemp("team")
    database = postgres_server.create_database("dagster_team")
    code_port, web_port = free_port(), free_port()
    env = {**base_env(root), **postgres_server.env(database),
           "DAGSTER_CODE_SERVER_HOST": "127.0.0.1", "DAGSTER_CODE_SERVER_PORT": str(code_port)}
    (root / "drop").mkdir()
    deployment = Deployment(root, f"http://127.0.0.1:{web_port}", env, Path(env["HOBAN_HOME"]), root / "drop")
    try:
        _start(deployment, "code-server", [str(BIN / "dagster"), "code-server", "start", "-m",
                                           "hoban_pipelines.definitions", "-h", "127.0.0.1", "-p", str(code_port),
                                           "--location-name", LOCATION])
        _start(deployment, "hoban-serve", [str(BIN / "hoban"), "serve", "-w", str(_workspace(root)),
                                           "--port", str(web_port)])
        _wait_until_loaded(deployment)
        yield deployment
    finally:
        stop_processes(deployment.processes)
