"""The versions the evaluation stage publishes, one builder each: the sliced-predictions cache, the
three sweeps, the adopted inference setting and the report card.

Each builder reads what it needs from folders (a checkpoint version, a dataset, a cache), writes
its files into ``out_dir`` and returns a ``BuildReport``; the assets and the CLI call the same
functions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
from PIL import Image

from hoban_pipelines.core.report import BuildReport, Picture, Table
from hoban_pipelines.evaluation import report, sweeps, verifier
from hoban_pipelines.evaluation.engine import (
    BACKENDS, Detector, EvaluationError, InferenceSettings, PassResult, load_onnx_detector, load_torch_detector,
    run_pass,
)
from hoban_pipelines.evaluation.export import ONNX_FILE
from hoban_pipelines.evaluation.gate import Gate
from hoban_pipelines.evaluation.metrics import Scores, score
from hoban_pipelines.evaluation.postprocess import Postprocess
from hoban_pipelines.core.yolo_format import VAL
from hoban_pipelines.evaluation.predictions import (
    PREDICTIONS_FILE, EvaluationSet, Predictions, check_classes, evaluation_set, load_predictions, predict_to_file,
)
from hoban_pipelines.training.job import BEST_WEIGHTS, SUMMARY_FILE

CONF_SWEEP_CSV, POSTPROCESS_SWEEP_CSV, GATE_SWEEP_CSV, GATE_SIZES_CSV = (
    "conf_sweep.csv", "postprocess_sweep.csv", "gate_sweep.csv", "gate_recall_by_size.csv")
VERIFIER_SWEEP_CSV, VERIFIER_SIZES_CSV = "verifier_sweep.csv", "verifier_recall_by_size.csv"
INFERENCE_CONFIG_FILE = "inference_config.json"
REPORT_CARD_FILE = "report_card.json"
SWEEP_FILE = "sweep.json"  # what a sweep was computed at (its base setting, the policy)
SPEED_FRAMES = 4  # frames a side run times another backend on (the cache's own pass times its backend)


def model_defaults(model_version: Path, slice_size: int = 0, full_imgsz: int = 0, overlap: float = 0.2,
                   conf_floor: float = 0.05) -> InferenceSettings:
    """The inference settings of a checkpoint version: tiles of the size it trained on, inferred at
    its training size; the full-image pass at the scale whole frames were scored at in training.
    A 0 keeps the model's own value. A checkpoint without a training summary (a configured base
    model) uses its training image size for both."""
    summary_file = Path(model_version) / SUMMARY_FILE
    if summary_file.is_file():
        summary = json.loads(summary_file.read_text())
        imgsz = int(summary["imgsz"])
        tile = int(summary["recipe"].get("tile") or imgsz)
        whole = int(summary.get("eval_imgsz") or imgsz)
    else:
        imgsz = load_torch_detector(Path(model_version) / BEST_WEIGHTS).trained_imgsz
        tile, whole = imgsz, imgsz
    return InferenceSettings(slice_size=slice_size or tile, imgsz=imgsz, full_imgsz=full_imgsz or whole,
                             overlap=overlap, conf_floor=conf_floor)


def resolve_backend(backend: str, device: str) -> str:
    """``auto``: onnxruntime on a CPU (the demo's card: 390 ms a frame against torch's 429 on 2
    cores), torch on a GPU (the onnxruntime package we declare has no CUDA provider)."""
    if backend == "auto":
        return "onnx" if device == "cpu" else "torch"
    if backend not in BACKENDS:
        raise EvaluationError(f"backend {backend!r} is not one of {['auto', *BACKENDS]}")
    return backend


def load_detector(backend: str, model_version: Path, export_version: Path | None, *, device: str = "cpu",
                  threads: int = 0) -> Detector:
    """The model of a checkpoint version on ``backend``; ``onnx`` runs the export version's file,
    which must have been exported from exactly this checkpoint."""
    weights = Path(model_version) / BEST_WEIGHTS
    if backend == "torch":
        return load_torch_detector(weights, device, threads)
    if backend == "onnx":
        if export_version is None:
            raise EvaluationError("the onnx backend needs the model's ONNX export: materialize model_export")
        from hoban_pipelines.core.lake import file_sha256

        return load_onnx_detector(Path(export_version) / ONNX_FILE, source_sha256=file_sha256(weights),
                                  device=device, threads=threads)
    raise EvaluationError(f"unknown backend {backend!r}; use one of {list(BACKENDS)}")


def full_image_labels(model_version: Path, images: list[tuple[str, Path]], *, conf_floor: float,
                      device: str = "cpu", threads: int = 0) -> tuple[PassResult, list[str], dict[str, Any]]:
    """A checkpoint version's full-image pass over ``images``: what labels a hybrid dataset source.
    Its boxes, the model's classes and what made them (sizes, speed) for the dataset's record.

    Each image is seen at its own size (rounded up to the model's stride), up to the scale whole
    frames were scored at in training, never enlarged: the model learned people at the pixel scale
    of site frames, and enlarging a 640-px image to 1920 would both shift that scale and cost nine
    times the work. Images of one size share a pass."""
    detector = load_torch_detector(Path(model_version) / BEST_WEIGHTS, device, threads)
    settings = model_defaults(model_version, conf_floor=conf_floor)
    by_size: dict[int, list[tuple[str, Path]]] = {}
    for name, path in images:
        by_size.setdefault(_native_imgsz(Path(path), settings.full_imgsz, detector.stride), []).append((name, path))
    passes = [run_pass(detector, group, replace(settings, full_imgsz=size), full_image=True)
              for size, group in sorted(by_size.items())] or [run_pass(detector, [], settings, full_image=True)]
    labelled = PassResult(pd.concat([p.detections for p in passes], ignore_index=True),
                          pd.concat([p.frames for p in passes], ignore_index=True),
                          sum(p.seconds for p in passes), [w for p in passes for w in p.warnings])
    readable = int((labelled.frames["width"] > 0).sum())
    about = {"images_by_imgsz": {str(size): len(group) for size, group in sorted(by_size.items())},
             "max_imgsz": settings.full_imgsz,
             "device": detector.device_name, "images": readable,
             "ms_per_image": round(1000 * labelled.seconds / readable, 1) if readable else None}
    return labelled, detector.names, about


def _native_imgsz(path: Path, largest: int, stride: int) -> int:
    """The inference size that shows ``path`` at its own scale: its longer side rounded up to
    ``stride``, at most ``largest``. An unreadable header gets ``largest`` (the pass reports it)."""
    try:
        with Image.open(path) as image:
            longer = max(image.size)
    except (OSError, ValueError):
        return largest
    return min(largest, -(-longer // stride) * stride)


def build_sliced_predictions(detector: Detector, data: EvaluationSet, settings: InferenceSettings, out_dir: Path,
                             *, model: str, dataset: str, batch: int = 16, about: dict[str, Any] | None = None,
                             progress: Callable[[str, int], None] | None = None) -> BuildReport:
    """The cache of ``detector`` over ``data``'s frames, after checking it predicts their classes."""
    check_classes(detector.names, data.classes, model, dataset)
    return predict_to_file(detector, data.images, settings, Path(out_dir) / PREDICTIONS_FILE, batch=batch,
                           about={"model": model, "dataset": dataset, **(about or {})}, progress=progress)


@dataclass(frozen=True)
class Evaluation:
    """A cache with the truth of the frames it could read: what every sweep scores."""

    predictions: Predictions  # on the scored frames only
    truth: pd.DataFrame
    frames: list[str]
    classes: list[str]
    data: EvaluationSet
    unreadable: list[str]  # frames the pass could not read: reported, not scored

    @classmethod
    def load(cls, cache: Path, dataset: Path, model: str = "the model", dataset_name: str = "the dataset",
             split: str = VAL) -> "Evaluation":
        predictions = load_predictions(cache)
        data = evaluation_set(dataset, split)
        truth, frames = sweeps.evaluation_inputs(predictions, data, model, dataset_name)
        unreadable = predictions.frames.loc[predictions.frames["width"] == 0, "image"].tolist()
        return cls(predictions.on(frames), truth, frames, data.classes, data, unreadable)

    @property
    def paths(self) -> dict[str, Path]:
        return {name: Path(path) for name, path in zip(self.predictions.frames["image"], self.predictions.frames["path"])}

    def score(self, setting: sweeps.Setting) -> Scores:
        return score(sweeps.final_detections(self.predictions, setting), self.truth, self.frames, self.classes,
                     conf=setting.conf)


def _all_rows(table: pd.DataFrame) -> list[dict[str, Any]]:
    return table.to_dict("records")


def build_conf_sweep(evaluation: Evaluation, out_dir: Path, postprocess: Postprocess = sweeps.TEAM_POSTPROCESS) -> BuildReport:
    """P/R/F1 against confidence (the team's 0.15..0.50 and a 0.01 grid), the PR curve, mAP."""
    out_dir = Path(out_dir)
    sweep = sweeps.conf_sweep(evaluation.predictions, evaluation.truth, evaluation.frames, evaluation.classes, postprocess)
    sweep.rows.to_csv(out_dir / CONF_SWEEP_CSV, index=False)
    curve = sweep.extra["pr_curve"]
    best = curve.loc[curve["f1"].idxmax()]
    report.plot_conf_curves(curve, out_dir / "conf_curves.png", f"{postprocess.name}: P, R, F1 against confidence",
                            marks=[float(best["conf"])])
    team = sweep.rows[(sweep.rows["class"] == "all") & sweep.rows["conf"].isin(sweeps.TEAM_CONFS)]
    return BuildReport(
        counts={"configurations": int(sweep.rows["conf"].nunique())},
        details={
            "postprocess": postprocess.name, "best_f1": float(best["f1"]), "best_f1_conf": float(best["conf"]),
            "map50": sweep.extra["map50"], "map50_95": sweep.extra["map50_95"],
            "team_confs": Table(_all_rows(team), ["conf", "precision", "recall", "f1", "tp", "fp", "fn"]),
            "curves": Picture("conf_curves.png", "P, R and F1 against confidence, and the PR curve"),
        },
    )


def build_postprocess_sweep(evaluation: Evaluation, out_dir: Path) -> BuildReport:
    """Every merge (NMS/NMM/GREEDYNMM x IOU/IOS x 0.3/0.4/0.5) at the team's confidences."""
    out_dir = Path(out_dir)
    rows = sweeps.postprocess_sweep(evaluation.predictions, evaluation.truth, evaluation.frames, evaluation.classes).rows
    rows.to_csv(out_dir / POSTPROCESS_SWEEP_CSV, index=False)
    heat = sweeps.grid(rows, ["method", "metric", "threshold"], "conf")
    best = rows.loc[rows["f1"].idxmax()]
    report.plot_heatmap(heat, out_dir / "postprocess_f1.png", "F1 by merge and confidence", "confidence",
                        "merge / metric / threshold",
                        mark=((best["method"], best["metric"], best["threshold"]), best["conf"]))
    # the team's finding, measured again: how much F1 moves with confidence, and with the merge
    by_conf = rows.groupby(["method", "metric", "threshold"])["f1"].agg(lambda f: f.max() - f.min()).mean()
    by_merge = rows.groupby("conf")["f1"].agg(lambda f: f.max() - f.min()).mean()
    top = rows.sort_values("f1", ascending=False).head(10)
    return BuildReport(
        counts={"configurations": len(rows)},
        details={
            "best": f"{best['method']}/{best['metric']}/{best['threshold']:g} at conf {best['conf']:g}",
            "best_f1": float(best["f1"]), "f1_range_over_conf": float(by_conf), "f1_range_over_merge": float(by_merge),
            "top10": Table(_all_rows(top), ["method", "metric", "threshold", "conf", "precision", "recall", "f1",
                                            "tp", "fp", "fn"]),
            "heatmap": Picture("postprocess_f1.png", "F1 by merge and confidence"),
        },
    )


def build_gate_sweep(evaluation: Evaluation, postprocess_rows: pd.DataFrame, policy: sweeps.Policy,
                     out_dir: Path, class_agnostic: bool = sweeps.TEAM_GATE.class_agnostic,
                     verifier_gate: verifier.VerifierGate | None = None) -> BuildReport:
    """The gate at every conf x radius (and none) at the merge and confidence ``policy`` picks from
    the postprocess sweep, with recall by truth size; with a ``verifier`` (the classifier and its
    held-out frames) also the verifier gate beside the full-image gate and both together."""
    out_dir = Path(out_dir)
    base, reason = sweeps.base_setting(postprocess_rows, policy)
    sweep = sweeps.gate_sweep(evaluation.predictions, evaluation.truth, evaluation.frames, evaluation.classes, base,
                              class_agnostic=class_agnostic)
    sweep.rows.to_csv(out_dir / GATE_SWEEP_CSV, index=False)
    sizes = sweep.extra["sizes"]
    sizes.to_csv(out_dir / GATE_SIZES_CSV, index=False)
    (out_dir / SWEEP_FILE).write_text(json.dumps({"base": base.as_dict(), "policy": policy.as_dict(), "reason": reason}))
    gated = sweep.rows.dropna(subset=["gate_conf"])
    report.plot_heatmap(sweeps.grid(gated, ["gate_conf"], "radius"), out_dir / "gate_f1.png",
                        f"F1 by gate conf and radius ({base.name}; no gate: {sweep.rows.iloc[0]['f1']:.3f})",
                        "radius (px)", "full-image conf")
    team_gate = Gate(sweeps.TEAM_GATE.conf, sweeps.TEAM_GATE.radius, class_agnostic).name
    shown = sizes[sizes["gate"].isin(["no gate", team_gate])].rename(columns={"gate": "label"})
    report.plot_recall_by_size(shown, out_dir / "gate_recall_by_size.png", "recall by person size, with and without the gate")
    plain, team = sweep.rows.iloc[0], sweep.rows[sweep.rows["gate"] == team_gate]
    built = BuildReport(
        counts={"configurations": len(sweep.rows)},
        details={
            "base": base.name, "base_chosen_by": reason,
            "without_gate": Table([plain.to_dict()], ["gate", "precision", "recall", "f1", "tp", "fp", "fn"]),
            "team_gate": Table(_all_rows(team), ["gate", "precision", "recall", "f1", "tp", "fp", "fn"]),
            "top10": Table(_all_rows(gated.sort_values("f1", ascending=False).head(10)),
                           ["gate", "precision", "recall", "f1", "tp", "fp", "fn"]),
            "recall_by_size": Table(_all_rows(shown), ["label", "bucket", "truth", "matched", "recall"]),
            "heatmap": Picture("gate_f1.png", "F1 by gate conf and radius"),
            "sizes": Picture("gate_recall_by_size.png", "recall by size with and without the gate"),
        },
    )
    if verifier_gate is not None:
        _add_verifier_rows(built, evaluation, base, Gate(sweeps.TEAM_GATE.conf, sweeps.TEAM_GATE.radius, class_agnostic),
                           verifier_gate, out_dir)
    return built


def _add_verifier_rows(built: BuildReport, evaluation: Evaluation, base: sweeps.Setting, gate: Gate,
                       verifier_gate: verifier.VerifierGate, out_dir: Path) -> None:
    """The verifier's rows (``VERIFIER_SWEEP_CSV``, never adopted: the capture path has no
    verifier yet) and a sentence saying whether it beats the full-image gate on its held-out frames."""
    found = verifier.verifier_sweep(evaluation, base, verifier_gate.classifier, verifier_gate.frames, gate,
                                    (*verifier_gate.thresholds, verifier_gate.threshold))
    found.rows.to_csv(out_dir / VERIFIER_SWEEP_CSV, index=False)
    found.sizes.to_csv(out_dir / VERIFIER_SIZES_CSV, index=False)
    rows = found.rows.set_index("gate")
    gate_row = rows.loc[f"gate {gate.name}"]
    default = rows.loc[f"verifier >= {verifier_gate.threshold:g}"]
    best = found.rows.iloc[2:].sort_values(["f1", "precision"], ascending=False).iloc[0]
    verdict = (f"on {len(found.frames)} held-out frames the verifier at {verifier_gate.threshold:g} scores "
               f"F1 {default['f1']:.3f} (P {default['precision']:.3f} R {default['recall']:.3f}, "
               f"+{default['added_ms_per_frame']:.1f} ms/frame) against the full-image gate's F1 {gate_row['f1']:.3f} "
               f"(P {gate_row['precision']:.3f} R {gate_row['recall']:.3f}, +{gate_row['added_ms_per_frame']:.1f} "
               f"ms/frame): it {'beats' if default['f1'] > gate_row['f1'] else 'does not beat'} the gate; "
               f"best verifier row: {best['gate']} (F1 {best['f1']:.3f})")
    shown = found.sizes[found.sizes["gate"].isin(["no gate", f"gate {gate.name}", default.name,
                                                  f"gate {gate.name} + {default.name}"])].rename(columns={"gate": "label"})
    report.plot_recall_by_size(shown, out_dir / "verifier_recall_by_size.png",
                               "recall by person size: full-image gate, verifier, both (held-out frames)")
    columns = ["gate", "precision", "recall", "f1", "tp", "fp", "fn", "added_ms_per_frame"]
    built.counts["verifier_configurations"] = len(found.rows)
    built.details.update({
        "verifier/precision": float(default["precision"]), "verifier/recall": float(default["recall"]),
        "verifier/f1": float(default["f1"]), "verifier/ms_per_frame": float(default["added_ms_per_frame"]),
        "verifier_beats_gate": bool(default["f1"] > gate_row["f1"]),
        "verifier_verdict": verdict,
        "verifier_rows": Table(_all_rows(found.rows), columns),
        "verifier_recall_by_size": Table(_all_rows(shown), ["label", "bucket", "truth", "matched", "recall"]),
        "verifier_sizes": Picture("verifier_recall_by_size.png", "recall by size with the verifier and the gate"),
    })


def read_sweep_base(gate_sweep_version: Path) -> tuple[sweeps.Setting, sweeps.Policy]:
    record = json.loads((Path(gate_sweep_version) / SWEEP_FILE).read_text())
    return sweeps.Setting.from_dict(record["base"]), sweeps.Policy(**record["policy"])


def build_inference_config(evaluation: Evaluation, postprocess_rows: pd.DataFrame, gate_rows: pd.DataFrame,
                           policy: sweeps.Policy, out_dir: Path, *, about: dict[str, Any]) -> BuildReport:
    """The adopted setting as ``inference_config.json``: the slicing the cache used, the confidence,
    merge and gate ``policy`` picks, and their scores with and without the gate."""
    adoption = sweeps.adopt(evaluation.predictions, evaluation.truth, evaluation.frames, evaluation.classes,
                            postprocess_rows, gate_rows, policy)
    record = evaluation.predictions.record
    config = {
        **about,
        "slicing": {key: record["settings"][key] for key in ("slice_size", "overlap", "imgsz", "full_imgsz")},
        **adoption.setting.as_dict(),
        "policy": policy.as_dict(), "chosen_by": adoption.reasons,
        "scores": {"without_gate": _headline(adoption.without_gate), "with_gate": _headline(adoption.with_gate)},
    }
    (Path(out_dir) / INFERENCE_CONFIG_FILE).write_text(json.dumps(config, indent=2))
    named = {"without gate": adoption.without_gate, f"with gate {(adoption.setting.gate or sweeps.TEAM_GATE).name}":
             adoption.with_gate}
    return BuildReport(details={
        "setting": adoption.setting.name, "conf": adoption.setting.conf, "postprocess": adoption.setting.postprocess.name,
        "gate": adoption.setting.gate.name if adoption.setting.gate else "none",
        "policy": f"{policy.kind} (min recall {policy.min_recall:g})", "chosen_by": "; ".join(adoption.reasons),
        "precision": adoption.with_gate.precision if adoption.setting.gate else adoption.without_gate.precision,
        "recall": adoption.with_gate.recall if adoption.setting.gate else adoption.without_gate.recall,
        "scores": report.scores_table(named),
        "config": Path(INFERENCE_CONFIG_FILE),
    })


def build_all_sweeps(evaluation: Evaluation, root: Path, policy: sweeps.Policy) -> tuple[int, dict[str, Any]]:
    """Every sweep and the adopted setting, each into its own folder under ``root``, as the
    evaluation assets build them one by one: (settings scored, the inference config)."""
    folders = {name: Path(root) / name for name in ("conf_sweep", "postprocess_sweep", "gate_sweep", "inference_config")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    scored = build_conf_sweep(evaluation, folders["conf_sweep"]).counts["configurations"]
    scored += build_postprocess_sweep(evaluation, folders["postprocess_sweep"]).counts["configurations"]
    merges = pd.read_csv(folders["postprocess_sweep"] / POSTPROCESS_SWEEP_CSV)
    scored += build_gate_sweep(evaluation, merges, policy, folders["gate_sweep"]).counts["configurations"]
    gates = pd.read_csv(folders["gate_sweep"] / GATE_SWEEP_CSV)
    build_inference_config(evaluation, merges, gates, policy, folders["inference_config"], about={})
    return scored, read_inference_config(folders["inference_config"])


def _headline(scores: Scores) -> dict[str, Any]:
    return {key: getattr(scores, key) for key in ("precision", "recall", "f1", "tp", "fp", "fn", "map50", "map50_95")}


def read_inference_config(version: Path) -> dict[str, Any]:
    return json.loads((Path(version) / INFERENCE_CONFIG_FILE).read_text())


def measure_speed(detector: Detector, images: Sequence[tuple[str, Path]], settings: InferenceSettings,
                  batch: int = 16) -> dict[str, Any]:
    """ms per frame and frames per second of the sliced pass of ``detector`` over ``images``."""
    done = run_pass(detector, list(images), settings, batch=batch)
    frames = int((done.frames["width"] > 0).sum())
    return {"backend": detector.backend, "device": detector.device_name, "threads": detector.threads,
            "batch": batch, "frames": frames, "sliced_seconds": round(done.seconds, 3),
            "ms_per_frame": round(1000 * done.seconds / frames, 1) if frames else None,
            "frames_per_second": round(frames / done.seconds, 3) if frames and done.seconds else None}


def build_report_card(evaluation: Evaluation, config: dict[str, Any], speeds: list[dict[str, Any]], out_dir: Path,
                      *, model: str, model_version: str) -> BuildReport:
    """The team's per-model card: P/R/F1 at the adopted setting with and without the gate, per
    class, confusion matrices side by side, speed per backend, frames and failures, worst
    false positives and misses as pictures."""
    out_dir = Path(out_dir)
    setting = sweeps.Setting.from_dict(config)
    plain = sweeps.Setting(setting.conf, setting.postprocess, None)
    gated = sweeps.Setting(setting.conf, setting.postprocess, setting.gate or sweeps.TEAM_GATE)
    named = {"without gate": evaluation.score(plain), f"with gate {gated.gate.name}": evaluation.score(gated)}
    report.plot_confusions(named, out_dir / "confusion.png")
    adopted = sweeps.final_detections(evaluation.predictions, setting)
    false, missed = report.worst_failures(adopted, evaluation.truth, evaluation.frames, evaluation.classes)
    paths = evaluation.paths
    report.failure_strip(paths, false, out_dir / "worst_false_positives.png",
                         f"most confident false positives at {setting.name}")
    report.failure_strip(paths, missed, out_dir / "worst_misses.png", f"largest missed people at {setting.name}")
    unreadable = len(evaluation.unreadable)
    adopted_scores = named["with gate " + gated.gate.name] if setting.gate else named["without gate"]
    card = {
        "model": model, "model_version": model_version, "setting": setting.as_dict(), "setting_name": setting.name,
        "frames": len(evaluation.frames), "unreadable": unreadable, "unreadable_frames": evaluation.unreadable,
        "speed": speeds,
        "scores": {name: _headline(scores) for name, scores in named.items()},
        "adopted": _headline(adopted_scores), "gate_adopted": setting.gate is not None,
        "per_class": {name: scores.per_class for name, scores in named.items()},
        "false_positives": int(len(false)), "misses": int(len(missed)),
        "fp_kinds": adopted_scores.fp_kinds,
    }
    (out_dir / REPORT_CARD_FILE).write_text(json.dumps(card, indent=2, default=str))
    return BuildReport(
        counts={"frames": len(evaluation.frames), "unreadable": unreadable},
        details={
            "setting": setting.name,
            "precision": adopted_scores.precision, "recall": adopted_scores.recall, "f1": adopted_scores.f1,
            "scores": report.scores_table(named),
            "per_class": report.per_class_table(named),
            "speed": Table(speeds, ["backend", "device", "threads", "batch", "frames", "ms_per_frame", "frames_per_second"]),
            "false_positive_kinds": Table([{"kind": k, "count": v} for k, v in adopted_scores.fp_kinds.items()],
                                          ["kind", "count"]),
            "confusion": Picture("confusion.png", "confusion matrices without and with the gate"),
            "worst_false_positives": Picture("worst_false_positives.png", "most confident false positives"),
            "worst_misses": Picture("worst_misses.png", "largest missed people"),
            "card": Path(REPORT_CARD_FILE),
        },
    )


def sliced_columns(card: dict[str, Any]) -> dict[str, Any]:
    """The report card's figures as model_comparison shows them beside the training metrics."""
    adopted = card["adopted"]
    speed = {entry["backend"]: entry for entry in card["speed"]}
    return {
        "sliced_precision": adopted["precision"], "sliced_recall": adopted["recall"], "sliced_f1": adopted["f1"],
        "sliced_map50": adopted["map50"], "sliced_setting": card["setting_name"],
        **{f"{backend}_ms_per_frame": entry["ms_per_frame"] for backend, entry in speed.items()},
    }

