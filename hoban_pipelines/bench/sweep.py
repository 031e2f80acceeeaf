"""Benchmark of the sweeps: what scoring every setting from one cache costs next to the one
inference pass it reads (the team's postprocess study re-ran sahi 40 times).

One inference pass (sliced and full-image, onnx, the asset's default) over the demo site's
frames with the demo's 256-px tiles, then the whole sweep set the evaluation assets build, tables and plots included (the same
builders): the conf sweep, the postprocess sweep (18 merges x 8 confidences), the gate sweep
(48 gates and none, at the setting the default policy picks) and the adopted setting. The model fires like a trained
one but denser at the floor (``bench.models.TRAINED_LIKE``), so the sweep's share is not
understated; the ground truth is the site's own.

Run ``hoban bench sweep --json``.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import pandas as pd

from hoban_pipelines.bench.models import TRAINED_LIKE, firing_checkpoint

TILE = 256  # the demo's models train and slice at 256
FULL_IMGSZ = 1920  # and see whole frames at their own scale


def site_truth(site: Path) -> tuple[list[tuple[str, Path]], pd.DataFrame, list[str]]:
    """The demo site's labelled snapshots, their boxes (pixels) and the classes."""
    labels = json.loads((site / "ground_truth" / "go2k_labels.json").read_text())
    images, rows = [], []
    for image in labels["images"]:
        images.append((image["name"], site / "snapshots" / image["name"]))
        rows += [{"image": image["name"], "cls": box["cls"], "x1": box["xyxy"][0], "y1": box["xyxy"][1],
                  "x2": box["xyxy"][2], "y2": box["xyxy"][3]} for box in image["boxes"]]
    return images, pd.DataFrame(rows, columns=["image", "cls", "x1", "y1", "x2", "y2"]), labels["classes"]


def run(frames: int = 12, threads: int = 0) -> dict:
    from hoban_pipelines.demo.install import install_site
    from hoban_pipelines.evaluation import builds
    from hoban_pipelines.evaluation.engine import InferenceSettings, load_onnx_detector
    from hoban_pipelines.evaluation.export import export_onnx
    from hoban_pipelines.evaluation.predictions import EvaluationSet, load_predictions, predict_to_file
    from hoban_pipelines.evaluation.sweeps import Policy

    with tempfile.TemporaryDirectory(prefix="hoban-bench-sweep-") as scratch:
        scratch = Path(scratch)
        install_site(scratch / "site", seed=7, profile="small")
        images, truth, classes = site_truth(scratch / "site")
        images = images[:frames]
        truth = truth[truth["image"].isin({name for name, _ in images})]
        weights = firing_checkpoint(scratch / "weights.pt", classes, imgsz=TILE, **TRAINED_LIKE)
        (scratch / "export").mkdir()
        export_onnx(weights, scratch / "export", imgsz=TILE)
        detector = load_onnx_detector(scratch / "export" / "model.onnx", threads=threads)
        settings = InferenceSettings(slice_size=TILE, imgsz=TILE, full_imgsz=FULL_IMGSZ)
        started = time.perf_counter()
        predict_to_file(detector, images, settings, scratch / "predictions.parquet")
        inference = time.perf_counter() - started

        started = time.perf_counter()
        predictions = load_predictions(scratch / "predictions.parquet")
        names = [name for name, _ in images]
        data = EvaluationSet(scratch / "site", classes, images, truth)
        evaluation = builds.Evaluation(predictions, truth.reset_index(drop=True), names, classes, data, [])
        counted, _ = builds.build_all_sweeps(evaluation, scratch / "sweeps", Policy())
        sweep = time.perf_counter() - started
    return {
        "configurations": counted,
        "inference_seconds": round(inference, 3),
        "sweep_seconds": round(sweep, 3),
        "overhead_fraction": round(sweep / inference, 4),
    }
