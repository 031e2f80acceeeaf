"""Benchmark of the sweeps: what scoring every setting from one cache costs next to the one
inference pass that fills it (the team's postprocess study re-ran sahi 40 times).

It measures what ``make demo`` evaluates: the demo's model_go2k_v2 on go2k_split's val frames,
read from the lake ``make demo`` filled (run it first). The inference pass runs again, timed,
as the sliced_predictions asset runs it (sliced and full-image, onnx on a CPU, the model's own
tile and whole-frame sizes); then every configuration of the three sweeps is scored from that
cache and the setting adopted, as the sweep assets compute them: the conf sweep (a 0.01 grid
and the team's values), the postprocess sweep (18 merges x 8 confidences), the gate sweep (48
gates and none) and the adoption. ``sweep_seconds`` is that scoring; writing the tables and
drawing the plots is a fixed cost per materialization, whatever the number of configurations,
and is not in it (a line on stderr says what it adds).

Run ``hoban bench sweep --json``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

MODEL, DATA = "model_go2k_v2", "go2k_split"


def run(threads: int = 0) -> dict:
    from hoban_pipelines.evaluation import builds, sweeps
    from hoban_pipelines.evaluation.export import export_onnx
    from hoban_pipelines.evaluation.predictions import evaluation_set
    from hoban_pipelines.resources import LakeResource

    lake = LakeResource()  # what make demo recorded, as an input of the evaluation would load it
    model, data = (lake.recorded(asset).resolve(lake.get().home) for asset in (MODEL, DATA))
    settings = builds.model_defaults(model)
    with tempfile.TemporaryDirectory(prefix="hoban-bench-sweep-") as scratch:
        scratch = Path(scratch)
        export_onnx(model / builds.BEST_WEIGHTS, scratch, imgsz=settings.imgsz)
        detector = builds.load_detector("onnx", model, scratch, threads=threads)
        frames = evaluation_set(data)
        (scratch / "cache").mkdir()
        started = time.perf_counter()
        builds.build_sliced_predictions(detector, frames, settings, scratch / "cache", model=MODEL, dataset=DATA)
        inference = time.perf_counter() - started

        evaluation = builds.Evaluation.load(scratch / "cache", data, MODEL, DATA)
        predictions, truth, names, classes = evaluation.predictions, evaluation.truth, evaluation.frames, evaluation.classes
        policy = sweeps.Policy()
        started = time.perf_counter()
        confs = sweeps.conf_sweep(predictions, truth, names, classes).rows
        merges = sweeps.postprocess_sweep(predictions, truth, names, classes).rows
        base, _ = sweeps.base_setting(merges, policy)
        gates = sweeps.gate_sweep(predictions, truth, names, classes, base).rows
        sweeps.adopt(predictions, truth, names, classes, merges, gates, policy)
        sweep = time.perf_counter() - started

        started = time.perf_counter()
        builds.build_all_sweeps(evaluation, scratch / "sweeps", policy)
        with_files = time.perf_counter() - started
    print(f"tables and plots: {max(0.0, with_files - sweep):.2f} s more per materialization set "
          f"({with_files:.2f} s with them)", file=sys.stderr)
    return {
        "configurations": int(confs["conf"].nunique() + len(merges) + len(gates)),
        "inference_seconds": round(inference, 3),
        "sweep_seconds": round(sweep, 3),
        "overhead_fraction": round(sweep / inference, 4),
    }
