"""Installing the demo site: atomic, reused when identical, never over a different one silently."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hoban_pipelines.cli import main
from hoban_pipelines.demo.install import SiteExistsError, install_site


def test_identical_site_is_reused_without_regenerating(small_site):
    before = (small_site / "site.json").stat().st_mtime_ns
    summary, status = install_site(small_site, seed=7, profile="small")
    assert status == "up to date" and summary["profile"] == "small"
    assert (small_site / "site.json").stat().st_mtime_ns == before


def test_a_different_site_is_refused_then_renamed_aside_on_request(tmp_path):
    target = tmp_path / "demo_site"
    target.mkdir()
    (target / "site.json").write_text(json.dumps({"seed": 1, "profile": "small", "generator_version": "old"}))
    (target / "precious.txt").write_text("keep me")
    with pytest.raises(SiteExistsError, match=r"already holds a demo site with seed=1.*renames the old folder aside"):
        install_site(target, seed=7, profile="small")
    assert (target / "precious.txt").read_text() == "keep me"
    summary, status = install_site(target, seed=7, profile="small", replace=True)
    assert status == "replaced" and summary["seed"] == 7
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("demo_site.replaced-")]
    assert len(aside) == 1 and (aside[0] / "precious.txt").read_text() == "keep me"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_a_failed_generation_leaves_nothing(tmp_path, monkeypatch):
    import hoban_pipelines.demo.install as install

    def broken(out, **_):
        (out / "half.txt").write_text("partial")
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(install, "generate_site", broken)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        install_site(tmp_path / "demo_site", seed=7, profile="small")
    assert list(tmp_path.iterdir()) == []


def test_cli_generates_and_reports_counts(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["demo-site", "--out", str(tmp_path / "site"), "--profile", "small"])
    assert result.exit_code == 0, result.output
    assert "demo site created" in result.output and "snapshots" in result.output
    again = runner.invoke(main, ["demo-site", "--out", str(tmp_path / "site"), "--profile", "small", "--seed", "8"])
    assert again.exit_code == 1 and "already holds a demo site with seed=7" in again.output
    bad = runner.invoke(main, ["demo-site", "--out", str(tmp_path / "x"), "--profile", "huge"])
    assert bad.exit_code == 2 and "huge" in bad.output
