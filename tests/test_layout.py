"""The house rules: what each room may import, and the definitions' names as the contract."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hoban_pipelines"
# The stages in the order data flows through them; a stage imports only earlier ones.
STAGES = ["core", "cvat", "labels", "datasets", "training", "evaluation", "captures", "review", "promotion"]
# Rooms beside the flow, and the stages each may use.
SIDE_ROOMS = {"demo": {"core", "cvat"}, "roi": {"core"}}
DAGSTER_SIDE = {"assets", "resources", "definitions", "jobs", "beta_apis", "demo_run", "cli", "bench", "serve"}


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module == "hoban_pipelines":  # `from hoban_pipelines import x`
                found.update(f"hoban_pipelines.{alias.name}" for alias in node.names)
    return found


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "hoban_pipelines" and len(parts) > 1 else None


def _domain_files():
    for room in [*STAGES, *SIDE_ROOMS]:
        for path in sorted((PACKAGE / room).rglob("*.py")):
            yield room, path


@pytest.mark.parametrize("room,path", list(_domain_files()), ids=lambda v: str(v.relative_to(PACKAGE)) if isinstance(v, Path) else v)
def test_domain_rooms_import_no_dagster_and_no_later_stage(room, path):
    allowed = set(STAGES[: STAGES.index(room) + 1]) if room in STAGES else SIDE_ROOMS[room] | {room}
    for module in _imports(path):
        top = module.split(".")[0]
        assert top != "dagster", f"{path.relative_to(PACKAGE)} imports {module}: domain code stays free of dagster"
        target = _room(module)
        if target is None:
            continue
        assert target not in DAGSTER_SIDE, f"{path.relative_to(PACKAGE)} imports {module} (the Dagster side)"
        assert target in allowed, (
            f"{path.relative_to(PACKAGE)} ({room}) imports {module} ({target}); "
            f"{room} may import only {sorted(allowed)}"
        )


def test_every_domain_module_lives_in_a_room():
    """No flat domain modules: the package root holds only the Dagster side and the CLI."""
    loose = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"} - DAGSTER_SIDE
    assert not loose, f"modules outside a room: {sorted(loose)}"


def test_definitions_keep_every_asset_check_and_job_name():
    """Asset keys, check names and job names are the contract; later issues extend the list on purpose."""
    from hoban_pipelines.definitions import defs

    graph = defs.resolve_asset_graph()
    now = {
        "assets": sorted(key.to_user_string() for key in graph.get_all_asset_keys()),
        "checks": sorted(f"{key.asset_key.to_user_string()}:{key.name}" for key in graph.asset_check_keys),
        "jobs": sorted(job.name for job in defs.resolve_all_job_defs() if not job.name.startswith("__")),
    }
    assert now == json.loads((Path(__file__).parent / "definitions_keys.json").read_text())
