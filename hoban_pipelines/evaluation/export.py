"""A checkpoint exported to ONNX by ultralytics' own exporter, checked against the checkpoint.

The export has a dynamic batch (and image size), so tiles of many frames go through in one call
and the full-image pass can use the same file. ultralytics writes the class names, stride and
image size into the file's metadata; we add the sha256 of the checkpoint it came from, so the
engine refuses an ONNX file that does not belong to the checkpoint it is said to stand for.
Before the version is published, the exported model and the checkpoint run on the same input
and their raw outputs must agree: an export that changed the model never reaches the lake.

The exporter writes beside the .pt it is given, so it is handed a copy inside the new version's
folder (the checkpoint's own version is immutable); the copy is removed once exported.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from hoban_pipelines.core.lake import file_sha256
from hoban_pipelines.core.report import BuildReport
from hoban_pipelines.evaluation.engine import ONNX_SOURCE_KEY, EvaluationError, load_onnx_detector, load_torch_detector

ONNX_FILE = "model.onnx"
EXPORT_FILE = "export.json"
# how far the exported model's raw outputs may drift from the checkpoint's (float32 both sides;
# seen here: about 1e-5 on scores and 1e-3 px on boxes)
SCORE_TOLERANCE = 1e-3
BOX_TOLERANCE_PX = 0.05


def export_onnx(checkpoint: Path, out_dir: Path, *, imgsz: int, opset: int | None = None) -> BuildReport:
    """``checkpoint`` (an ultralytics .pt) as ``out_dir/model.onnx`` with ``export.json`` beside it."""
    from ultralytics import YOLO

    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    source = file_sha256(checkpoint)
    scratch = out_dir / ".export"
    scratch.mkdir()
    copy = scratch / "model.pt"
    shutil.copy2(checkpoint, copy)
    started = time.perf_counter()
    try:
        exported = Path(YOLO(str(copy)).export(
            format="onnx", dynamic=True, simplify=True, imgsz=imgsz, device="cpu", opset=opset, verbose=False,
        ))
    except Exception as exc:  # the exporter's reasons are many; name the checkpoint and keep its words
        raise EvaluationError(f"ultralytics could not export {checkpoint} to ONNX: {exc}") from exc
    seconds = time.perf_counter() - started
    target = out_dir / ONNX_FILE
    _record_source(exported, target, source)
    shutil.rmtree(scratch)
    agreement = compare_outputs(checkpoint, target, imgsz=imgsz, source_sha256=source)
    if agreement["max_score_diff"] > SCORE_TOLERANCE or agreement["max_box_diff_px"] > BOX_TOLERANCE_PX:
        raise EvaluationError(
            f"the ONNX export of {checkpoint} does not reproduce it: scores differ by up to "
            f"{agreement['max_score_diff']:.2g} (allowed {SCORE_TOLERANCE}), boxes by up to "
            f"{agreement['max_box_diff_px']:.2g} px (allowed {BOX_TOLERANCE_PX})"
        )
    record = {"source_sha256": source, "onnx_sha256": file_sha256(target), "imgsz": imgsz, "dynamic": True,
              "export_seconds": round(seconds, 2), **agreement}
    (out_dir / EXPORT_FILE).write_text(json.dumps(record, indent=2))
    return BuildReport(
        details={"onnx": Path(ONNX_FILE), "source_sha256": source, "imgsz": imgsz,
                 "max_score_diff": agreement["max_score_diff"], "max_box_diff_px": agreement["max_box_diff_px"],
                 "export_seconds": round(seconds, 2)},
        digest=record["onnx_sha256"],
    )


def _record_source(exported: Path, target: Path, source_sha256: str) -> None:
    import onnx

    model = onnx.load(str(exported))
    entry = model.metadata_props.add()
    entry.key, entry.value = ONNX_SOURCE_KEY, source_sha256
    onnx.save(model, str(target))


def compare_outputs(checkpoint: Path, onnx_file: Path, *, imgsz: int, source_sha256: str | None = None,
                    batch: int = 2, seed: int = 0) -> dict[str, float]:
    """The largest differences between the checkpoint's and the ONNX model's raw outputs on the
    same random batch (a batch of ``batch`` also proves the batch axis is dynamic)."""
    import torch

    torch_model = load_torch_detector(checkpoint)
    onnx_model = load_onnx_detector(onnx_file, source_sha256=source_sha256)
    generator = np.random.default_rng(seed)
    batch_input = torch.from_numpy(generator.random((batch, 3, imgsz, imgsz), dtype=np.float32))
    with torch.inference_mode():
        expected = torch_model.raw(batch_input)
    got = onnx_model.raw(batch_input)
    if expected.shape != got.shape:
        raise EvaluationError(f"{onnx_file} outputs {tuple(got.shape)} where {checkpoint} outputs "
                              f"{tuple(expected.shape)}: it is not an export of this checkpoint")
    return {"max_box_diff_px": float((expected[:, :4] - got[:, :4]).abs().max()),
            "max_score_diff": float((expected[:, 4:] - got[:, 4:]).abs().max())}

