"""What `make demo` prints and records: a line per asset, a closing table, run tags, no
progress bars in a log, and the instance config it runs on. Only cheap jobs run here; the
whole graph runs in test_pipeline.py."""

import io
import os
import re
import shutil
import subprocess
import sys

import dagster as dg
import pytest
from conftest import REPO

from hoban_pipelines.demo_run import (
    LOG_FRIENDLY_ENV,
    child_environment,
    demo_tags,
    git_commit,
    log_friendly_env,
    run_demo,
    run_report,
    summary_table,
)
from hoban_pipelines.jobs import demo_site_job, observe_inputs_job

CHEAP_JOBS = [demo_site_job.name, observe_inputs_job.name]
INPUTS = ["base_dataset", "capture_folders", "cvat_exports", "roi_videos", "snapshots"]
SECONDS = r"\d+\.\d s|\d+ min \d\d s"


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def no_bar_env(monkeypatch):
    for key in LOG_FRIENDLY_ENV:
        monkeypatch.delenv(key, raising=False)


def _expected_commit() -> str:
    found = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return found.stdout.strip() if found.returncode == 0 else "unknown"


def test_cheap_jobs_print_a_line_per_asset_a_table_and_tag_their_runs(small_config, no_bar_env):
    lines: list[str] = []
    env_while: dict[str, str | None] = {}

    def echo(line: str) -> None:
        lines.append(line)
        env_while[line] = os.environ.get("GITHUB_ACTIONS")

    with dg.instance_for_test() as instance:
        assert run_demo(instance=instance, echo=echo, jobs=CHEAP_JOBS, stdout=io.StringIO())
        runs = instance.get_runs()
        assert sorted(run.job_name for run in runs) == sorted(CHEAP_JOBS)
        for run in runs:
            assert run.tags["hoban/profile"] == "small"
            assert run.tags["hoban/train_profile"] == "test"
            assert run.tags["hoban/git_commit"] == _expected_commit()
        assert instance.get_runs(filters=dg.RunsFilter(tags={"hoban/profile": "small"}))

    text = "\n".join(lines)
    # one line per asset as it finishes, printed while the runs go on (before the summary)
    live = lines[: lines.index("summary:")]
    assert re.search(rf"^  demo_site +materialized in ({SECONDS})$", "\n".join(live), re.M), text
    for asset in INPUTS:
        assert re.search(rf"^  {asset} +observed in ({SECONDS})$", "\n".join(live), re.M), text
    # the closing table: every asset of both runs, its result, time and run; then the total
    table = lines[lines.index("summary:") + 1:next(i for i, line in enumerate(lines) if line.startswith("done."))]
    assert re.match(r"^  asset +result +time +run$", table[0])
    rows = {line.split()[0]: line for line in table[2:] if line.strip() and not line.strip().startswith("(")}
    assert set(rows) == {"demo_site", *INPUTS, "total"}
    assert re.search(rf"materialized +({SECONDS}) +demo_site_job$", rows["demo_site"])
    assert all(re.search(rf"observed +({SECONDS}) +observe_inputs_job$", rows[a]) for a in INPUTS)
    assert re.search(rf"2 runs +({SECONDS})$", rows["total"])
    assert lines[0] == f"demo run tags: hoban/profile=small, hoban/train_profile=test, hoban/git_commit={_expected_commit()}"
    assert "done." in text
    # the log-friendly environment is on while the runs go (children inherit it), off after
    running = [line for line in lines if line.startswith("running ")]
    assert len(running) == 2 and {env_while[line] for line in running} == {LOG_FRIENDLY_ENV["GITHUB_ACTIONS"]}
    assert "GITHUB_ACTIONS" not in os.environ


def test_on_a_terminal_the_bars_stay(small_config, no_bar_env):
    seen: list[str | None] = []
    lines: list[str] = []

    def echo(line: str) -> None:
        lines.append(line)
        seen.append(os.environ.get("GITHUB_ACTIONS"))

    with dg.instance_for_test() as instance:
        assert run_demo(instance=instance, echo=echo, jobs=[demo_site_job.name], stdout=FakeTerminal())
    assert set(seen) == {None}  # on a terminal ultralytics' bars redraw in place, as they should
    assert any(re.match(rf"^  demo_site +materialized in ({SECONDS})$", line) for line in lines), lines


def test_the_report_of_a_finished_run_names_failed_and_skipped_assets():
    @dg.asset
    def fine() -> int:
        return 1

    @dg.asset
    def broken(fine: int) -> int:
        raise ValueError("boom")

    @dg.asset
    def after(broken: int) -> int:
        return broken

    with dg.instance_for_test() as instance:
        result = dg.materialize([fine, broken, after], instance=instance, raise_on_error=False)
        report = run_report(instance, result.run_id, result.job_def)
    rows = {row.asset: row for row in report.ordered_rows()}
    assert [rows[a].result for a in ("fine", "broken", "after")] == ["materialized", "failed", "not run"]
    assert rows["fine"].seconds >= 0 and rows["broken"].seconds >= 0 and rows["after"].seconds is None
    table = summary_table([report])
    assert any(re.match(r"^  after +not run +- +__ephemeral_asset_job__$", line) for line in table), table
    assert report.seconds is not None and re.search(rf"1 run +({SECONDS})$", table[-1])


def test_log_friendly_env_only_when_stdout_is_not_a_terminal(no_bar_env):
    assert log_friendly_env(FakeTerminal()) == {}
    assert log_friendly_env(io.StringIO()) == LOG_FRIENDLY_ENV
    assert log_friendly_env(None) == LOG_FRIENDLY_ENV
    with child_environment(io.StringIO()) as added:
        assert added == LOG_FRIENDLY_ENV and os.environ["GITHUB_ACTIONS"] == "false"
    assert "GITHUB_ACTIONS" not in os.environ


def test_a_value_already_set_is_left_alone(monkeypatch):
    monkeypatch.setenv("GITHUB_ACTIONS", "true")  # a real GitHub runner
    with child_environment(io.StringIO()) as added:
        assert added == {} and os.environ["GITHUB_ACTIONS"] == "true"
    assert os.environ["GITHUB_ACTIONS"] == "true"


CHILD = """
from dagster_pipes import open_dagster_pipes
from ultralytics.utils import LOGGER, TQDM

with open_dagster_pipes() as context:
    LOGGER.info("an info line")
    for _ in TQDM(range(50), desc="epoch 1/1", mininterval=0):
        pass
    LOGGER.warning("a warning line")
    context.report_asset_materialization()
"""


def test_a_pipes_child_prints_each_bar_once_as_a_line_without_carriage_returns(no_bar_env, capfd):
    """The training child's way: PipesSubprocessClient.run(..., env={"YOLO_OFFLINE": "1"})."""
    @dg.asset
    def child_bars(context: dg.AssetExecutionContext, pipes_subprocess_client: dg.PipesSubprocessClient) -> dg.MaterializeResult:
        return pipes_subprocess_client.run(
            context=context, command=[sys.executable, "-c", CHILD], env={"YOLO_OFFLINE": "1"},
        ).get_materialize_result()

    with child_environment(io.StringIO()), dg.instance_for_test() as instance:
        result = dg.materialize([child_bars], instance=instance,
                                resources={"pipes_subprocess_client": dg.PipesSubprocessClient()})
    assert result.success
    out = capfd.readouterr().out
    assert "\r" not in out, repr(out)
    bar_lines = [line for line in out.splitlines() if line.startswith("epoch 1/1")]
    assert len(bar_lines) == 1 and "100%" in bar_lines[0] and "50/50" in bar_lines[0], repr(out)
    assert "an info line" in out and "a warning line" in out  # ultralytics' own lines stay


def test_git_commit_is_the_short_sha_or_unknown(tmp_path, monkeypatch):
    assert git_commit() == _expected_commit()
    assert git_commit(tmp_path) == "unknown"  # not a checkout
    inside = REPO / "hoban_pipelines"  # a folder inside a checkout is not the checkout
    assert git_commit(inside) == "unknown"
    monkeypatch.setenv("PATH", str(tmp_path))  # no git at all
    assert git_commit() == "unknown"
    settings = type("S", (), {"demo_profile": "demo", "train_profile": "full"})()
    assert demo_tags(settings) == {"hoban/profile": "demo", "hoban/train_profile": "full", "hoban/git_commit": "unknown"}


def test_the_demo_instance_config_loads_with_nux_and_telemetry_off(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        assert instance.get_settings("nux") == {"enabled": False}
        assert instance.nux_enabled is False
        assert instance.telemetry_enabled is False
        assert instance.run_monitoring_enabled
    # the file is checked against the instance schema: a key it does not know fails to load
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text() + "\nnux_typo:\n  enabled: false\n")
    with pytest.raises(dg.DagsterInvalidConfigError):
        dg.DagsterInstance.get()
