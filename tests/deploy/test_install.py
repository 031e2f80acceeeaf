"""What `make setup` leaves in the venv: one Dagster family at one release (so every extra
installs beside the base) and OpenCV's headless build only (no GUI libraries on a server)."""

from __future__ import annotations

import importlib.metadata as metadata
import re
from pathlib import Path

import pytest

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _pins() -> dict[str, str]:
    return dict(re.findall(r'"(dagster[a-z0-9-]*)==([0-9.]+)"', PYPROJECT.read_text()))


def test_the_dagster_family_is_pinned_to_one_release_and_installed_at_it():
    pins = _pins()
    assert {"dagster", "dagster-webserver", "dagster-pipes", "dagster-postgres", "dagster-k8s"} <= set(pins)
    core = {pins[name] for name in pins if not pins[name].startswith("0.")}
    libraries = {pins[name] for name in pins if pins[name].startswith("0.")}
    # dagster 1.13.N goes with its libraries 0.29.N
    assert len(core) == len(libraries) == 1 and core.pop().split(".")[2] == libraries.pop().split(".")[2]
    installed = {dist.metadata["Name"].lower(): dist.version for dist in metadata.distributions()
                 if dist.metadata["Name"].lower().startswith("dagster")}
    for name, version in pins.items():
        assert installed.get(name) == version, f"{name} {installed.get(name)} installed, {version} pinned"
    # what dagster pulls in itself moves with it
    for name in ("dagster-graphql", "dagster-shared"):
        assert installed[name] == pins["dagster"], (name, installed[name])


def test_only_the_headless_opencv_is_installed():
    assert metadata.version("opencv-python-headless")
    with pytest.raises(metadata.PackageNotFoundError):
        metadata.version("opencv-python")
