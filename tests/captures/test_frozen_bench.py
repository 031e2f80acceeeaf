"""The frozen-frame benchmark (``hoban bench dedup``) through the CLI on a small generated day:
its five keys, and every planted repeat found (the run raises on a miss or a live frame
flagged). No timing is asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from hoban_pipelines.bench import frozen
from hoban_pipelines.cli import main

KEYS = {"frames", "frames_per_s", "frozen_found", "frozen_planted", "fastdup_frames_per_s"}


def test_bench_dedup_prints_the_five_keys_with_every_planted_frame_found():
    result = CliRunner().invoke(main, ["bench", "dedup", "--json", "--frames", "40"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    assert set(figures) == KEYS
    assert figures["frames"] == 40
    assert figures["frozen_planted"] > 0
    assert figures["frozen_found"] == figures["frozen_planted"]
    assert figures["frames_per_s"] > 0
    assert figures["fastdup_frames_per_s"] is None or figures["fastdup_frames_per_s"] > 0


def test_the_planted_day_has_both_kinds_of_repeat_in_the_recorders_layout(tmp_path):
    roots, day, truth = frozen.plant_day(tmp_path, 40)
    assert sorted(roots) == ["cam1", "cam2"] and len(truth) == 40
    stamp = day.strftime("%Y%m%d")
    for path in map(Path, truth):
        camera = path.parent.parent.name
        assert camera in roots and path.parent == tmp_path / camera / stamp
        assert path.name.startswith(f"{camera}_{stamp}_") and path.suffix == ".jpg"
    repeats = {path: source for path, source in truth.items() if source is not None}
    same_bytes = {path for path, source in repeats.items() if Path(path).read_bytes() == Path(source).read_bytes()}
    assert same_bytes and same_bytes != set(repeats)  # byte copies and re-encodes
    assert all(truth[source] is None for source in repeats.values())  # each repeats a live frame


def test_a_broken_detector_reports_no_figure(tmp_path):
    _, _, truth = frozen.plant_day(tmp_path, 16)
    nothing_frozen = pd.DataFrame({"path": list(truth), "status": "live", "frozen_of": None})
    with pytest.raises(RuntimeError, match="missed"):
        frozen.check_found(nothing_frozen, truth)
