"""Crop classifiers (``training.classifier``): the scores on a hand-counted example, the eval
probabilities against ultralytics' own predictor, the folder ultralytics trains from, and one real tiny run
(yolov8n-cls.yaml, one epoch at 32 px) on synthetic crops of three easily told classes, published
as a version and loaded back to score crops. Everything runs offline and on the CPU."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from hoban_pipelines.core.lake import file_sha256
from hoban_pipelines.core.report import Picture, Table
from hoban_pipelines.training.classifier import (
    CLASSIFIER_JOB_FILE,
    CONFUSION_PNG,
    MISCLASSIFIED_JPG,
    ClassifierJob,
    ClassifierRecipe,
    build_classifier_view,
    classification_scores,
    classifier_report,
    classify_crops,
    load_classifier,
    split_images,
    train_classifier,
    write_classifier_version,
)
from hoban_pipelines.training.job import BEST_WEIGHTS, RESULTS_CSV, SUMMARY_FILE, VIEW_DIR
from hoban_pipelines.training.recipes import TrainingError

# requests and curl honour these: any download attempt during the run fails at once
NO_NETWORK = {key: "http://127.0.0.1:9" for key in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY")}
# deliberately not in sorted order: ultralytics names its classes by sorted folder name, and the
# scores must still come out in the job's order
CLASSES = ["striped", "bright", "dark"]
TRAIN_PER_CLASS, VAL_PER_CLASS = 12, 4


def synthetic_crop(kind: str, rng: np.random.Generator, size: tuple[int, int] = (40, 40)) -> np.ndarray:
    """A BGR crop (height, width) of one of three classes no classifier can confuse for long."""
    height, width = size
    if kind == "bright":
        image = np.full((height, width, 3), 220, np.float64)
    elif kind == "dark":
        image = np.full((height, width, 3), 30, np.float64)
    else:  # vertical black and white stripes, 4 px wide
        image = np.where((np.arange(width) // 4) % 2, 230.0, 20.0)[None, :, None].repeat(height, 0).repeat(3, 2)
    return (image + rng.normal(0, 8, image.shape)).clip(0, 255).astype(np.uint8)


def write_crops(root: Path, split: str, counts: dict[str, int], seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    written = []
    for name, count in counts.items():
        folder = root / split / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            path = folder / f"{name}_{index:03d}.jpg"
            cv2.imwrite(str(path), synthetic_crop(name, rng))
            written.append(path)
    return written


def ultralytics_downloads() -> set[str]:
    """Files in the folders ultralytics downloads fonts and weights into."""
    from ultralytics.utils import USER_CONFIG_DIR, WEIGHTS_DIR

    return {str(p) for folder in (USER_CONFIG_DIR, WEIGHTS_DIR) if folder.is_dir() for p in folder.rglob("*")}


# --- recipe and job ------------------------------------------------------------------------


def test_recipe_profiles_shrink_the_run_and_reject_unknown_profiles():
    recipe = ClassifierRecipe()
    assert recipe.for_profile("full") is recipe
    assert recipe.for_profile("demo").epochs == recipe.demo_epochs
    assert recipe.for_profile("demo").imgsz == recipe.imgsz
    test = recipe.for_profile("test")
    assert (test.epochs, test.imgsz, test.model, test.batch) == (1, 32, recipe.model, recipe.batch)
    with pytest.raises(TrainingError, match="train profile 'huge' is not one of full, demo, test"):
        recipe.for_profile("huge")


def test_job_round_trips_through_extras_and_rejects_unknown_keys(tmp_path):
    job = ClassifierJob(recipe=ClassifierRecipe(imgsz=48), crops=str(tmp_path / "crops"), classes=CLASSES,
                        run_dir=str(tmp_path / "run"), profile="test", seed=3)
    extras = job.as_extras()
    assert json.loads(json.dumps(extras)) == extras  # what Dagster Pipes carries: plain JSON
    assert ClassifierJob.from_extras(extras) == job
    with pytest.raises(TrainingError, match="classifier job: keys"):
        ClassifierJob.from_extras({**extras, "lr0": 0.1})
    with pytest.raises(TrainingError, match="classifier job: keys"):
        ClassifierJob.from_extras({key: value for key, value in extras.items() if key != "recipe"})
    # the reuse key follows what decides the trained model, and nothing else
    assert job.reuse_key({"crops": "v1"}) == ClassifierJob.from_extras(extras).reuse_key({"crops": "v1"})
    assert job.reuse_key({"crops": "v1"}) != job.reuse_key({"crops": "v2"})
    assert job.reuse_key({}) != ClassifierJob.from_extras({**extras, "seed": 4}).reuse_key({})


# --- scores --------------------------------------------------------------------------------


def test_classification_scores_on_a_hand_counted_example():
    """Seven crops of classes a, b, c (d has none); c is never predicted. Counted by hand:

    true a: predicted a, a, b   -> row [2, 1, 0, 0]
    true b: predicted b, a      -> row [1, 1, 0, 0]
    true c: predicted a, b      -> row [1, 1, 0, 0]
    """
    classes = ["a", "b", "c", "d"]
    truth = np.array([0, 0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 0, 1, 1, 0, 0, 1])
    scores = classification_scores(truth, predicted, classes)

    assert scores["confusion"] == [[2, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]]  # rows: true class
    assert scores["accuracy"] == round(3 / 7, 4) == 0.4286
    rows = {row["class"]: row for row in scores["per_class"]}
    assert [row["class"] for row in scores["per_class"]] == classes
    # a: 2 of the 4 crops called a are a; 2 of the 3 a crops found
    assert (rows["a"]["precision"], rows["a"]["recall"], rows["a"]["f1"], rows["a"]["support"]) == (0.5, 0.6667, 0.5714, 3)
    # b: 1 of 3, 1 of 2; F1 = 2 * (1/3) * (1/2) / (5/6)
    assert (rows["b"]["precision"], rows["b"]["recall"], rows["b"]["f1"], rows["b"]["support"]) == (0.3333, 0.5, 0.4, 2)
    # c is never predicted: precision 0 (not NaN, no division warning), recall 0 of 2
    assert (rows["c"]["precision"], rows["c"]["recall"], rows["c"]["f1"], rows["c"]["support"]) == (0.0, 0.0, 0.0, 2)
    # d has no crop at all: every figure 0
    assert (rows["d"]["precision"], rows["d"]["recall"], rows["d"]["f1"], rows["d"]["support"]) == (0.0, 0.0, 0.0, 0)

    # plain Python numbers, so the summary is JSON and the report's figures are floats
    assert type(scores["accuracy"]) is float
    for row in scores["per_class"]:
        assert type(row["support"]) is int
        for metric in ("precision", "recall", "f1"):
            assert type(row[metric]) is float and math.isfinite(row[metric]) and 0.0 <= row[metric] <= 1.0
    assert all(type(count) is int for line in scores["confusion"] for count in line)
    assert json.loads(json.dumps(scores)) == scores


def test_classification_scores_of_perfect_and_of_all_wrong_predictions():
    classes = ["x", "y"]
    truth = np.array([0, 1, 1, 0, 1])
    perfect = classification_scores(truth, truth, classes)
    assert perfect["accuracy"] == 1.0 and perfect["confusion"] == [[2, 0], [0, 3]]
    assert all(row["precision"] == row["recall"] == row["f1"] == 1.0 for row in perfect["per_class"])
    wrong = classification_scores(truth, 1 - truth, classes)
    assert wrong["accuracy"] == 0.0 and wrong["confusion"] == [[0, 2], [3, 0]]
    assert all(row["precision"] == row["recall"] == row["f1"] == 0.0 for row in wrong["per_class"])


# --- the training view ---------------------------------------------------------------------


def make_job(crops: Path, run_dir: Path, classes=CLASSES, **changes) -> ClassifierJob:
    return ClassifierJob(recipe=ClassifierRecipe(), crops=str(crops), classes=list(classes), run_dir=str(run_dir),
                         profile="test", device="cpu", workers=0, **changes)


def test_split_images_lists_a_splits_crops_class_by_class(tmp_path):
    crops = tmp_path / "crops"
    write_crops(crops, "train", {"dark": 2, "striped": 1})
    (crops / "train" / "dark" / "notes.txt").write_text("not a crop")
    cv2.imwrite(str(crops / "train" / "dark" / "upper.PNG"), np.zeros((8, 8, 3), np.uint8))
    found = split_images(crops, "train", CLASSES)
    assert [(path.parent.name, path.name, index) for path, index in found] == [
        ("striped", "striped_000.jpg", 0), ("dark", "dark_000.jpg", 2), ("dark", "dark_001.jpg", 2),
        ("dark", "upper.PNG", 2)]
    assert split_images(crops, "val", CLASSES) == []  # a split with no folder at all


def test_classifier_view_hard_links_every_crop_into_train_and_val_folders_per_class(tmp_path):
    crops = tmp_path / "crops"
    # the job's split names are its own; the view always calls them train and val
    train = write_crops(crops, "fit", {"striped": 3, "bright": 2, "dark": 1})
    held = write_crops(crops, "held", {"striped": 1, "dark": 2}, seed=1)  # no bright crop to score on
    write_crops(crops, "test", {"dark": 5}, seed=2)  # a split the job does not name: left out
    view = tmp_path / "run" / VIEW_DIR
    (view / "train" / "stale").mkdir(parents=True)  # a view left by an earlier attempt is rebuilt
    job = make_job(crops, tmp_path / "run", train_split="fit", eval_split="held")

    counts = build_classifier_view(job, view)

    assert counts == {"fit": {"striped": 3, "bright": 2, "dark": 1}, "held": {"striped": 1, "bright": 0, "dark": 2}}
    assert sorted(p.name for p in view.iterdir()) == ["train", "val"]
    for target in ("train", "val"):  # both name every class, so ultralytics aligns them by name
        assert sorted(p.name for p in (view / target).iterdir()) == sorted(CLASSES)
    assert list((view / "val" / "bright").iterdir()) == []
    for target, sources in (("train", train), ("val", held)):
        linked = sorted((view / target).rglob("*.jpg"))
        assert len(linked) == len(sources)
        for source in sources:
            copy = view / target / source.parent.name / source.name
            assert copy.stat().st_ino == source.stat().st_ino and copy.stat().st_nlink >= 2  # a link, not a copy
    assert sum(1 for _ in crops.rglob("*.jpg")) == len(train) + len(held) + 5  # the crops are untouched


def test_classifier_view_refuses_a_class_without_training_crops(tmp_path):
    crops = tmp_path / "crops"
    write_crops(crops, "train", {"striped": 2, "dark": 2})
    write_crops(crops, "val", {"striped": 1, "bright": 1, "dark": 1})
    with pytest.raises(TrainingError, match=r"no training crops of class\(es\) \['bright'\]") as error:
        build_classifier_view(make_job(crops, tmp_path / "run"), tmp_path / "view")
    assert str(crops / "train") in str(error.value)


def test_classifier_view_refuses_an_empty_eval_split(tmp_path):
    crops = tmp_path / "crops"
    write_crops(crops, "train", {name: 2 for name in CLASSES})
    (crops / "val" / "dark").mkdir(parents=True)  # a class folder, but no crop in it
    with pytest.raises(TrainingError, match="no crops to score the classifier on") as error:
        build_classifier_view(make_job(crops, tmp_path / "run"), tmp_path / "view")
    assert str(crops / "val") in str(error.value)


def test_load_classifier_names_a_file_it_cannot_load(tmp_path):
    broken = tmp_path / "best.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match="cannot be loaded") as error:
        load_classifier(broken)
    assert str(broken) in str(error.value)


def test_write_classifier_version_refuses_an_unfinished_run(tmp_path):
    (tmp_path / "run" / "weights").mkdir(parents=True)
    with pytest.raises(TrainingError, match="holds no finished classifier run"):
        write_classifier_version(tmp_path / "run", tmp_path / "out", make_job(tmp_path, tmp_path / "run"))


# --- one real tiny run ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished run at the test profile: (job, summary, epoch figures, log lines, version dir, report)."""
    work = tmp_path_factory.mktemp("classifier")
    crops = work / "crops"
    write_crops(crops, "train", {name: TRAIN_PER_CLASS for name in CLASSES}, seed=0)
    write_crops(crops, "val", {name: VAL_PER_CLASS for name in CLASSES}, seed=1)
    job = make_job(crops, work / "run", threads=2)
    epochs, lines = [], []
    before = ultralytics_downloads()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in NO_NETWORK.items():
            patch.setenv(key, value)
        patch.setenv("YOLO_OFFLINE", "1")
        summary = train_classifier(job, lines.append, on_epoch=epochs.append)
    assert ultralytics_downloads() <= before, "training fetched files into ultralytics' folders"
    version = work / "version"
    version.mkdir()
    report = write_classifier_version(work / "run", version, job)
    return job, summary, epochs, lines, version, report


def test_tiny_run_trains_one_epoch_and_scores_the_eval_split(trained):
    job, summary, epochs, lines, version, report = trained
    assert (summary["epochs"], summary["imgsz"], summary["model"]) == (1, 32, "yolov8n-cls.yaml")
    assert summary["classes"] == CLASSES and summary["eval_split"] == "val"
    assert summary["images"] == VAL_PER_CLASS * len(CLASSES)
    assert summary["train_counts"] == {name: TRAIN_PER_CLASS for name in CLASSES}
    assert [figures["epoch"] for figures in epochs] == [1] and epochs[0]["epochs"] == 1
    assert 0.0 <= epochs[0]["val/accuracy"] <= 1.0 and math.isfinite(epochs[0]["train/loss"])
    assert any("epoch 1/1" in line for line in lines)
    confusion = np.array(summary["confusion"])
    assert confusion.shape == (3, 3) and confusion.sum() == summary["images"]
    assert confusion.sum(axis=1).tolist() == [VAL_PER_CLASS] * 3  # rows: true class, in the job's order
    assert summary["accuracy"] == round(np.trace(confusion) / confusion.sum(), 4)
    assert len(summary["misclassified"]) == confusion.sum() - np.trace(confusion)
    assert not (Path(job.run_dir) / VIEW_DIR).exists()  # the view of hard links is removed after the run


def test_tiny_run_version_holds_its_files_and_its_report_shows_floats(trained):
    job, summary, epochs, lines, version, report = trained
    for relative in (BEST_WEIGHTS, RESULTS_CSV, SUMMARY_FILE, CLASSIFIER_JOB_FILE, CONFUSION_PNG, MISCLASSIFIED_JPG):
        assert (version / relative).is_file(), relative
    assert cv2.imread(str(version / CONFUSION_PNG)) is not None
    assert cv2.imread(str(version / MISCLASSIFIED_JPG)) is not None
    assert ClassifierJob.from_extras(json.loads((version / CLASSIFIER_JOB_FILE).read_text())) == job
    assert report.digest == file_sha256(version / BEST_WEIGHTS)
    assert report.counts == {"eval_crops": VAL_PER_CLASS * len(CLASSES)}

    details = report.details
    assert type(details["val/accuracy"]) is float and 0.0 <= details["val/accuracy"] <= 1.0
    assert details["val/accuracy"] == summary["accuracy"]
    for name in CLASSES:
        for metric in ("precision", "recall", "f1"):
            value = details[f"val/{metric}/{name}"]
            assert type(value) is float and 0.0 <= value <= 1.0, (metric, name, value)
    assert isinstance(details["per_class"], Table) and isinstance(details["confusion_matrix"], Table)
    assert isinstance(details["confusion"], Picture) and details["confusion"].path == CONFUSION_PNG
    assert details["misclassified_count"] == len(summary["misclassified"])
    assert details["best_pt"] == Path(BEST_WEIGHTS)
    # the report is rebuilt the same from the version folder alone
    again = classifier_report(version)
    assert {key: value for key, value in again.details.items() if key.startswith("val/")} == \
        {key: value for key, value in details.items() if key.startswith("val/")}


def test_loaded_classifier_gives_probabilities_over_its_classes(trained):
    job, summary, epochs, lines, version, report = trained
    classifier = load_classifier(version / BEST_WEIGHTS)
    assert classifier.classes == sorted(CLASSES)  # ultralytics' order: sorted folder names
    assert classifier.imgsz == 32
    rng = np.random.default_rng(9)
    crops = [synthetic_crop(name, rng, size) for name, size in
             (("dark", (40, 40)), ("bright", (30, 55)), ("striped", (70, 35)), ("dark", (16, 16)), ("bright", (90, 90)))]
    probabilities = classify_crops(classifier, crops)
    assert probabilities.shape == (len(crops), len(CLASSES))
    assert np.all(probabilities >= 0) and np.all(probabilities <= 1)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(classify_crops(classifier, crops, batch=2), probabilities, atol=1e-5)  # batching
    assert classify_crops(classifier, []).shape == (0, len(CLASSES))


def test_classify_crops_agrees_with_ultralytics_predict_on_crops_of_any_shape(trained):
    """Our batched scoring and ultralytics' own predictor (its classify eval transform) give the
    same probabilities, whatever the crop's shape and whether it is shrunk or enlarged."""
    from ultralytics import YOLO

    job, summary, epochs, lines, version, report = trained
    classifier = load_classifier(version / BEST_WEIGHTS)
    rng = np.random.default_rng(3)
    crops = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for size in ((45, 61), (61, 45), (24, 41), (120, 96), (9, 70))]
    ours = classify_crops(classifier, crops)
    theirs = [YOLO(version / BEST_WEIGHTS, task="classify").predict(crop, imgsz=classifier.imgsz, verbose=False)[0]
              for crop in crops]
    np.testing.assert_allclose(ours, np.stack([r.probs.data.cpu().numpy() for r in theirs]), atol=1e-4)


def test_summary_scores_are_the_loaded_classifiers_own_predictions(trained):
    """The published confusion matrix is what the weights predict on the val crops, mapped from
    ultralytics' sorted class order back to the job's."""
    job, summary, epochs, lines, version, report = trained
    classifier = load_classifier(version / BEST_WEIGHTS)
    images = split_images(Path(job.crops), "val", job.classes)
    probabilities = classify_crops(classifier, [cv2.imread(str(path)) for path, _ in images])
    predicted = [job.classes.index(classifier.classes[i]) for i in probabilities.argmax(axis=1)]
    truth = [index for _, index in images]
    confusion = np.zeros((3, 3), int)
    np.add.at(confusion, (truth, predicted), 1)
    assert confusion.tolist() == summary["confusion"]
    wrong = {(Path(w["path"]).name, w["true"], w["predicted"]) for w in summary["misclassified"]}
    assert wrong == {(path.name, job.classes[t], job.classes[p])
                     for (path, _), t, p in zip(images, truth, predicted) if t != p}
    assert all(0.0 <= w["score"] <= 1.0 for w in summary["misclassified"])
