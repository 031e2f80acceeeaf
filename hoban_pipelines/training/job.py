"""The training job: one run as the asset hands it to the child (``TrainJob``), its device and
threads, the checkpoint it starts from, the arguments ultralytics gets, the run folder's state
across attempts, and publishing a finished run's files into a version folder.

The Dagster side runs ``hoban_pipelines.training.child`` in a subprocess; everything that child
does is a function in this package, so a run can be reproduced by hand. torch and ultralytics
are imported inside the functions that need them: the code location imports this module and
must stay quick to load.

Facts about ultralytics 8.4 this module relies on (read from its source):
- A run folder holds ``weights/best.pt``, ``weights/last.pt`` and ``results.csv``.
- A finished run's ``last.pt`` is stripped (epoch -1, no optimizer); only an unfinished one resumes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import MISSING, asdict, dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Any

from hoban_pipelines.core.lake import file_sha256
from hoban_pipelines.training.profiles import device_kind
from hoban_pipelines.training.recipes import TrainingError, TrainRecipe

SEED = 0
# a run folder: ultralytics' files, ours beside them
BEST_WEIGHTS = "weights/best.pt"
LAST_WEIGHTS = "weights/last.pt"
RESULTS_CSV = "results.csv"  # one row per epoch
CURVES_PNG = "curves.png"
CONFUSION_PNG = "confusion.png"
SUMMARY_FILE = "summary.json"  # the child's TrainSummary and its training view
JOB_RECORD = "job.json"  # the job's identity, for run_state of a later attempt
VIEW_DIR = "data"  # the training view (whole images or tiles)
EVAL_DIR = "eval"  # the evaluation set's view
# a published checkpoint version: these files of the run folder, and the job beside them
ARTIFACTS = (BEST_WEIGHTS, LAST_WEIGHTS, RESULTS_CSV, CURVES_PNG, CONFUSION_PNG, SUMMARY_FILE)
RECIPE_FILE = "recipe.json"  # the job as the child got it (TrainJob.as_extras)


def resolve_device(requested: str) -> str:
    """The ultralytics device for a setting: 'auto' (GPU 0 when there is one), 'cpu', 'cuda', 'cuda:N' or 'N'.

    A GPU request on a machine without one is an error, never a silent CPU run.
    """
    wanted = str(requested).strip().lower()
    if wanted == "cpu":
        return "cpu"
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if wanted == "auto":
        return "0" if gpus else "cpu"
    match = re.fullmatch(r"cuda(?::(\d+))?|(\d+)", wanted)
    if match is None:
        raise TrainingError(
            f"device {requested!r} is not understood; use 'auto', 'cpu', 'cuda', 'cuda:N' or a GPU index 'N' "
            "(one GPU per run: the epoch stream does not reach across multi-GPU worker processes)"
        )
    if not gpus:
        raise TrainingError(
            f"device {requested!r} asks for CUDA but torch {torch.__version__} sees no CUDA GPU on this machine; "
            "use device 'auto' (the GPU when there is one, else the CPU) or 'cpu'"
        )
    index = int(match.group(1) or match.group(2) or 0)
    if index >= gpus:
        raise TrainingError(f"device {requested!r} asks for GPU {index} but this machine has {gpus} (0..{gpus - 1})")
    return str(index)


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    sha256: str
    classes: list[str]


def load_checkpoint(path: Path | str) -> CheckpointInfo:
    """The classes and content hash of a YOLO detection checkpoint, or a TrainingError naming the file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise TrainingError(
            f"checkpoint {path} does not exist; set 'base_checkpoint' in hoban.yaml to your base model's .pt file"
        )
    from ultralytics.nn.tasks import load_checkpoint as load_ultralytics_checkpoint

    try:
        model, _ = load_ultralytics_checkpoint(path)
    except Exception as exc:  # any reason it cannot load means it cannot seed training; say which file
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TrainingError(
            f"checkpoint {path} cannot be loaded (empty, truncated, corrupted or not an ultralytics .pt): {reason}"
        ) from exc
    if getattr(model, "task", None) != "detect" or not isinstance(getattr(model, "names", None), dict):
        raise TrainingError(f"checkpoint {path} is a {getattr(model, 'task', 'unknown')!r} model, not a YOLO detector")
    classes = [str(model.names[index]) for index in sorted(model.names)]
    return CheckpointInfo(path=path, sha256=file_sha256(path), classes=classes)


def check_classes(checkpoint_classes: list[str], dataset_classes: list[str], remap: bool) -> bool:
    """True when training will re-head the model to the dataset's classes; an error if not allowed.

    With ``remap`` ultralytics builds the detection head for the dataset's class count and copies
    every checkpoint weight whose shape still fits: with another class count the class outputs
    start from scratch; with the same count they are taken over by index, whatever their names.
    """
    if list(checkpoint_classes) == list(dataset_classes):
        return False
    if remap:
        return True
    raise TrainingError(
        f"the checkpoint's classes {list(checkpoint_classes)} differ from the dataset's {list(dataset_classes)}; "
        "use a checkpoint trained on the dataset's classes, or set remap to train a new class head"
    )


def train_args(
    recipe: TrainRecipe,
    *,
    data_yaml: Path | str,
    model: Path | str,
    device: str,
    workers: int,
    project: Path | str,
    name: str,
    amp: bool,
    cache: bool | str,
) -> dict[str, Any]:
    """Keyword arguments for ``YOLO(model).train(**args)``: the run lands in ``project/name``."""
    return {
        **recipe.ultralytics_args(),
        "data": str(data_yaml),
        "model": str(model),
        "device": device,
        "workers": workers,
        "project": str(project),
        "name": name,
        "exist_ok": True,  # a retried run reuses its folder instead of creating name2, name3, ...
        "amp": bool(amp) and device != "cpu",  # mixed precision is a GPU feature
        "cache": cache,
        "plots": False,  # ultralytics' plots download a font; summary.summarize_run draws our own
        "val": True,
        "seed": SEED,
        "deterministic": True,
    }


@dataclass(frozen=True)
class TrainJob:
    """One training run, as the Dagster asset hands it to the child process (``context.extras``)."""

    recipe: TrainRecipe  # as written; the child sizes it with profiles.for_profile
    data_yaml: str
    model: str  # a checkpoint .pt to start from, or a model yaml such as yolov8n.yaml
    run_dir: str  # keep it the same across retries: a retry resumes what is there
    profile: str = "full"
    # data.yaml whose val split the finished model is scored on (None: the training data's val)
    eval_data: str | None = None
    device: str = "auto"
    workers: int = 2
    threads: int = 0  # torch CPU threads; 0: every core (ultralytics alone would leave one idle)
    amp: bool = True
    cache: bool | str = False  # False, True/'ram' or 'disk'
    classes: list[str] | None = None  # the classes the model must end up with; None: the dataset's
    remap: bool = False  # allow a checkpoint with other classes (a new class head is trained)

    def as_extras(self) -> dict[str, Any]:
        """JSON-ready: dagster-pipes sends extras as JSON (paths become strings)."""
        return json.loads(json.dumps(asdict(self), default=str))

    @classmethod
    def from_extras(cls, raw: dict[str, Any]) -> "TrainJob":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        missing = [f.name for f in fields(cls) if f.default is MISSING and f.name not in raw]
        if unknown or missing:
            raise TrainingError(f"training job: unknown keys {unknown}, missing keys {missing}; keys are {sorted(known)}")
        recipe = raw["recipe"]
        return cls(**{**raw, "recipe": recipe if isinstance(recipe, TrainRecipe) else TrainRecipe.from_dict(recipe)})

    def identity(self) -> dict[str, Any]:
        """What makes two attempts the same run; device, workers, threads, amp and cache may change on a retry."""
        return json.loads(json.dumps({
            "recipe": self.recipe.as_dict(), "profile": self.profile, "data_yaml": self.data_yaml,
            "eval_data": self.eval_data, "model": self.model, "classes": self.classes, "remap": self.remap,
        }))

    def reuse_key(self, upstream: dict[str, str]) -> dict[str, Any]:
        """What decides the trained model, JSON-ready (to store with a version and compare later):
        the job's identity, the upstream versions it trains on, and the kind of device (the demo
        profile sizes a run per kind). ``device`` is the resolved one (``resolve_device``)."""
        return json.loads(json.dumps({
            "job": self.identity(), "upstream": upstream, "device_kind": device_kind(self.device),
        }))


class RunState(Enum):
    FRESH = "fresh"
    UNFINISHED = "unfinished"  # resume from weights/last.pt
    FINISHED = "finished"  # only the summary is left to do


def run_state(job: TrainJob) -> tuple[RunState, str]:
    """What the job's run_dir holds from an earlier attempt, and a sentence saying so.

    An unreadable ``last.pt`` (killed while writing it) means starting over. Weights of another
    job in the folder are an error: resuming or reusing them would report the wrong model.
    """
    run_dir = Path(job.run_dir)
    last = run_dir / LAST_WEIGHTS
    if not last.is_file():
        return RunState.FRESH, f"no earlier attempt in {run_dir}"
    record = run_dir / JOB_RECORD
    earlier = json.loads(record.read_text()) if record.is_file() else None
    if earlier != job.identity():
        raise TrainingError(
            f"{run_dir} holds weights of another run (see {record}); give this job its own run_dir"
        )
    from ultralytics.nn.tasks import torch_safe_load

    try:
        checkpoint, _ = torch_safe_load(last)
    except Exception as exc:  # a half-written file from a killed attempt: nothing to resume from
        return RunState.FRESH, f"{last} is unreadable ({type(exc).__name__}); starting over"
    if checkpoint.get("epoch", -1) >= 0 and checkpoint.get("optimizer") is not None:
        return RunState.UNFINISHED, f"resuming {last} after epoch {checkpoint['epoch'] + 1}"
    return RunState.FINISHED, f"{run_dir} holds this job's finished run; summarizing it"


def record_job(job: TrainJob) -> None:
    """Write the job's identity beside its weights, for ``run_state`` of a later attempt."""
    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / JOB_RECORD).write_text(json.dumps(job.identity(), indent=2))


def cpu_threads(requested: int = 0) -> int:
    """torch threads for CPU work: ``requested``, or every core.

    ultralytics sets torch to ``cpu_count - 1`` threads (1 on a 2-core laptop) and loads CPU
    batches in the training process itself, so half such a machine would sit idle; measured on
    the demo base dataset (300 images at 256, 2 cores): 20 s an epoch with one thread, 12 s with two.
    """
    return requested or os.cpu_count() or 1


def offline_amp_check(model) -> bool:
    """ultralytics' AMP check without its download: True when fp32 and float16 autocast outputs agree.

    ultralytics checks AMP by downloading yolo26n.pt and comparing its detections of a bundled
    image; offline that download fails (or, online, fetches weights at run time). The same test
    on a copy of the model being trained needs nothing from the network.
    """
    import copy

    import torch

    device = next(model.parameters()).device
    if device.type != "cuda":
        return False  # AMP is a CUDA feature here
    probe = copy.deepcopy(model).float().eval()
    generator = torch.Generator(device=device).manual_seed(0)
    batch = torch.rand(8, 3, 256, 256, device=device, generator=generator)
    with torch.no_grad():
        full = probe(batch)
        with torch.autocast(device_type="cuda", dtype=torch.float16):
            half = probe(batch)
    first = lambda out: out[0] if isinstance(out, (list, tuple)) else out  # noqa: E731 (eval output is (y, x))
    full, half = first(full), first(half).float()
    return full.shape == half.shape and bool(torch.isfinite(half).all()) and torch.allclose(full, half, atol=0.5)


def write_checkpoint_version(run_dir: Path | str, out_dir: Path | str, job: TrainJob) -> str:
    """Copy a finished run's ``ARTIFACTS`` (those present) from ``run_dir`` into ``out_dir`` and
    the job beside them as ``RECIPE_FILE``; the content digest, best.pt's sha256."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not (run_dir / BEST_WEIGHTS).is_file():
        raise TrainingError(f"{run_dir / BEST_WEIGHTS} does not exist: the run in {run_dir} did not finish")
    out_dir.mkdir(parents=True, exist_ok=True)
    for relative in ARTIFACTS:
        source = run_dir / relative
        if source.is_file():
            (out_dir / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, out_dir / relative)
    (out_dir / RECIPE_FILE).write_text(json.dumps(job.as_extras(), indent=2, sort_keys=True))
    return file_sha256(out_dir / BEST_WEIGHTS)


def write_base_version(checkpoint: CheckpointInfo, out_dir: Path | str) -> str:
    """Copy a configured base checkpoint into ``out_dir`` as ``BEST_WEIGHTS``; its sha256."""
    target = Path(out_dir) / BEST_WEIGHTS
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(checkpoint.path, target)
    return checkpoint.sha256


def remove_views(run_dir: Path | str) -> list[Path]:
    """Delete the run's training and evaluation views; the folders removed.

    They are derived from lake inputs and rebuilt on demand (tiles: ~150 MB a demo run); the
    weights and the rest of the run folder stay for a re-execution of the run.
    """
    removed = []
    for view in (Path(run_dir) / VIEW_DIR, Path(run_dir) / EVAL_DIR):
        if view.is_dir():
            shutil.rmtree(view)
            removed.append(view)
    return removed
