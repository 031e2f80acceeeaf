"""Shared fixtures: an isolated HOBAN_HOME, settings file and Dagster instance per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# the team deployment's servers for tests/deploy, registered here: a second module named
# conftest would shadow this one for the tests that import from it
from deployment_support import postgres_server, team_deployment  # noqa: F401

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

DEPLOYMENT_FIXTURES = {"team_deployment", "postgres_server"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests on the team deployment run last, in their order: its daemon, webserver and code
    server poll the whole time they live (a session fixture), and the tests after them would share
    the two cores with them (the end-to-end demo test took 375 s after them, 307 s before)."""
    items.sort(key=lambda item: bool(DEPLOYMENT_FIXTURES & set(getattr(item, "fixturenames", ()))))


REPO = Path(__file__).resolve().parents[1]
# real CVAT exports, read in place from the shared folder beside the checkout (as in CI)
SAMPLES = REPO.parent / "shared" / "samples"


@pytest.fixture
def hoban_home(tmp_path, monkeypatch) -> Path:
    """A private storage root and an empty settings file, so no test sees the user's data."""
    home = tmp_path / "hoban_home"
    monkeypatch.setenv("HOBAN_HOME", str(home))
    config = tmp_path / "hoban.yaml"
    config.write_text("{}\n")
    monkeypatch.setenv("HOBAN_CONFIG", str(config))
    return home


@pytest.fixture
def small_config(hoban_home, tmp_path, monkeypatch) -> Path:
    """Settings for the `small` demo site and the one-epoch `test` training profile."""
    config = tmp_path / "hoban.yaml"
    config.write_text("demo_profile: small\ntrain_profile: test\n")
    monkeypatch.setenv("HOBAN_CONFIG", str(config))
    return config


def _site(tmp_path_factory, profile: str) -> Path:
    from hoban_pipelines.demo.install import install_site

    target = tmp_path_factory.mktemp(f"site_{profile}") / "demo_site"
    install_site(target, seed=7, profile=profile)
    return target


@pytest.fixture(scope="session")
def small_site(tmp_path_factory) -> Path:
    """The demo site at the `small` profile, generated once per test session (read-only use)."""
    return _site(tmp_path_factory, "small")


@pytest.fixture(scope="session")
def demo_profile_site(tmp_path_factory) -> Path:
    """The demo site at the `demo` profile that `make demo` uses (about 25 s to generate)."""
    return _site(tmp_path_factory, "demo")

