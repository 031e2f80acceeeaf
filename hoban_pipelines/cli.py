"""The `hoban` command: everything a user can do without the Dagster UI."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from hoban_pipelines.demo import PROFILES
from hoban_pipelines.core.lake import LakeError
from hoban_pipelines.core.settings import ConfigError, hoban_home, load_settings



def _user_errors() -> tuple[type[Exception], ...]:
    from hoban_pipelines.cvat.reader import CvatFormatError
    from hoban_pipelines.cvat.rle import RleError
    from hoban_pipelines.labels.cvat_import import DatasetError
    from hoban_pipelines.demo.install import SiteExistsError
    from hoban_pipelines.labels.label_map import LabelMapError
    from hoban_pipelines.core.yolo_format import YoloFormatError
    from hoban_pipelines.captures.ingest import CaptureError
    from hoban_pipelines.evaluation.engine import EvaluationError
    from hoban_pipelines.evaluation.slicing import SlicingError
    from hoban_pipelines.training.recipes import TrainingError

    return (ConfigError, LakeError, SiteExistsError, RleError, CvatFormatError, DatasetError, LabelMapError,
            FileExistsError, EvaluationError, YoloFormatError, SlicingError, TrainingError, CaptureError)


class UserErrorGroup(click.Group):
    """Bad input ends in one clear line, not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except _user_errors() as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=UserErrorGroup)
def main() -> None:
    """hoban_pipelines: helmet detection datasets, models and reviews as Dagster assets."""


@main.command("demo-site")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Folder to create.")
@click.option("--seed", default=7, show_default=True, help="Same seed, same bytes.")
@click.option("--profile", default="demo", show_default=True, type=click.Choice(sorted(PROFILES)), help="Size profile.")
@click.option("--replace", is_flag=True, help="Rename an existing different site aside instead of refusing.")
def demo_site_command(out: Path, seed: int, profile: str, replace: bool) -> None:
    """Generate the embedded demo site (synthetic CCTV data shaped like the team's)."""
    from hoban_pipelines.demo.install import install_site

    summary, status = install_site(out, seed=seed, profile=profile, replace=replace)
    click.echo(f"demo site {status}: {out.resolve()}")
    click.echo(json.dumps(summary["counts"], indent=2, sort_keys=True))


@main.command("config")
@click.option("--check", is_flag=True, help="Also check that every configured path exists and is readable.")
def config_command(check: bool) -> None:
    """Show the settings in force (and where they come from)."""
    settings = load_settings()
    click.echo(f"# settings from {settings.source}; HOBAN_HOME={hoban_home()}")
    click.echo(json.dumps(settings.as_dict(), indent=2))
    if not check:
        return
    problems = []
    for key, is_file in _input_settings(settings):
        try:
            click.echo(f"ok  {key}: {settings.require(key, file=is_file)}")
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise click.ClickException("\n".join(problems))


def _input_settings(settings) -> list[tuple[str, bool]]:
    """(setting, is a file) for every configured input path."""
    keys = [("cvat_exports", False), ("snapshots", False), ("base_dataset", False)]
    keys += [(key, True) for key in ("base_checkpoint", "label_map") if getattr(settings, key)]
    return keys + [(f"captures.{cam}", False) for cam in sorted(settings.captures)]


@main.command("serve")
@click.option("--workspace", "-w", default="workspace.yaml", show_default=True, type=click.Path(path_type=Path),
              help="workspace.yaml (the local code location) or deploy/workspace.yaml (a gRPC code server).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the webserver listens on.")
@click.option("--port", default=3000, show_default=True, help="The webserver's port.")
@click.option("--expose", is_flag=True,
              help="Allow a non-loopback --host (only behind an authenticating proxy: the webserver has no login).")
def serve_command(workspace: Path, host: str, port: int, expose: bool) -> None:
    """The Dagster webserver and daemon on the instance of $DAGSTER_HOME, checked first (port, storage)."""
    from hoban_pipelines.serve import ServeError, serve

    try:
        code = serve(workspace, host, port, expose, echo=lambda line: click.echo(f"hoban serve: {line}", err=True))
    except ServeError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


@main.command("demo")
@click.option("--replace-site", is_flag=True, help="Regenerate a demo site that differs from the settings.")
def demo_command(replace_site: bool) -> None:
    """Run the whole pipeline on the embedded demo site, on the local Dagster instance."""
    from hoban_pipelines.demo_run import run_demo

    os.environ.setdefault("DAGSTER_HOME", str(Path(".dagster_home").resolve()))
    ok = run_demo(replace_site=replace_site, echo=click.echo)
    if not ok:
        sys.exit(1)


@main.group("cvat")
def cvat_group() -> None:
    """Read CVAT exports (CVAT for images/video 1.1, XML or export .zip)."""


@cvat_group.command("inspect")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per file.")
@click.option("--boxes", is_flag=True, help="Also list every box yielded.")
def cvat_inspect(files: tuple[Path, ...], as_json: bool, boxes: bool) -> None:
    """Count images, tracks, shapes and boxes per label in each export."""
    from hoban_pipelines.cvat.reader import read_export, summarize

    summaries = [summarize(read_export(path), with_boxes=boxes) for path in files]
    if as_json:
        click.echo(json.dumps(summaries, indent=2))
        return
    for summary in summaries:
        shapes = ", ".join(f"{tag} {n}" for tag, n in summary["shapes"].items() if n)
        labels = ", ".join(f"{label} {n}" for label, n in summary["boxes_by_label"].items())
        click.echo(f"{summary['file']}: {summary['images']} images, {summary['tracks']} tracks; shapes: {shapes or 'none'}")
        click.echo(f"  boxes by label: {labels or 'none'}")


@cvat_group.command("to-yolo")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="New dataset folder (must not exist).")
@click.option("--images", "images", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder the exports' image names are relative to (default: the first export's folder).")
@click.option("--label-map", "label_map", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML mapping CVAT labels (+ attributes) to classes; default: labels are the classes.")
@click.option("--classes", default="person_with_helmet,person_without_helmet", show_default=True,
              help="Comma-separated class names, in index order, when no label map names them.")
@click.option("--clean", "rule", default="none", show_default=True, type=click.Choice(["none", "small_box", "recurring_small"]),
              help="Remove pre-annotation false boxes (see README).")
def cvat_to_yolo(files, out: Path, images: Path | None, label_map: Path | None, classes: str, rule: str) -> None:
    """Write a YOLO dataset (images, labels, data.yaml, Parquet manifests) from CVAT exports."""
    from hoban_pipelines.labels.cleaning import CleaningRule
    from hoban_pipelines.labels.cvat_import import build_dataset
    from hoban_pipelines.labels.label_map import LabelMap
    from hoban_pipelines.core.lake import publish_directory

    class_names = [c.strip() for c in classes.split(",") if c.strip()]
    mapping = LabelMap.load(label_map, class_names) if label_map else LabelMap.identity(class_names)
    with publish_directory(out) as staging:
        _, boxes, report = build_dataset(
            list(files), staging, label_map=mapping, rule=CleaningRule(rule), image_root=images or files[0].parent
        )
    click.echo(f"wrote {out}: {sum(p['images'] for p in report.parts.values())} image entries, {len(boxes)} boxes, "
               f"{report.removed} removed by cleaning, {len(report.conflicts)} conflicts")


@main.group("dedup")
def dedup_group() -> None:
    """Near-duplicate images and frozen CCTV frames in a folder (reports only: nothing is deleted)."""


def _images_in(folder: Path) -> list[Path]:
    from hoban_pipelines.core.yolo_format import IMAGE_SUFFIXES

    images = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise click.ClickException(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return images


@dedup_group.command("near")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--threshold", type=float, default=None, help="Similarity at or above which two images pair "
              "(default 0.98 for the opencv backend; fastdup has its own scale and no default).")
@click.option("--backend", type=click.Choice(["opencv", "fastdup"]), default="opencv", show_default=True,
              help="fastdup is optional and licensed non-commercially (see README).")
def dedup_near(folder: Path, threshold: float | None, backend: str) -> None:
    """Pairs of near-duplicate images as JSON lines: {"a", "b", "similarity"}."""
    from hoban_pipelines.datasets import near_duplicates

    images = _images_in(folder)
    if backend == "fastdup":
        if threshold is None:
            raise click.ClickException("the fastdup backend needs --threshold: its similarity is not this project's cosine")
        pairs = near_duplicates.near_duplicate_pairs_fastdup(images, threshold)
    else:
        thumbs = near_duplicates.thumbnails(images)
        for path, reason in thumbs.skipped:
            click.echo(f"skipped {path}: {reason}", err=True)
        pairs = near_duplicates.near_duplicate_pairs(thumbs, threshold or near_duplicates.DEFAULT_THRESHOLD)
    for i, j, similarity in pairs:
        click.echo(json.dumps({"a": str(images[i].relative_to(folder)), "b": str(images[j].relative_to(folder)),
                               "similarity": round(similarity, 5)}))


@dedup_group.command("frozen")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--threshold", type=float, default=None, help="Block-max mean absolute difference below which a "
              "frame repeats the last live one (default 0.45, calibrated on the demo captures).")
def dedup_frozen(folder: Path, threshold: float | None) -> None:
    """One camera's frames, in file-name order (time-stamped names sort by time): the frozen ones as JSON."""
    from hoban_pipelines.datasets import near_duplicates

    images = _images_in(folder)
    results = near_duplicates.frozen_flags(images, threshold or near_duplicates.FROZEN_THRESHOLD)
    frozen = [r for r in results if r.is_frozen]
    click.echo(json.dumps({
        "frames": len(results),
        "frozen": len(frozen),
        "undecodable": [{"file": r.path, "error": r.error} for r in results if r.error],
        "bytes_in_frozen_frames": sum(Path(r.path).stat().st_size for r in frozen),
        "frozen_frames": [{"file": str(Path(r.path).relative_to(folder)), "repeats": str(Path(r.frozen_of).relative_to(folder)),
                           "reason": r.reason, "score": None if r.score is None else round(r.score, 4)} for r in frozen],
    }, indent=2))


def _image_list(source: Path) -> list[tuple[str, Path]]:
    """(name, path) of the frames a user named: a YOLO dataset folder (its val split, named as the
    evaluation names them), a folder of images (names relative to it) or a .txt list of paths
    (relative ones relative to the list)."""
    from hoban_pipelines.core.yolo_format import IMAGE_SUFFIXES
    from hoban_pipelines.evaluation.engine import EvaluationError
    from hoban_pipelines.evaluation.predictions import evaluation_set

    if source.is_dir() and (source / "data.yaml").is_file():
        return evaluation_set(source).images
    if source.is_dir():
        found = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        images = [(str(p.relative_to(source)), p) for p in found]
    else:
        lines = [line.strip() for line in source.read_text().splitlines() if line.strip() and not line.startswith("#")]
        paths = [Path(line) if Path(line).is_absolute() else source.parent / line for line in lines]
        images = [(str(p), p) for p in paths]
    if not images:
        raise EvaluationError(f"{source} names no images ({', '.join(IMAGE_SUFFIXES)}): point --images at a folder "
                              "of frames, a YOLO dataset folder or a .txt list of image paths")
    return images


@main.command("predict-sliced")
@click.option("--model", "model", required=True, type=click.Path(exists=True, path_type=Path),
              help="A checkpoint (.pt), an exported model (.onnx), or a model version folder from the lake.")
@click.option("--images", "images", required=True, type=click.Path(exists=True, path_type=Path),
              help="A folder of frames, a YOLO dataset folder (its val split) or a .txt list of image paths.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="The .parquet file to write.")
@click.option("--backend", type=click.Choice(["torch", "onnx"]), default=None,
              help="torch (a .pt) or onnx (an .onnx, or a .pt exported on the fly); default: by the model file.")
@click.option("--slice", "slice_size", type=int, default=0, show_default=True,
              help="Tile size in px; 0: the size the model trained on.")
@click.option("--overlap", type=float, default=0.2, show_default=True, help="Share of a tile its neighbour repeats.")
@click.option("--full-imgsz", type=int, default=0, show_default=True,
              help="Image size of the full-image pass the gate needs; 0: the model's own scale for whole frames.")
@click.option("--conf-floor", type=float, default=0.05, show_default=True, help="Lowest confidence kept.")
@click.option("--batch", type=int, default=16, show_default=True, help="Tiles a forward, across frames.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, or a CUDA device (0, cuda:0).")
@click.option("--threads", type=int, default=0, show_default=True, help="CPU threads; 0: every core.")
@click.option("--replace", is_flag=True, help="Overwrite --out if it exists.")
def predict_sliced(model: Path, images: Path, out: Path, backend: str | None, slice_size: int, overlap: float,
                   full_imgsz: int, conf_floor: float, batch: int, device: str, threads: int, replace: bool) -> None:
    """Sliced (and full-image) inference over frames: every raw detection to one Parquet file."""
    import tempfile

    from hoban_pipelines.evaluation import builds
    from hoban_pipelines.evaluation.engine import InferenceSettings, load_onnx_detector, load_torch_detector
    from hoban_pipelines.evaluation.export import export_onnx
    from hoban_pipelines.evaluation.predictions import predict_to_file
    from hoban_pipelines.training.job import BEST_WEIGHTS, resolve_device

    if out.exists() and not replace:
        raise FileExistsError(f"{out} exists; pass --replace to overwrite it, or choose another --out")
    device = resolve_device(device)
    version = model if model.is_dir() else None
    weights = model / BEST_WEIGHTS if version else model
    backend = backend or ("onnx" if weights.suffix == ".onnx" else "torch")
    with tempfile.TemporaryDirectory(prefix="hoban-predict-") as scratch:
        if backend == "onnx" and weights.suffix != ".onnx":
            click.echo(f"exporting {weights} to ONNX ...", err=True)
            export_onnx(weights, Path(scratch), imgsz=load_torch_detector(weights).trained_imgsz)
            weights = Path(scratch) / "model.onnx"
        detector = (load_onnx_detector(weights, device=device, threads=threads) if backend == "onnx"
                    else load_torch_detector(weights, device, threads))
        if version:
            settings = builds.model_defaults(version, slice_size, full_imgsz, overlap, conf_floor)
        else:
            imgsz = detector.trained_imgsz
            settings = InferenceSettings(slice_size=slice_size or imgsz, imgsz=imgsz, full_imgsz=full_imgsz or imgsz,
                                         overlap=overlap, conf_floor=conf_floor)
        frames = _image_list(images)
        click.echo(f"{len(frames)} frames, {settings.as_dict()}, {backend} on {detector.device_name}", err=True)
        staging = out.with_name(f".{out.name}.partial")
        out.parent.mkdir(parents=True, exist_ok=True)
        built = predict_to_file(detector, frames, settings, staging, batch=batch, about={"model": str(model)})
        os.replace(staging, out)
    for warning in built.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(json.dumps({"out": str(out), **built.counts, "ms_per_frame": built.details["ms_per_frame"]}))


@main.command("evaluate")
@click.option("--predictions", "predictions", required=True, type=click.Path(exists=True, path_type=Path),
              help="A .parquet file written by predict-sliced (or a sliced_predictions version folder).")
@click.option("--labels", "labels", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The YOLO dataset folder (data.yaml) with the ground truth; frames pair by file path.")
@click.option("--split", default="val", show_default=True, help="The dataset's split to score on.")
@click.option("--conf", type=float, default=0.5, show_default=True, help="Confidence threshold.")
@click.option("--postprocess", "merge", default="NMS/IOS/0.4", show_default=True,
              help="Cross-tile merge: METHOD/METRIC/THRESHOLD (NMS, NMM, GREEDYNMM; IOU, IOS).")
@click.option("--gate", default="", help="The full-image gate as CONF/RADIUS (the team's: 0.2/40); empty: none.")
@click.option("--gate-per-class", is_flag=True, help="Only a full-image detection of its own class vouches for a box.")
@click.option("--sweep", is_flag=True, help="Also run every sweep and print the setting the default policy adopts.")
def evaluate_command(predictions: Path, labels: Path, split: str, conf: float, merge: str, gate: str,
                     gate_per_class: bool, sweep: bool) -> None:
    """Score cached sliced predictions against ground truth: P, R, F1, TP/FP/FN, mAP, sizes, FP kinds."""
    import tempfile
    from dataclasses import asdict

    from hoban_pipelines.evaluation import builds, sweeps
    from hoban_pipelines.evaluation.engine import EvaluationError
    from hoban_pipelines.evaluation.gate import Gate
    from hoban_pipelines.evaluation.postprocess import Postprocess

    try:
        method, metric, threshold = merge.split("/")
        postprocess = Postprocess(method.upper(), metric.upper(), float(threshold))
        chosen_gate = Gate(*map(float, gate.split("/")), class_agnostic=not gate_per_class) if gate else None
    except (ValueError, TypeError) as exc:  # TypeError: a gate of more than CONF/RADIUS
        raise EvaluationError(f"--postprocess {merge!r} / --gate {gate!r}: {exc}") from None
    evaluation = builds.Evaluation.load(predictions, labels, str(predictions), str(labels), split=split)
    scores = evaluation.score(sweeps.Setting(conf, postprocess, chosen_gate))
    result = {"frames": len(evaluation.frames), "unreadable": evaluation.unreadable, **asdict(scores)}
    if sweep:
        with tempfile.TemporaryDirectory(prefix="hoban-evaluate-") as scratch:
            result["settings_scored"], result["adopted"] = builds.build_all_sweeps(evaluation, Path(scratch),
                                                                                   sweeps.Policy())
    click.echo(json.dumps(result, indent=2, default=str))


@main.group("captures")
def captures_group() -> None:
    """Capture folders: the one command that deletes frames, and only frozen repeats."""


@captures_group.command("prune")
@click.option("--day", default=None, help="The day (YYYY-MM-DD) whose recorded captures_dedup version to act on.")
@click.option("--version", "version_dir", default=None, type=click.Path(path_type=Path, file_okay=False),
              help="A captures_dedup version folder instead of --day's recorded one.")
@click.option("--dry-run", "mode", flag_value="dry-run", help="List what would be deleted; delete nothing.")
@click.option("--apply", "mode", flag_value="apply", help="Delete the repeats, logging each file first.")
def prune_command(day: str | None, version_dir: Path | None, mode: str | None) -> None:
    """Delete the frozen repeats one dedup version found (never a live frame, never the frame a
    repeat repeats); refused when any of those files changed since the version read them.
    Every removal is logged to $HOBAN_HOME/logs/captures_prune.jsonl before the file goes."""
    from hoban_pipelines.captures.dedup import apply_prune, plan_prune
    from hoban_pipelines.resources import LakeResource

    if mode is None:
        raise click.UsageError("say --dry-run (list) or --apply (delete)")
    if (day is None) == (version_dir is None):
        raise click.UsageError("give --day or --version, one of them")
    lake = LakeResource()
    folder = version_dir or lake.recorded("captures_dedup", day).resolve(lake.get().home)
    plan = plan_prune(folder)
    click.echo(json.dumps(plan.summary(), indent=2))
    if mode == "dry-run":
        for entry in plan.files:
            click.echo(f"would delete {entry['path']} (repeats {Path(entry['frozen_of']).name})")
        return
    log_file = hoban_home() / "logs" / "captures_prune.jsonl"
    removed = 0
    for record in apply_prune(plan, log_file):
        click.echo(f"deleted {record['path']}")
        removed += 1
    click.echo(f"deleted {removed} files ({plan.bytes} bytes); logged in {log_file}")


@main.group("bench")
def bench_group() -> None:
    """Benchmarks; each prints its figures as JSON."""


@bench_group.command("cvat")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the only output format).")
@click.option("--size-mb", default=20.0, show_default=True, help="Size of the generated mask-heavy export.")
def bench_cvat(as_json: bool, size_mb: float) -> None:
    """Stream a mask-heavy CVAT export: shapes, seconds, shapes/s, peak RSS."""
    from hoban_pipelines.bench import cvat

    click.echo(json.dumps(cvat.run(size_mb=size_mb)))


@bench_group.command("mix")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the only output format).")
def bench_mix(as_json: bool) -> None:
    """Assemble a 12,000-entry mix from a 10,000-image base dataset; near-duplicate search over 20,000 thumbnails."""
    from hoban_pipelines.bench import mix

    click.echo(json.dumps(mix.run()))


@bench_group.command("train")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the only output format).")
def bench_train(as_json: bool) -> None:
    """One epoch through the base_model asset (Pipes child) against the same ultralytics call run directly."""
    from hoban_pipelines.bench import train

    click.echo(json.dumps(train.run()))


@bench_group.command("sliced")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the only output format).")
@click.option("--frames", default=8, show_default=True, help="1920x1080 demo frames to run.")
@click.option("--threads", default=0, show_default=True, help="torch / onnxruntime threads on every side; 0: every core.")
def bench_sliced(as_json: bool, frames: int, threads: int) -> None:
    """sahi against our engine (torch, onnx) and the bare torch forward, 640 tiles, one run."""
    from hoban_pipelines.bench import sliced

    click.echo(json.dumps(sliced.run(frames=frames, threads=threads)))


@bench_group.command("sweep")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the only output format).")
def bench_sweep(as_json: bool) -> None:
    """The whole sweep set from one cache against the inference pass that fills it (the demo's go2k_v2; run make demo first)."""
    from hoban_pipelines.bench import sweep

    click.echo(json.dumps(sweep.run()))


@bench_group.command("dedup")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the only output format).")
@click.option("--frames", default=480, show_default=True, help="1920x1080 captures in the generated day, about 1 in 8 frozen.")
@click.option("--fastdup-python", default=None, help="A python that imports fastdup, to time it there when this one cannot.")
def bench_dedup(as_json: bool, frames: int, fastdup_python: str | None) -> None:
    """Frozen-frame detection on a generated day of captures (median of 3 warm runs), and fastdup if importable."""
    from hoban_pipelines.bench import frozen

    click.echo(json.dumps(frozen.run(frames=frames, fastdup_python=fastdup_python)))


@bench_group.command("all")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the only output format).")
def bench_all(as_json: bool) -> None:
    """Every benchmark, one JSON line each: {"cvat": {...}}, {"mix": {...}}, {"train": {...}}, {"sliced": ...}, {"sweep": ...}, {"dedup": ...}."""
    from hoban_pipelines.bench import cvat, frozen, mix, sliced, sweep, train

    for name, bench in (("cvat", cvat), ("mix", mix), ("train", train), ("sliced", sliced), ("sweep", sweep),
                        ("dedup", frozen)):
        click.echo(json.dumps({name: bench.run()}))


if __name__ == "__main__":
    main()
