"""Our sliced engine plus our merges against sahi 0.12's own ``get_sliced_prediction``, on demo
frames with a demo model: the same final detections for at least 99% of boxes both ways.

The model is a real yolov8n that fires on every frame (``bench.models.firing_checkpoint``): its
boxes overlap at every tile border, which is what slicing, per-tile NMS and the merges have to
get right; a trained demo model takes minutes to make. sahi runs in its own process.
"""

from __future__ import annotations

import pytest

from hoban_pipelines.bench.models import firing_checkpoint
from hoban_pipelines.bench.sahi_reference import SahiRun, match_rate, run_sahi
from hoban_pipelines.evaluation.engine import InferenceSettings, load_onnx_detector, load_torch_detector, run_pass
from hoban_pipelines.evaluation.export import export_onnx
from hoban_pipelines.evaluation.postprocess import Postprocess, postprocess_frames

CLASSES = ["person_with_helmet", "person_without_helmet"]
TILE = 256
CONF = 0.15  # below it the firing model's boxes are too many for sahi's per-object Python to finish quickly
SETTINGS = [Postprocess("NMS", "IOS", 0.4), Postprocess("GREEDYNMM", "IOS", 0.5)]


@pytest.fixture(scope="module")
def setup(small_site, tmp_path_factory):
    scratch = tmp_path_factory.mktemp("sahi_equivalence")
    weights = firing_checkpoint(scratch / "demo_firing.pt", CLASSES, imgsz=TILE)
    frames = sorted((small_site / "snapshots" / "cam1").glob("*.jpg"))[:2]
    # cached at the floor the assets use: a higher confidence is a filter on the cache
    settings = InferenceSettings(slice_size=TILE, imgsz=TILE, conf_floor=0.05)
    cached = run_pass(load_torch_detector(weights, threads=2), [(f.name, f) for f in frames], settings).detections
    return weights, frames, settings, cached, scratch


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_torch_engine_matches_sahi(setup, setting):
    weights, frames, _, cached, _ = setup
    ours = postprocess_frames(cached[cached["score"] >= CONF], setting)
    theirs, _ = run_sahi(SahiRun(str(weights), [str(f) for f in frames], TILE, 0.2, CONF, TILE, setting.method,
                                 setting.metric, setting.threshold, batch_size=8, threads=2))
    assert len(theirs) > 100  # the comparison is about many overlapping boxes, not a handful
    assert match_rate(ours, theirs) >= 0.99


def test_onnx_engine_matches_sahi(setup):
    weights, frames, settings, _, scratch = setup
    export = scratch / "export"
    export.mkdir()
    export_onnx(weights, export, imgsz=TILE)
    detector = load_onnx_detector(export / "model.onnx", threads=2)
    detections = run_pass(detector, [(f.name, f) for f in frames], settings).detections
    setting = SETTINGS[0]
    ours = postprocess_frames(detections[detections["score"] >= CONF], setting)
    theirs, _ = run_sahi(SahiRun(str(weights), [str(f) for f in frames], TILE, 0.2, CONF, TILE, setting.method,
                                 setting.metric, setting.threshold, batch_size=8, threads=2))
    assert match_rate(ours, theirs) >= 0.98


def test_match_rate_counts_both_directions():
    import pandas as pd

    box = {"image": "a", "cls": 0, "score": 0.5, "x1": 0.0, "y1": 0.0, "x2": 10.0, "y2": 10.0}
    one = pd.DataFrame([box])
    two = pd.DataFrame([box, {**box, "x1": 50.0, "x2": 60.0}])
    assert match_rate(one, one) == 1.0
    assert match_rate(one, two) == pytest.approx(2 / 3)  # the extra box on one side counts against
    assert match_rate(one, pd.DataFrame([{**box, "cls": 1}])) == 0.0
    assert match_rate(one, pd.DataFrame([{**box, "score": 0.502}])) == 0.0
    assert match_rate(one.iloc[:0], one.iloc[:0]) == 1.0


def test_the_reference_reports_a_failed_sahi_run(tmp_path):
    with pytest.raises(RuntimeError, match="sahi reference run failed"):
        run_sahi(SahiRun(str(tmp_path / "missing.pt"), [str(tmp_path / "x.jpg")], TILE, 0.2, CONF, TILE))

