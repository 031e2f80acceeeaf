"""sahi's own sliced prediction, the reference our engine is measured and checked against.

sahi 0.12's ``DetectionModel`` sets ``CUDA_VISIBLE_DEVICES`` for its whole process, so sahi runs
here in a child process of its own, never in ours or in Dagster's. The child decodes each frame
with OpenCV, as our engine does, and hands sahi the RGB array, so both sides see the same
pixels. It runs ``get_sliced_prediction`` with ``perform_standard_pred=False`` (our sliced
detections are slices only; the full-image pass is the gate's) and
``force_postprocess_type=True`` (below conf 0.1 sahi would otherwise switch the merge to
NMS/IOU). ultralytics' ``select_device`` resets torch to one thread fewer than the cores on
every CPU call; the child sets that number to the thread count asked for, so every side of a
comparison runs at the same count.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hoban_pipelines.evaluation.metrics import box_iou
from hoban_pipelines.evaluation.postprocess import Postprocess

COLUMNS = ["image", "cls", "score", "x1", "y1", "x2", "y2"]


@dataclass(frozen=True)
class SahiRun:
    weights: str
    frames: list[str]
    slice_size: int
    overlap: float
    conf: float
    imgsz: int
    method: str = "NMS"
    metric: str = "IOS"
    threshold: float = 0.4
    class_agnostic: bool = False
    batch_size: int = 1
    threads: int = 1
    device: str = "cpu"


def run_sahi(run: SahiRun, timeout: float = 3600) -> tuple[pd.DataFrame, float]:
    """sahi's final detections for ``run.frames`` (COLUMNS; image = the frame's file name) and
    the seconds its prediction loop took (decoding included; model loading and a first, untimed
    warm-up frame not)."""
    with tempfile.TemporaryDirectory(prefix="hoban-sahi-") as scratch:
        out = Path(scratch) / "detections.parquet"
        done = subprocess.run([sys.executable, "-m", __name__, json.dumps(asdict(run)), str(out)],
                              capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"the sahi reference run failed:\n{done.stderr[-3000:]}")
        seconds = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
        return pd.read_parquet(out), seconds


def match_rate(ours: pd.DataFrame, theirs: pd.DataFrame, *, iou: float = 0.99, score: float = 1e-3) -> float:
    """The share of boxes, counted in both directions, with a counterpart on the other side: same
    image and class, IoU >= ``iou``, score within ``score``. 1.0 when both sides are empty."""
    def found(a: pd.DataFrame, b: pd.DataFrame) -> int:
        hits = 0
        groups = {key: frame for key, frame in b.groupby(["image", "cls"])}
        for key, mine in a.groupby(["image", "cls"]):
            other = groups.get(key)
            if other is None:
                continue
            overlap = box_iou(mine[["x1", "y1", "x2", "y2"]].to_numpy(float), other[["x1", "y1", "x2", "y2"]].to_numpy(float))
            close = np.abs(mine["score"].to_numpy(float)[:, None] - other["score"].to_numpy(float)[None, :]) <= score
            hits += int(((overlap >= iou) & close).any(axis=1).sum())
        return hits

    total = len(ours) + len(theirs)
    return 1.0 if total == 0 else (found(ours, theirs) + found(theirs, ours)) / total


def _child(run: SahiRun, out: Path) -> None:
    import time

    import cv2
    import ultralytics.utils.torch_utils as torch_utils

    torch_utils.NUM_THREADS = run.threads  # what select_device sets torch to on every CPU call
    from sahi import AutoDetectionModel
    from sahi.predict import get_sliced_prediction

    model = AutoDetectionModel.from_pretrained(
        model_type="ultralytics", model_path=run.weights, confidence_threshold=run.conf,
        device=run.device if run.device == "cpu" else f"cuda:{run.device}", image_size=run.imgsz,
    )
    setting = Postprocess(run.method, run.metric, run.threshold, run.class_agnostic)  # validates

    def predict(frame: str):
        image = cv2.cvtColor(cv2.imread(frame), cv2.COLOR_BGR2RGB)
        return get_sliced_prediction(
            image, model, slice_height=run.slice_size, slice_width=run.slice_size,
            overlap_height_ratio=run.overlap, overlap_width_ratio=run.overlap, perform_standard_pred=False,
            postprocess_type=setting.method, postprocess_match_metric=setting.metric,
            postprocess_match_threshold=setting.threshold, postprocess_class_agnostic=setting.class_agnostic,
            verbose=0, batch_size=run.batch_size, force_postprocess_type=True,
        )

    predict(run.frames[0])  # ultralytics' predictor sets up and warms up on its first call: untimed
    rows = []
    started = time.perf_counter()
    for frame in run.frames:
        result = predict(frame)
        for prediction in result.object_prediction_list:
            rows.append((Path(frame).name, prediction.category.id, prediction.score.value,
                         *prediction.bbox.to_xyxy()))
    seconds = time.perf_counter() - started
    pd.DataFrame(rows, columns=COLUMNS).to_parquet(out)
    print(json.dumps({"seconds": seconds}))


if __name__ == "__main__":
    _child(SahiRun(**json.loads(sys.argv[1])), Path(sys.argv[2]))
