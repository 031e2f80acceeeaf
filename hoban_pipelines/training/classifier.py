"""Crop classifiers: the ROI classifier and the detector's second-stage verifier.

A classifier trains on a crop folder (``<split>/<class>/*.jpg``) in the same Pipes child pattern
as the detectors (``training.classifier_child``), and is scored here on a held-out split with
accuracy, per-class precision / recall / F1, the confusion matrix and the misclassified crops.

Choice of model: ultralytics classify built from ``yolov8n-cls.yaml`` (no pretrained weights,
as the team's ResNet-18 had none either), not torchvision's ResNet-18. The reasons:
- one toolchain with the detectors: the same trainer, epoch stream, checkpoint format and
  offline handling, where a ResNet-18 needs its own loop, augmentation and checkpoint code;
- speed: 1.4 M parameters to ResNet-18's 11.7 M, which matters for a verifier that runs on
  every sliced detection (measured in ``gate_sweep``'s verifier rows as ms per frame);
- ultralytics can still train ResNet-18 by name (``model: resnet18``, torchvision's builder
  with ``pretrained: false``) should the team want its old architecture back.

Facts about ultralytics 8.4 relied on (read from its source): a classification dataset is a
folder with ``train`` and ``val`` subfolders of class folders; the class names are the sorted
folder names under ``train`` (every split is aligned to them by name); its eval transform
(``classify_transforms``, which ``classify_crops`` calls) resizes the shorter side to ``imgsz``
and centre-crops, with inputs in [0, 1] RGB and no mean/std normalisation.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from hoban_pipelines.core.lake import file_sha256
from hoban_pipelines.core.pictures import contact_sheet
from hoban_pipelines.core.report import BuildReport, Picture, Table
from hoban_pipelines.training.job import BEST_WEIGHTS, RESULTS_CSV, SUMMARY_FILE, VIEW_DIR
from hoban_pipelines.training.recipes import TrainingError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CLASSIFIER_JOB_FILE = "classifier_job.json"
CONFUSION_PNG = "confusion.png"
MISCLASSIFIED_JPG = "misclassified.jpg"
MISCLASSIFIED_SHOWN = 40
PREDICT_BATCH = 64


@dataclass(frozen=True)
class ClassifierRecipe:
    """How a crop classifier trains; ``demo_epochs`` is what the demo profile runs."""

    model: str = "yolov8n-cls.yaml"
    imgsz: int = 64
    epochs: int = 30
    demo_epochs: int = 10
    batch: int = 32
    patience: int = 10  # ultralytics picks the optimizer and its learning rate (optimizer auto)

    def for_profile(self, profile: str) -> "ClassifierRecipe":
        if profile == "full":
            return self
        if profile == "demo":
            return replace(self, epochs=self.demo_epochs)
        if profile == "test":
            return replace(self, epochs=1, imgsz=32)
        raise TrainingError(f"train profile {profile!r} is not one of full, demo, test")


@dataclass(frozen=True)
class ClassifierJob:
    """One classifier training, as the asset hands it to the child (``context.extras``)."""

    recipe: ClassifierRecipe
    crops: str  # folder of <split>/<class>/ crops
    classes: list[str]  # every class the classifier knows, even one a split lacks
    run_dir: str
    train_split: str = "train"
    eval_split: str = "val"
    profile: str = "full"
    device: str = "cpu"
    workers: int = 0
    threads: int = 0
    seed: int = 0

    def as_extras(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_extras(cls, raw: dict[str, Any]) -> "ClassifierJob":
        known = {f.name for f in fields(cls)}
        if set(raw) - known or "recipe" not in raw:
            raise TrainingError(f"classifier job: keys {sorted(raw)} are not the job's {sorted(known)}")
        recipe = raw["recipe"]
        return cls(**{**raw, "recipe": recipe if isinstance(recipe, ClassifierRecipe) else ClassifierRecipe(**recipe)})

    def reuse_key(self, upstream: dict[str, str]) -> dict[str, Any]:
        """What decides the trained classifier: recipe, profile, splits, classes, upstream versions."""
        return json.loads(json.dumps({
            "recipe": asdict(self.recipe), "profile": self.profile, "classes": self.classes, "seed": self.seed,
            "splits": [self.train_split, self.eval_split], "upstream": upstream,
            "device_kind": "cpu" if self.device == "cpu" else "cuda",
        }))


def split_images(crops: Path, split: str, classes: Sequence[str]) -> list[tuple[Path, int]]:
    """(image, class index) of a split's crops, class by class in ``classes`` order."""
    found = []
    for index, name in enumerate(classes):
        folder = Path(crops) / split / name
        if folder.is_dir():
            found += [(path, index) for path in sorted(folder.iterdir()) if path.suffix.lower() in IMAGE_SUFFIXES]
    return found


def build_classifier_view(job: ClassifierJob, view: Path) -> dict[str, dict[str, int]]:
    """The folder ultralytics trains from: ``train`` and ``val`` with a folder per class (empty
    where a split lacks one, so both name the same classes), hard links to the crops. An error
    naming the folder when a class has no training crop: the classifier could never predict it."""
    crops, view = Path(job.crops), Path(view)
    if view.exists():
        shutil.rmtree(view)
    counts: dict[str, dict[str, int]] = {}
    for split, target in ((job.train_split, "train"), (job.eval_split, "val")):
        images = split_images(crops, split, job.classes)
        per_class = {name: 0 for name in job.classes}
        for name in job.classes:
            (view / target / name).mkdir(parents=True, exist_ok=True)
        for path, index in images:
            destination = view / target / job.classes[index] / path.name
            try:
                os.link(path, destination)
            except OSError:  # another file system
                shutil.copy2(path, destination)
            per_class[job.classes[index]] += 1
        counts[split] = per_class
    missing = [name for name, count in counts[job.train_split].items() if not count]
    if missing:
        raise TrainingError(f"{crops / job.train_split}: no training crops of class(es) {missing}; add crops of every "
                            f"class {job.classes} or leave the class out")
    if not sum(counts[job.eval_split].values()):
        raise TrainingError(f"{crops / job.eval_split}: no crops to score the classifier on")
    return counts


@dataclass
class Classifier:
    """A trained classifier ready to score crops: the torch module, its class names and input size."""

    model: Any
    classes: list[str]
    imgsz: int
    device: str = "cpu"


def load_classifier(weights: Path, device: str = "cpu") -> Classifier:
    from ultralytics.nn.tasks import load_checkpoint

    weights = Path(weights)
    try:
        model, checkpoint = load_checkpoint(weights, device="cpu")
    except Exception as exc:  # any reason it cannot load: say which file
        raise TrainingError(f"classifier {weights} cannot be loaded: {exc}") from exc
    if getattr(model, "task", None) != "classify":
        raise TrainingError(f"{weights} is a {getattr(model, 'task', 'unknown')!r} model, not a classifier")
    imgsz = checkpoint.get("train_args", {}).get("imgsz", 224)
    model = model.float().eval().to("cpu" if device == "cpu" else f"cuda:{device}" if device.isdigit() else device)
    return Classifier(model, [str(model.names[i]) for i in sorted(model.names)], int(imgsz), device)


def _eval_transform(imgsz: int):
    """ultralytics' own classify eval transform (PIL resize of the shorter side with antialiasing,
    centre crop, RGB in [0, 1]): a hand-made copy drifts by a pixel on fractional sizes and
    aliases when it shrinks, which the classifier never saw in training."""
    from ultralytics.data.augment import classify_transforms

    return classify_transforms(imgsz)


def classify_crops(classifier: Classifier, crops: Sequence[np.ndarray], batch: int = PREDICT_BATCH) -> np.ndarray:
    """Class probabilities (N x classes) of BGR crops."""
    import torch
    from PIL import Image

    if not len(crops):
        return np.zeros((0, len(classifier.classes)), np.float32)
    transform = _eval_transform(classifier.imgsz)
    device = next(classifier.model.parameters()).device
    out = []
    with torch.inference_mode():
        for start in range(0, len(crops), batch):
            tensor = torch.stack([transform(Image.fromarray(np.ascontiguousarray(c[..., ::-1])))
                                  for c in crops[start:start + batch]])
            logits = classifier.model(tensor.to(device))
            logits = logits[0] if isinstance(logits, (list, tuple)) else logits
            # ultralytics' classify head returns softmax probabilities in eval mode
            out.append(logits.float().cpu().numpy())
    return np.concatenate(out)


def classification_scores(truth: np.ndarray, predicted: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class precision / recall / F1 / support and the confusion matrix (rows: true)."""
    n = len(classes)
    confusion = np.zeros((n, n), int)
    np.add.at(confusion, (truth, predicted), 1)
    per_class = []
    for index, name in enumerate(classes):
        tp = confusion[index, index]
        predicted_as, actual = confusion[:, index].sum(), confusion[index].sum()
        precision = float(tp / predicted_as) if predicted_as else 0.0
        recall = float(tp / actual) if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class.append({"class": name, "support": int(actual), "precision": round(precision, 4),
                          "recall": round(recall, 4), "f1": round(f1, 4)})
    accuracy = float(np.trace(confusion) / confusion.sum()) if confusion.sum() else 0.0
    return {"accuracy": round(accuracy, 4), "per_class": per_class, "confusion": confusion.tolist()}


def score_classifier(classifier: Classifier, images: list[tuple[Path, int]], classes: Sequence[str]) -> dict[str, Any]:
    """The classifier's scores on labelled crop files (classes in ``classes`` order), with its misclassified crops."""
    crops = [cv2.imread(str(path), cv2.IMREAD_COLOR) for path, _ in images]
    unreadable = [str(path) for (path, _), crop in zip(images, crops) if crop is None]
    if unreadable:
        raise TrainingError(f"crops cannot be decoded: {unreadable[:5]}")
    order = [classifier.classes.index(name) if name in classifier.classes else -1 for name in classes]
    if -1 in order:
        raise TrainingError(f"the classifier knows {classifier.classes}, not every class of {list(classes)}")
    probabilities = classify_crops(classifier, crops)[:, order]
    truth = np.array([index for _, index in images])
    predicted = probabilities.argmax(axis=1)
    scores = classification_scores(truth, predicted, classes)
    wrong = np.flatnonzero(predicted != truth)
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")]  # surest mistakes first
    scores["misclassified"] = [{"path": str(images[i][0]), "true": classes[truth[i]], "predicted": classes[predicted[i]],
                                "score": round(float(probabilities[i, predicted[i]]), 4)} for i in wrong]
    return scores


def plot_confusion(matrix: Sequence[Sequence[int]], classes: Sequence[str], path: Path, title: str) -> Path:
    """Counts of true (rows) against predicted (columns) classes."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(1.4 * len(classes) + 2.5, 1.2 * len(classes) + 1.8), dpi=100)
    axes = figure.subplots()
    axes.imshow(matrix, cmap="Blues")
    peak = max(max(max(row) for row in matrix), 1)
    for row, values in enumerate(matrix):
        for column, count in enumerate(values):
            axes.text(column, row, str(int(count)), ha="center", va="center",
                      color="white" if count > peak / 2 else "black")
    axes.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path)
    return path


def write_classifier_version(run_dir: Path, out_dir: Path, job: ClassifierJob) -> BuildReport:
    """A finished classifier run published into ``out_dir``: weights, epochs, scores, the job,
    the confusion matrix and a sheet of misclassified crops; named by best.pt's sha256."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not (run_dir / BEST_WEIGHTS).is_file() or not (run_dir / SUMMARY_FILE).is_file():
        raise TrainingError(f"{run_dir} holds no finished classifier run ({BEST_WEIGHTS}, {SUMMARY_FILE})")
    for relative in (BEST_WEIGHTS, RESULTS_CSV, SUMMARY_FILE):
        if (run_dir / relative).is_file():
            (out_dir / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(run_dir / relative, out_dir / relative)
    (out_dir / CLASSIFIER_JOB_FILE).write_text(json.dumps(job.as_extras(), indent=2, sort_keys=True))
    summary = json.loads((out_dir / SUMMARY_FILE).read_text())
    plot_confusion(summary["confusion"], job.classes, out_dir / CONFUSION_PNG,
                   f"{job.eval_split} split: {summary['images']} crops, accuracy {summary['accuracy']:.3f}")
    wrong = summary["misclassified"][:MISCLASSIFIED_SHOWN]
    contact_sheet([Path(w["path"]) for w in wrong], out_dir / MISCLASSIFIED_JPG,
                  captions=[f"{w['true'][:8]}>{w['predicted'][:8]} {w['score']:.2f}" for w in wrong])
    report = classifier_report(out_dir)
    report.digest = file_sha256(out_dir / BEST_WEIGHTS)
    return report


def classifier_report(version: Path) -> BuildReport:
    """What a classifier version shows: ``val/accuracy`` and per-class figures as floats, the
    confusion matrix, the misclassified crops."""
    summary = json.loads((Path(version) / SUMMARY_FILE).read_text())
    details: dict[str, Any] = {"val/accuracy": float(summary["accuracy"])}
    for row in summary["per_class"]:
        for metric in ("precision", "recall", "f1"):
            details[f"val/{metric}/{row['class']}"] = float(row[metric])
    details.update({
        "per_class": Table(summary["per_class"], ["class", "support", "precision", "recall", "f1"]),
        # rows: the true class; the column is named so that no class (the ROI's "true") can clash with it
        "confusion_matrix": Table([{"true class": name, **{f"predicted {c}": n for c, n in zip(summary["classes"], row)}}
                                   for name, row in zip(summary["classes"], summary["confusion"])],
                                  ["true class", *(f"predicted {c}" for c in summary["classes"])]),
        "scored_on": f"{summary['eval_split']} split, {summary['images']} crops",
        "train_crops": summary["train_counts"],
        "misclassified_count": len(summary["misclassified"]),
        "epochs": summary["epochs"], "imgsz": summary["imgsz"], "model": summary["model"],
        "train_seconds": round(summary["train_seconds"], 1), "device": summary["device"],
        "best_pt": Path(BEST_WEIGHTS),
        "confusion": Picture(CONFUSION_PNG, "confusion matrix (rows true, columns predicted)"),
        "misclassified": Picture(MISCLASSIFIED_JPG, "misclassified crops, surest first (true>predicted score)"),
    })
    return BuildReport(counts={"eval_crops": summary["images"]}, details=details)


def train_classifier(job: ClassifierJob, log, on_epoch=None) -> dict[str, Any]:
    """Train ``job`` with ultralytics classify, score best.pt on the eval split and write
    ``run_dir/summary.json``; the summary. ``on_epoch`` gets each epoch's figures."""
    import time

    import torch
    import ultralytics.engine.trainer
    from ultralytics import YOLO

    from hoban_pipelines.training.job import cpu_threads, offline_amp_check

    recipe = job.recipe.for_profile(job.profile)
    run_dir = Path(job.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    view = run_dir / VIEW_DIR
    counts = build_classifier_view(job, view)
    log(f"classifier view {view}: train {counts[job.train_split]}, scored on {job.eval_split} "
        f"{counts[job.eval_split]}; {recipe.model} at imgsz {recipe.imgsz}, {recipe.epochs} epochs ({job.profile})")
    threads = cpu_threads(job.threads)
    ultralytics.engine.trainer.check_amp = offline_amp_check  # ultralytics' own check downloads weights
    model = YOLO(recipe.model, task="classify")
    model.add_callback("on_pretrain_routine_start", lambda trainer: torch.set_num_threads(threads))

    def epoch_end(trainer) -> None:
        if trainer.epoch >= trainer.epochs:  # ultralytics calls it once more after validating best.pt
            return
        metrics = trainer.metrics or {}
        figures = {"epoch": trainer.epoch + 1, "epochs": trainer.epochs,
                   "train/loss": round(sum(float(v) for v in (trainer.tloss or {}).values()), 5),
                   "val/accuracy": round(float(metrics.get("metrics/accuracy_top1", 0.0)), 5)}
        log(f"epoch {figures['epoch']}/{figures['epochs']}: loss {figures['train/loss']:.3f} "
            f"accuracy {figures['val/accuracy']:.3f}")
        if on_epoch:
            on_epoch(figures)

    model.add_callback("on_fit_epoch_end", epoch_end)
    started = time.perf_counter()
    model.train(data=str(view), epochs=recipe.epochs, imgsz=recipe.imgsz, batch=recipe.batch,
                patience=recipe.patience, device=job.device, workers=job.workers,
                project=str(run_dir.parent), name=run_dir.name, exist_ok=True, pretrained=False, plots=False,
                seed=job.seed, deterministic=True, amp=job.device != "cpu", val=True, verbose=False)
    seconds = time.perf_counter() - started
    classifier = load_classifier(run_dir / BEST_WEIGHTS, job.device)
    scores = score_classifier(classifier, split_images(Path(job.crops), job.eval_split, job.classes), job.classes)
    summary = {**scores, "classes": list(job.classes), "images": int(sum(counts[job.eval_split].values())),
               "eval_split": job.eval_split, "train_counts": counts[job.train_split], "epochs": recipe.epochs,
               "imgsz": recipe.imgsz, "model": recipe.model, "train_seconds": seconds, "device": job.device}
    (run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    shutil.rmtree(view, ignore_errors=True)
    return summary
