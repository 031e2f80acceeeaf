"""Run the whole graph on the local instance, as `make demo` does; the UI shows the same runs.

The output is meant to read well in a log (`make demo > log`, CI): one line per asset as it
finishes, with its time, and a closing table of every asset. Each run carries tags naming the
demo profile and the checkout's commit (``hoban/profile``, ``hoban/train_profile``,
``hoban/git_commit``), so the run list in the UI says what made it.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
import os
import subprocess
import sys
import uuid
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence, TextIO

import dagster as dg

from hoban_pipelines.core.settings import PROJECT_ROOT, Settings, hoban_home, load_settings
from hoban_pipelines.definitions import defs
from hoban_pipelines.assets.evaluation import DEFAULT_MODEL
from hoban_pipelines.assets.promotion import CANDIDATE
from hoban_pipelines.assets.training import PRODUCTION
from hoban_pipelines.core.lake import Lake
from hoban_pipelines.demo.crew import SITE_DAYS, SITE_EPOCH
from hoban_pipelines.jobs import (
    captures_job, demo_site_job, evaluation_job, observe_inputs_job, pipeline_job, promotion_job, retrain_job,
    review_import_job, review_round_job,
)

DEMO_JOBS = (demo_site_job.name, observe_inputs_job.name, pipeline_job.name, evaluation_job.name, promotion_job.name,
             captures_job.name, review_round_job.name, review_import_job.name, retrain_job.name)
# the partitioned jobs run once a partition: the demo evaluates its go2k_v2 and ingests each of its days
DEMO_PARTITIONS = {
    evaluation_job.name: [DEFAULT_MODEL],
    captures_job.name: [(SITE_EPOCH + timedelta(days=day)).date().isoformat() for day in range(SITE_DAYS)],
    retrain_job.name: [CANDIDATE],
}
# The demo's review round, scaled down from the team's 3,000 frames in tasks of 1,200: pseudo-labelling
# a 1080p frame takes about 0.4 s on 2 cores, and smaller tasks show the split (go2k_manual first).
DEMO_REVIEW_FRAMES = 160
DEMO_TASK_IMAGES = 100
TAG_PREFIX = "hoban/"
RUN_KEY_TAG = "dagster/run_key"  # what a sensor's run carries; the demo's in-process runs carry it too
UNKNOWN_COMMIT = "unknown"

# ultralytics 8.4 has no switch for its progress bars alone (utils/tqdm.py): YOLO_VERBOSE=false
# stops them but also sets its logger to ERROR, dropping its INFO and WARNING lines (each
# epoch's "all  P  R  mAP50" line among them). What it has is a non-interactive console mode,
# on whenever GITHUB_ACTIONS is in the environment (it tests presence, not the value): a bar
# never redraws, and prints its last state once, as a plain line, when it closes (the epoch's
# losses, the validation's header), with no carriage return. The value "false" keeps anything
# that reads the value (GITHUB_ACTIONS=true) from believing it runs on GitHub Actions.
# Training runs in a child process (Dagster Pipes), which inherits this environment.
LOG_FRIENDLY_ENV = {"GITHUB_ACTIONS": "false"}


def _echo(line: str) -> None:
    print(line, flush=True)  # flushed, so the lines keep their place among the children's output


def is_terminal(stream: TextIO | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError, OSError):  # closed or wrapped streams
        return False


def log_friendly_env(stdout: TextIO | None) -> dict[str, str]:
    """The environment children need so their output reads well where stdout goes: nothing for
    a terminal (the bars redraw in place there), ``LOG_FRIENDLY_ENV`` for a file or a pipe."""
    return {} if is_terminal(stdout) else dict(LOG_FRIENDLY_ENV)


@contextlib.contextmanager
def child_environment(stdout: TextIO | None) -> Iterator[dict[str, str]]:
    """Set ``log_friendly_env(stdout)`` in this process's environment (child processes inherit
    it) while the block runs; a variable already set is left as it is. Yields what was set."""
    added = {key: value for key, value in log_friendly_env(stdout).items() if key not in os.environ}
    os.environ.update(added)
    try:
        yield added
    finally:
        for key, value in added.items():
            if os.environ.get(key) == value:
                del os.environ[key]


def git_commit(root=PROJECT_ROOT) -> str:
    """The short commit of the checkout at ``root``; ``unknown`` without git or outside a checkout."""
    try:
        found = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--show-toplevel", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN_COMMIT
    lines = found.stdout.split()
    # a folder inside some other repository (a venv in a checkout) is not this checkout
    if found.returncode != 0 or len(lines) != 2 or os.path.realpath(lines[0]) != os.path.realpath(root):
        return UNKNOWN_COMMIT
    return lines[1]


def demo_tags(settings: Settings | None = None, root=PROJECT_ROOT) -> dict[str, str]:
    """The run tags of a demo run: the profiles it ran with and the checkout's commit."""
    settings = settings or load_settings()
    return {
        f"{TAG_PREFIX}profile": str(settings.demo_profile),
        f"{TAG_PREFIX}train_profile": str(settings.train_profile),
        f"{TAG_PREFIX}git_commit": git_commit(root),
    }


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 59.95:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


@dataclass
class AssetTiming:
    """One asset of one run: what happened to it and how long its step took until then."""

    asset: str
    job: str
    result: str = "not run"  # materialized, observed, failed, not run
    seconds: float | None = None
    reused: bool = False
    finished_at: float | None = None


def _step_assets(job: dg.JobDefinition) -> dict[str, list[str]]:
    """Step key -> the assets it produces (a step is an asset's op; one asset a step here)."""
    steps: dict[str, list[str]] = {}
    for key in job.asset_layer.executable_asset_keys:
        try:
            step = job.asset_layer.get(key).assets_def.node_def.name
        except Exception:  # noqa: BLE001 - a shape this graph does not have: name the step by the asset
            step = key.to_user_string()
        steps.setdefault(step, []).append(key.to_user_string())
    return steps


class RunReport:
    """Reads one run's event log entries, live (as an instance event listener) or afterwards,
    into one row per asset of the job; ``feed`` returns the line to print, if any."""

    def __init__(self, job: dg.JobDefinition, width: int = 0) -> None:
        self.job = job.name
        self.steps = _step_assets(job)
        self.rows = {asset: AssetTiming(asset, job.name) for assets in self.steps.values() for asset in assets}
        self.width = max([width, *map(len, self.rows)])
        self.step_started: dict[str, float] = {}
        self.run_started: float | None = None
        self.run_ended: float | None = None
        self.checks = {"passed": 0, "failed": 0}
        self.failed_check_steps: set[str | None] = set()

    @property
    def seconds(self) -> float | None:
        if self.run_started is None or self.run_ended is None:
            return None
        return self.run_ended - self.run_started

    def _finish(self, asset: str, result: str, entry: dg.EventLogEntry, reused: bool = False) -> str:
        row = self.rows.setdefault(asset, AssetTiming(asset, self.job))
        started = self.step_started.get(entry.step_key or "", entry.timestamp)
        row.result, row.seconds, row.reused, row.finished_at = result, entry.timestamp - started, reused, entry.timestamp
        verb = "FAILED after" if result == "failed" else f"{result} in"
        return f"  {asset:<{self.width}}  {verb} {format_seconds(row.seconds)}{' (reused version)' if reused else ''}"

    def feed(self, entry: dg.EventLogEntry) -> str | None:
        kind = entry.dagster_event_type
        if kind is None:
            return None
        if kind == dg.DagsterEventType.RUN_START:
            self.run_started = entry.timestamp
        elif kind in (dg.DagsterEventType.RUN_SUCCESS, dg.DagsterEventType.RUN_FAILURE, dg.DagsterEventType.RUN_CANCELED):
            self.run_ended = entry.timestamp
        elif kind == dg.DagsterEventType.STEP_START and entry.step_key:
            self.step_started[entry.step_key] = entry.timestamp
        elif kind == dg.DagsterEventType.ASSET_MATERIALIZATION and entry.asset_materialization:
            materialization = entry.asset_materialization
            reused = materialization.metadata.get("reused_version")
            return self._finish(materialization.asset_key.to_user_string(), "materialized", entry,
                                reused=getattr(reused, "value", reused) is True)
        elif kind == dg.DagsterEventType.ASSET_OBSERVATION and entry.asset_observation:
            return self._finish(entry.asset_observation.asset_key.to_user_string(), "observed", entry)
        elif kind == dg.DagsterEventType.ASSET_CHECK_EVALUATION and entry.asset_check_evaluation:
            evaluation = entry.asset_check_evaluation
            self.checks["passed" if evaluation.passed else "failed"] += 1
            if not evaluation.passed:
                self.failed_check_steps.add(entry.step_key)
                return (f"  {evaluation.asset_key.to_user_string():<{self.width}}  check {evaluation.check_name} failed"
                        f"{' (blocking: nothing downstream runs)' if evaluation.blocking else ''}")
        elif kind == dg.DagsterEventType.STEP_FAILURE and entry.step_key:
            if entry.step_key in self.failed_check_steps:
                return None  # said above
            pending = [a for a in self.steps.get(entry.step_key, []) if self.rows[a].result == "not run"]
            if pending:
                return "\n".join(self._finish(asset, "failed", entry) for asset in pending)
            seconds = entry.timestamp - self.step_started.get(entry.step_key, entry.timestamp)
            return f"  {entry.step_key:<{self.width}}  FAILED after {format_seconds(seconds)}"
        return None

    def listener(self, echo: Callable[[str], None]) -> Callable[[dg.EventLogEntry], None]:
        """An instance event listener printing each line as its event is stored; it never raises
        (a report must not fail the run)."""
        def _listen(entry: dg.EventLogEntry) -> None:
            try:
                line = self.feed(entry)
                if line:
                    echo(line)
            except Exception:  # noqa: BLE001
                pass

        return _listen

    def ordered_rows(self) -> list[AssetTiming]:
        done = sorted((r for r in self.rows.values() if r.finished_at is not None), key=lambda r: r.finished_at)
        return done + sorted((r for r in self.rows.values() if r.finished_at is None), key=lambda r: r.asset)


def run_report(instance: dg.DagsterInstance, run_id: str, job: dg.JobDefinition, width: int = 0) -> RunReport:
    """The report of a finished run (e.g. an ``ExecuteInProcessResult``'s ``run_id`` and
    ``job_def``), read from the instance's event log."""
    report = RunReport(job, width)
    for entry in instance.all_logs(run_id):
        report.feed(entry)
    return report


def summary_table(reports: Sequence[RunReport]) -> list[str]:
    """The closing table: every asset of every run with its result and time, then the total."""
    rows = [row for report in reports for row in report.ordered_rows()]
    results = [f"{row.result}{' *' if row.reused else ''}" for row in rows]
    durations = [report.seconds for report in reports if report.seconds is not None]
    runs = f"{len(reports)} run{'s' * (len(reports) != 1)}"
    width = max([len("asset"), *(len(row.asset) for row in rows)])
    middle = max([len("result"), len(runs), *map(len, results)])
    lines = [f"  {'asset':<{width}}  {'result':<{middle}}  {'time':>10}  run",
             f"  {'-' * width}  {'-' * middle}  {'-' * 10}  {'-' * max([3, *(len(row.job) for row in rows)])}"]
    for row, result in zip(rows, results):
        lines.append(f"  {row.asset:<{width}}  {result:<{middle}}  {format_seconds(row.seconds):>10}  {row.job}")
    lines.append(f"  {'total':<{width}}  {runs:<{middle}}  {format_seconds(sum(durations) if durations else None):>10}")
    notes = []
    if any(row.reused for row in rows):
        notes.append("* an existing lake version reused")
    passed = sum(report.checks["passed"] for report in reports)
    failed = sum(report.checks["failed"] for report in reports)
    if passed or failed:
        notes.append(f"asset checks: {passed} passed, {failed} failed")
    return lines + [f"  ({'; '.join(notes)})"] * bool(notes)


def _runs(selected: list[dg.JobDefinition], run_configs: dict, quiet: dict, instance: dg.DagsterInstance,
          echo: Callable[[str], None]) -> Iterator[tuple[dg.JobDefinition, str | None, dict, dict]]:
    """Each run of the demo, in order: a partitioned job once a partition, and the import of the
    simulated review's export as the sensor asks for it (decided when its turn comes, after the
    review round made the packages)."""
    for job in selected:
        if job.name == review_import_job.name:
            for request in simulated_review(instance, echo):
                yield job, request.partition_key, {**request.run_config, **quiet}, dict(request.tags)
            continue
        if job.name == promotion_job.name and Lake(hoban_home()).versions(PRODUCTION):
            echo(f"{PRODUCTION} exists: the first model is promoted once; later ones by the review loop")
            continue
        for partition in DEMO_PARTITIONS.get(job.name, [None]):
            yield job, partition, run_configs.get(job.name, quiet), {}


def simulated_review(instance: dg.DagsterInstance, echo: Callable[[str], None]) -> list[dg.RunRequest]:
    """A reviewer for the demo: the last review task is corrected toward the demo world's exact
    boxes and exported as a CVAT zip into the drop folder, then the real sensor ticks twice, as
    the daemon would (the first sees the file, the second finds it unchanged and asks for its
    import). An export imported before (the same run key) is not imported again."""
    from hoban_pipelines.assets.demo import DEMO_SITE_DIR
    from hoban_pipelines.assets.retraining import reviewed_exports_sensor_fn
    from hoban_pipelines.demo.reviewer import review_package
    from hoban_pipelines.resources import LakeResource, SettingsResource
    from hoban_pipelines.review.packages import last_task_annotations

    settings = load_settings()
    packages = LakeResource().recorded("cvat_review_packages")
    task_xml = last_task_annotations(packages.resolve(hoban_home()))
    drop = settings.path("review_drop")
    drop.mkdir(parents=True, exist_ok=True)
    export = drop / f"{task_xml.stem}_reviewed.zip"
    done = review_package(task_xml, export, hoban_home() / DEMO_SITE_DIR, seed=settings.demo_seed)
    changes = ", ".join(f"{count} {change}" for change, count in done.items() if change not in ("task", "per_image"))
    echo(f"simulated review of {done['task']}: {changes} -> {export}")
    cursor = None
    for _ in range(2):
        context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                          resources={"settings": SettingsResource()})
        result = reviewed_exports_sensor_fn(context, SettingsResource())
        cursor = context.cursor
    requests = result.run_requests if isinstance(result, dg.SensorResult) else []
    fresh = [r for r in requests if not instance.get_run_records(dg.RunsFilter(tags={RUN_KEY_TAG: r.run_key}), limit=1)]
    for request in fresh:
        instance.add_dynamic_partitions("reviewed_exports", [request.partition_key])
    return [dg.RunRequest(run_key=r.run_key, partition_key=r.partition_key, run_config=r.run_config,
                          tags={**r.tags, RUN_KEY_TAG: r.run_key}) for r in fresh]


def run_demo(
    *,
    replace_site: bool = False,
    echo: Callable[[str], None] = _echo,
    instance: dg.DagsterInstance | None = None,
    jobs: Sequence[str] = DEMO_JOBS,
    stdout: TextIO | None = None,
    tags: Mapping[str, str] | None = None,
) -> bool:
    """Generate the demo site, observe the inputs, materialize every asset; False if a run failed.

    ``jobs`` runs only some of the demo's jobs, in order (tests); ``stdout`` is where the
    children's output goes (default ``sys.stdout``): when it is not a terminal, the children
    get ``LOG_FRIENDLY_ENV`` (each ultralytics progress bar becomes one line, no redraws).
    """
    instance = instance or dg.DagsterInstance.get()
    tags = dict(tags) if tags is not None else demo_tags()
    # step events (DEBUG) stay in the UI; the assets' own INFO lines (a training's epochs) print
    quiet = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    run_configs = {
        demo_site_job.name: {"ops": {"demo_site": {"config": {"replace": replace_site}}}, **quiet},
        observe_inputs_job.name: quiet,
        pipeline_job.name: quiet,
        evaluation_job.name: quiet,
        captures_job.name: quiet,
        # the round is labelled by go2k_v2 by name, not by "production": a second demo run, after go2k_v4
        # may have been promoted, then reuses the round instead of labelling and reviewing again
        review_round_job.name: {"ops": {"captures_selection": {"config": {"target": DEMO_REVIEW_FRAMES}},
                                        "pseudo_labels": {"config": {"labeller": DEFAULT_MODEL}},
                                        "cvat_review_packages": {"config": {"max_images": DEMO_TASK_IMAGES}}},
                                **quiet},
        # the first model ever is promoted: the go2k_v2 the demo evaluated
        promotion_job.name: {"ops": {"production_model": {"config": {"candidate": DEFAULT_MODEL}}}, **quiet},
        # from go2k_v2 by name rather than from "production", which may be the go2k_v4 of an earlier demo run
        retrain_job.name: {"ops": {CANDIDATE: {"config": {"start_from": DEFAULT_MODEL}}}, **quiet},
    }
    selected = [job for job in (defs.resolve_job_def(name) for name in jobs) if job.asset_layer.executable_asset_keys]
    width = max([len(key.to_user_string()) for job in selected for key in job.asset_layer.executable_asset_keys] or [0])
    echo("demo run tags: " + ", ".join(f"{key}={value}" for key, value in tags.items()))
    reports: list[RunReport] = []
    failed: dg.ExecuteInProcessResult | None = None
    with child_environment(sys.stdout if stdout is None else stdout), warnings.catch_warnings():
        # raised by Dagster's own Pipes code on every training launch, nothing to act on
        warnings.filterwarnings("ignore", category=dg.PreviewWarning, message=".*expected_writer_count.*")
        for job, partition, run_config, run_tags in _runs(selected, run_configs, quiet, instance, echo):
            run_id = str(uuid.uuid4())
            echo(f"running {job.name}{f' for {partition}' if partition else ''} (run {run_id[:8]}) ...")
            instance.add_event_listener(run_id, RunReport(job, width).listener(echo))
            result = job.execute_in_process(
                instance=instance, run_config=run_config, raise_on_error=False,
                run_id=run_id, tags={**tags, **run_tags}, partition_key=partition,
            )
            reports.append(run_report(instance, result.run_id, job, width))
            if not result.success:
                failed = result
                break
    echo("")
    echo("summary:")
    for line in summary_table(reports):
        echo(line)
    if failed is not None:
        echo(f"{failed.job_def.name} failed (run {failed.run_id}); open the run in the UI (`make ui`) for the step logs")
        return False
    echo(f"done. Versions are under {hoban_home() / 'lake'}; the demo site is {hoban_home() / 'demo_site'}.")
    echo("Open the UI with `make ui` to browse assets, lineage and metadata.")
    return True
