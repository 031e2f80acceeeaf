"""YOLO training without Dagster: recipes, early checks with clear messages, the arguments
ultralytics gets, and the summary of a run (metrics, per-epoch curves, confusion matrix).

The Dagster side runs ``hoban_pipelines.training.child`` in a subprocess; everything that child
does is a function here, so a run can be reproduced by hand. torch, ultralytics and matplotlib
are imported inside the functions that need them: the code location imports this module for
its recipes and must stay quick to load.

Facts about ultralytics 8.4 this module relies on (read from its source):
- ``best.pt`` is the epoch with the highest mAP50-95 (its fitness weights are [0, 0, 0, 1]).
- ``results.csv`` gets one row per epoch, appended on resume; a row is written before that
  epoch's checkpoint, so a run killed in between repeats the epoch and the row.
- A finished run's ``last.pt`` is stripped (epoch -1, no optimizer); only an unfinished one resumes.
- The validator fills its confusion matrix only with ``plots=True``, at the mAP threshold
  (conf 0.001), and its image mosaics fetch a font from the internet; validation here fills
  the matrix at conf 0.25 and skips the mosaics.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from enum import Enum
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from hoban_pipelines.core.lake import file_sha256
from hoban_pipelines.core.yolo_format import IMAGE_SUFFIXES

OPTIMIZERS = ("SGD", "AdamW", "auto")
PROFILES = ("full", "demo", "test")
SEED = 0

# demo: `make demo` trains a base model from scratch and the go2k models on 2 CPU cores.
# Measured on the demo base dataset (300 train / 60 val 640x640 images, batch 16, 2 cores, one
# torch thread): an epoch takes about 33 s at imgsz 320 and 145 s at 640, so 640 is out of reach.
# On whole 1920x1080 frames at 256-320 the go2k people (20-80 px) are 3-13 px and the go2k
# models score mAP50 0.000, so the demo trains them on tiles.
# Measured on 2 cores, go2k_v2 from the demo's base model, mAP50 on go2k_split's 23 whole valid
# frames (helmet / no helmet); all but the last on the site generator's previous version (1.0):
# - 512-px tiles at 256 (people at half size, scored at 960), ~5,300 samples: 0.27 (0.41 / 0.12);
#   on an H100 such half-size tiles needed ~12,400 samples for 0.50.
# - 256-px tiles at 256 (native size, scored at 1920): the base model alone scores 0.30; after
#   one epoch of every tile (8,589, the base set's images tiled too) 0.22. Left whole, the base
#   images keep their people's heads (a cut-off body still carried its helmet class), and 80% of
#   the label-free tiles are left out: 2 epochs of 2,017 entries reach 0.28, 4 epochs 0.52.
# - ultralytics accumulates gradients up to a nominal batch of 64, so a batch-16 run of 8,000
#   samples stepped the optimizer 125 times; stepping every batch (nbs = batch) gave the base
#   model 0.55 instead of 0.48 on its val in the same 12 epochs (0.40 instead of 0.30 on the
#   go2k frames before any finetuning). Its warmup (3 epochs, at least 100 iterations) would
#   cover a whole short run: the demo warms up for a tenth of the run (the 100 still apply).
# - Through `make demo` (all of the above): go2k_v2 4 epochs of 2,086 entries, 0.51 (0.85 /
#   0.17), about 6.5 min of the 15. The side runs (finetunes, go2k_v3) get 800 samples each.
@dataclass(frozen=True)
class DemoSize:
    max_imgsz: int  # CCTV recipes train on tiles of this size at this size: people keep their pixels
    max_epochs: int
    sample_budget: int  # training samples a finetune sees (epochs x entries)
    background_tiles: float  # share of label-free tiles kept
    step_every_batch: bool  # nbs = batch: no gradient accumulation


DEMO_SIZES = {
    "cpu": DemoSize(max_imgsz=256, max_epochs=12, sample_budget=4000,
                    background_tiles=0.2, step_every_batch=True),
    # On a GPU the same 15 minutes buy bigger tiles at native scale: measured on an H100 with the
    # real child, 30 epochs of 640 tiles at 640 from the demo's go2k frames (1,480 tiles, 6-7 s an
    # epoch, 204 s in all) reach mAP50 0.984 on whole frames at 1920 (a base model from
    # scratch: 30 epochs, 0.59 on the base valid, 49 s).
    "cuda": DemoSize(max_imgsz=640, max_epochs=30, sample_budget=45_000,
                     background_tiles=1.0, step_every_batch=False),
}
DEMO_WARMUP_SHARE = 0.1
# test: one epoch at the smallest size ultralytics trains at (two strides of 32)
TEST_EPOCHS = 1
TEST_IMGSZ = 64

# train_args sets these itself; a recipe's `extra` may not override them
_RESERVED_ARGS = frozenset({
    "data", "model", "device", "workers", "project", "name", "exist_ok", "amp", "cache",
    "plots", "val", "seed", "deterministic", "resume", "save_dir",
})
_NOT_TRAIN_ARGS = ("name", "extra", "tile", "tile_over", "background_tiles", "demo_tiles", "demo_weight")  # recipe fields that are not ultralytics arguments


class TrainingError(RuntimeError):
    """A training run that cannot start or finish; the message names the file or setting."""


@dataclass(frozen=True)
class TrainRecipe:
    """How to train: the numbers of one of the team's runs. Defaults are ultralytics' own."""

    name: str
    epochs: int
    imgsz: int
    batch: int
    optimizer: str
    lr0: float
    cos_lr: bool = False
    patience: int = 100
    mosaic: float = 1.0
    mixup: float = 0.0
    degrees: float = 0.0
    erasing: float = 0.4
    copy_paste: float = 0.0
    # train on square tiles of this many source pixels cut from larger images (0: whole images)
    tile: int = 0
    # only images longer than this are tiled: the 1920x1080 CCTV frames, not a generic set's 640 px
    tile_over: int = 1280
    background_tiles: float = 1.0  # share of the tiles without any label that training keeps
    # the data is CCTV frames with small people: the demo profile tiles it (see DEMO_SIZES)
    demo_tiles: bool = False
    # share of the demo profile's sample budget: the team's main run gets more than the side runs
    demo_weight: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)  # any other ultralytics train argument

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise TrainingError(f"recipe {self.name!r}: optimizer {self.optimizer!r} is not one of {list(OPTIMIZERS)}")
        for key in ("epochs", "imgsz", "batch"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise TrainingError(f"recipe {self.name!r}: {key} must be a positive integer, got {getattr(self, key)!r}")
        if not isinstance(self.tile_over, int) or self.tile_over < 0:
            raise TrainingError(f"recipe {self.name!r}: tile_over must be a pixel count of 0 or more, got {self.tile_over!r}")
        if not 0.0 <= self.background_tiles <= 1.0:
            raise TrainingError(f"recipe {self.name!r}: background_tiles must be a share between 0 and 1, got {self.background_tiles!r}")
        if not self.demo_weight > 0:
            raise TrainingError(f"recipe {self.name!r}: demo_weight must be positive, got {self.demo_weight!r}")
        if not isinstance(self.tile, int) or self.tile < 0 or 0 < self.tile < 32:
            raise TrainingError(f"recipe {self.name!r}: tile must be 0 (whole images) or at least 32 pixels, got {self.tile!r}")
        clashes = sorted((set(self.extra) & _RESERVED_ARGS) | (set(self.extra) & {f.name for f in fields(self)}))
        if clashes:
            raise TrainingError(f"recipe {self.name!r}: extra sets {clashes}, which are recipe fields or set by the job")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "TrainRecipe":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise TrainingError(f"recipe has unknown keys {unknown}; known keys: {sorted(known)} (others go in 'extra')")
        missing = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING and f.name not in raw]
        if missing:
            raise TrainingError(f"recipe is missing {missing}")
        return cls(**raw)


# The team's runs (go2k dev log). Epochs and patience of the finetunes are not in the log:
# they get go2k_v2's patience 20 and ultralytics' 100 epochs, which early stopping cuts short.
RECIPES: dict[str, TrainRecipe] = {
    recipe.name: recipe
    for recipe in (
        # the demo's stand-in for "v13 stage2": a base model trained from yolov8n.yaml; 'auto'
        # lets ultralytics pick AdamW with a class-count-fitted lr0 for short runs like this one
        TrainRecipe(name="base_from_scratch", epochs=100, imgsz=640, batch=16, optimizer="auto", lr0=0.01, patience=20),
        TrainRecipe(name="finetune_sgd", epochs=100, imgsz=640, batch=16, optimizer="SGD", lr0=0.005, patience=20,
                    demo_tiles=True, demo_weight=0.2),
        TrainRecipe(name="finetune_adamw", epochs=100, imgsz=640, batch=16, optimizer="AdamW", lr0=0.0002, patience=20,
                    demo_tiles=True, demo_weight=0.2),
        # their run stopped at epoch 97 (patience 20); best epoch 77, about 5 h on their GPU
        TrainRecipe(
            name="go2k_v2", epochs=100, imgsz=640, batch=16, optimizer="SGD", lr0=0.005, cos_lr=True,
            patience=20, mosaic=1.0, mixup=0.1, degrees=5.0, erasing=0.1, demo_tiles=True, demo_weight=2.0,
        ),
        # planned ("tile training + 1280 px + copy_paste"); numbers beyond the log's are guesses:
        # 1280 tiles at imgsz 1280 train at the frames' own scale; batch 8 since 1280 px needs four
        # times the memory of 640. ultralytics pastes only polygon-labelled instances, so
        # copy_paste does nothing on box-only labels (all of go2k's labels are boxes).
        TrainRecipe(
            name="go2k_v3", epochs=100, imgsz=1280, batch=8, optimizer="SGD", lr0=0.005, cos_lr=True,
            patience=20, mosaic=1.0, mixup=0.1, degrees=5.0, erasing=0.1, copy_paste=0.3, tile=1280,
            demo_tiles=True, demo_weight=0.2,
        ),
    )
}


def for_profile(
    recipe: TrainRecipe, profile: str, *, train_images: int | None = None, device: str = "cpu",
) -> TrainRecipe:
    """The recipe at a run size: 'full' as written, 'demo' fits the demo's 15 minutes on ``device``
    (2 CPU cores, or one GPU), 'test' is one tiny epoch.

    ``train_images`` (entries of the training split as trained, tiles and oversampled copies
    included) lets 'demo' spend the recipe's share of time (``demo_samples``): fewer epochs over
    more images.
    """
    if profile == "full":
        return recipe
    if profile == "demo":
        size = _demo_size(device)
        imgsz = min(recipe.imgsz, size.max_imgsz)
        epochs = min(recipe.epochs, size.max_epochs)
        if train_images:
            epochs = min(epochs, max(1, round(demo_samples(recipe, device) / train_images)))
        if recipe.demo_tiles:
            recipe = replace(recipe, tile=imgsz, background_tiles=size.background_tiles)
        short_run = {"warmup_epochs": round(DEMO_WARMUP_SHARE * epochs, 2)}
        if size.step_every_batch:
            short_run["nbs"] = recipe.batch
        return replace(recipe, epochs=epochs, imgsz=imgsz, extra={**short_run, **recipe.extra})
    if profile == "test":
        return replace(recipe, epochs=TEST_EPOCHS, imgsz=TEST_IMGSZ)
    raise TrainingError(f"unknown training profile {profile!r}; known: {list(PROFILES)}")


def _demo_size(device: str) -> DemoSize:
    return DEMO_SIZES["cpu" if device == "cpu" else "cuda"]


def demo_samples(recipe: TrainRecipe, device: str) -> int:
    """Training samples a finetune sees in the demo profile: several epochs of a small set, or
    one epoch of a fixed sample of a larger one (the training view draws it)."""
    return round(_demo_size(device).sample_budget * recipe.demo_weight)


def evaluation_imgsz(recipe: TrainRecipe, longest_side: int) -> int:
    """The image size whole images are evaluated at: the scale the model trained at.

    A model trained on ``tile``-pixel tiles at ``imgsz`` saw people at ``imgsz / tile`` of their
    size, so whole frames are evaluated at ``longest_side * imgsz / tile`` (a multiple of 32).
    Images the recipe does not tile (no longer than ``tile_over``) trained whole at ``imgsz``.
    """
    if not recipe.tile or longest_side <= max(recipe.tile, recipe.tile_over):
        return recipe.imgsz
    return 32 * math.ceil(recipe.imgsz * longest_side / recipe.tile / 32)


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
    recipe_args = {k: v for k, v in recipe.as_dict().items() if k not in _NOT_TRAIN_ARGS}
    return {
        **recipe.extra,
        **recipe_args,
        "data": str(data_yaml),
        "model": str(model),
        "device": device,
        "workers": workers,
        "project": str(project),
        "name": name,
        "exist_ok": True,  # a retried run reuses its folder instead of creating name2, name3, ...
        "amp": bool(amp) and device != "cpu",  # mixed precision is a GPU feature
        "cache": cache,
        "plots": False,  # ultralytics' plots download a font; summarize_run draws our own
        "val": True,
        "seed": SEED,
        "deterministic": True,
    }


@dataclass(frozen=True)
class TrainJob:
    """One training run, as the Dagster asset hands it to the child process (``context.extras``)."""

    recipe: TrainRecipe  # as written; the child sizes it with for_profile
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


class RunState(Enum):
    FRESH = "fresh"
    UNFINISHED = "unfinished"  # resume from weights/last.pt
    FINISHED = "finished"  # only the summary is left to do


JOB_RECORD = "job.json"


def run_state(job: TrainJob) -> tuple[RunState, str]:
    """What the job's run_dir holds from an earlier attempt, and a sentence saying so.

    An unreadable ``last.pt`` (killed while writing it) means starting over. Weights of another
    job in the folder are an error: resuming or reusing them would report the wrong model.
    """
    run_dir = Path(job.run_dir)
    last = run_dir / "weights" / "last.pt"
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


@dataclass(frozen=True)
class TrainSummary:
    """A finished run: best.pt validated once, per-epoch history, pictures and hashes."""

    run_dir: Path
    device: str
    recipe: dict[str, Any]  # as trained: sized by the profile
    imgsz: int
    epochs: int
    eval_data: str  # the data.yaml whose val split the metrics below are on
    eval_imgsz: int  # whole images are scored at the scale the model trained at
    best_epoch: int  # 1-based, the epoch saved as best.pt
    precision: float
    recall: float
    map50: float
    map50_95: float
    train_seconds: float
    per_class: list[dict[str, Any]]  # class, images, instances, precision, recall, map50, map50_95
    confusion: list[list[int]]  # [predicted][true] at conf > CONFUSION_CONF; background last
    history: list[dict[str, float]]  # results.csv, one dict per epoch
    best_pt: Path
    last_pt: Path
    best_sha256: str
    last_sha256: str
    curves_png: Path
    confusion_png: Path

    def as_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


METRIC_COLUMNS = {
    "precision": "metrics/precision(B)",
    "recall": "metrics/recall(B)",
    "map50": "metrics/mAP50(B)",
    "map50_95": "metrics/mAP50-95(B)",
}
CONFUSION_CONF = 0.25  # ultralytics' predict default: boxes below it are not detections to a user


def read_results(csv: Path) -> pd.DataFrame:
    """results.csv, one row per epoch: the last row of an epoch that a resume repeated."""
    if not csv.is_file():
        raise TrainingError(f"{csv} does not exist: the run did not finish a single epoch")
    table = pd.read_csv(csv)
    table.columns = [c.strip() for c in table.columns]
    missing = sorted(set(METRIC_COLUMNS.values()) - set(table.columns))
    if missing or table.empty:
        raise TrainingError(f"{csv} lacks rows or columns {missing}; was it written by ultralytics 8.4?")
    return table.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)


def _train_seconds(times: pd.Series) -> float:
    # 'time' counts from the start of each attempt; a resume starts it again
    restarts = times.diff().fillna(0) < 0
    segment_ends = times[restarts.shift(-1, fill_value=True)]
    return float(segment_ends.sum())


def _nullable(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


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


def validate_checkpoint(checkpoint: Path, data_yaml: Path, imgsz: int, device: str, save_dir: Path, threads: int = 0):
    """ultralytics' DetMetrics of one checkpoint on the dataset's val split, confusion matrix filled."""
    import torch
    from ultralytics import YOLO
    from ultralytics.models.yolo.detect import DetectionValidator
    from ultralytics.utils.metrics import ConfusionMatrix

    class ConfusionAtThreshold(ConfusionMatrix):
        # the validator passes its mAP threshold (0.001), which counts thousands of junk boxes as FP
        def process_batch(self, detections, batch, conf=CONFUSION_CONF, iou_thres=0.45):
            super().process_batch(detections, batch, conf=CONFUSION_CONF, iou_thres=iou_thres)

    class Validator(DetectionValidator):
        def init_metrics(self, model):
            super().init_metrics(model)
            self.confusion_matrix = ConfusionAtThreshold(names=model.names)
            torch.set_num_threads(cpu_threads(threads))  # after ultralytics' select_device set its own

        # plots=True fills the confusion matrix; these two draw image mosaics with a downloaded font
        def plot_val_samples(self, batch, ni):
            pass

        def plot_predictions(self, batch, preds, ni):
            pass

    return YOLO(checkpoint).val(
        validator=Validator, data=str(data_yaml), imgsz=imgsz, device=device, plots=True,
        project=str(save_dir.parent), name=save_dir.name, exist_ok=True, verbose=False,
    )


def summarize_run(
    run_dir: Path, classes: list[str], *, recipe: TrainRecipe, eval_yaml: Path, eval_source: str, eval_imgsz: int,
    device: str, threads: int = 0,
) -> TrainSummary:
    """Metrics, pictures and hashes of the training run in ``run_dir``; best.pt scored on ``eval_yaml``'s val."""
    run_dir = Path(run_dir)
    best, last = run_dir / "weights" / "best.pt", run_dir / "weights" / "last.pt"
    for checkpoint in (best, last):
        if not checkpoint.is_file():
            raise TrainingError(f"{checkpoint} does not exist: the run in {run_dir} did not finish")
    history = read_results(run_dir / "results.csv")
    # ultralytics 8.4 keeps the epoch with the highest mAP50-95 as best.pt (first one on ties)
    best_row = history.loc[history[METRIC_COLUMNS["map50_95"]].idxmax()]
    metrics = validate_checkpoint(best, eval_yaml, eval_imgsz, device, run_dir / "val", threads)
    per_class = []
    positions = {int(cls): position for position, cls in enumerate(metrics.ap_class_index)}
    for index, name in enumerate(classes):
        scores = metrics.class_result(positions[index]) if index in positions else (math.nan,) * 4
        per_class.append({
            "class": name,
            "images": int(metrics.nt_per_image[index]),
            "instances": int(metrics.nt_per_class[index]),
            **{key: _nullable(value) for key, value in zip(METRIC_COLUMNS, scores)},
        })
    confusion = metrics.confusion_matrix.matrix.astype(int)
    curves_png = plot_curves(history, int(best_row["epoch"]), run_dir / "curves.png")
    confusion_png = plot_confusion(confusion, [*classes, "background"], run_dir / "confusion.png")
    precision, recall, map50, map50_95 = (float(v) for v in metrics.mean_results())
    return TrainSummary(
        run_dir=run_dir,
        device=device,
        recipe=recipe.as_dict(),
        imgsz=recipe.imgsz,
        epochs=len(history),
        eval_data=eval_source,
        eval_imgsz=eval_imgsz,
        best_epoch=int(best_row["epoch"]),
        precision=precision,
        recall=recall,
        map50=map50,
        map50_95=map50_95,
        train_seconds=_train_seconds(history["time"]),
        per_class=per_class,
        confusion=confusion.tolist(),
        history=[
            {k: int(v) if k == "epoch" else float(v) for k, v in row.items() if not k.startswith("lr/")}
            for row in history.to_dict("records")
        ],
        best_pt=best,
        last_pt=last,
        best_sha256=file_sha256(best),
        last_sha256=file_sha256(last),
        curves_png=curves_png,
        confusion_png=confusion_png,
    )


def plot_curves(history: pd.DataFrame, best_epoch: int, path: Path) -> Path:
    """Losses (train solid, val dashed) and P/R/mAP per epoch, the best epoch marked."""
    from matplotlib.figure import Figure  # the Agg canvas, no pyplot state; DejaVu font ships with matplotlib
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(11, 4), dpi=100)
    losses, scores = figure.subplots(1, 2)
    epochs = history["epoch"]
    for column in (c for c in history.columns if c.startswith("train/")):
        loss = column.split("/", 1)[1]
        line = losses.plot(epochs, history[column], marker=".", label=f"train {loss}")[0]
        if f"val/{loss}" in history:
            losses.plot(epochs, history[f"val/{loss}"], "--", marker=".", color=line.get_color(), label=f"val {loss}")
    losses.set_title("losses")
    for label, column in zip(("precision", "recall", "mAP50", "mAP50-95"), METRIC_COLUMNS.values()):
        scores.plot(epochs, history[column], marker=".", label=label)
    scores.set_title("validation")
    scores.set_ylim(0, 1)
    for axes in (losses, scores):
        axes.axvline(best_epoch, color="grey", linewidth=0.8, linestyle=":")
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.legend(fontsize=8)
        axes.grid(alpha=0.3)
    figure.suptitle(f"best epoch {best_epoch} (dotted)")
    figure.tight_layout()
    figure.savefig(path)
    return path


def plot_confusion(matrix, labels: list[str], path: Path) -> Path:
    """Counts of predicted (rows) against true (columns) classes, background last."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(1.6 * len(labels) + 2, 1.4 * len(labels) + 1.5), dpi=100)
    axes = figure.subplots()
    image = axes.imshow(matrix, cmap="Blues")
    peak = max(int(max(map(max, matrix))), 1)
    for row, values in enumerate(matrix):
        for column, count in enumerate(values):
            colour = "white" if count > peak / 2 else "black"
            axes.text(column, row, str(int(count)), ha="center", va="center", color=colour)
    axes.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("true")
    axes.set_ylabel("predicted")
    axes.set_title(f"best.pt on the val split, conf > {CONFUSION_CONF}")
    figure.colorbar(image, ax=axes)
    figure.tight_layout()
    figure.savefig(path)
    return path
