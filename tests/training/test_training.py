"""Training: recipes, the checks that fail before ultralytics starts, and real tiny runs of the
child process without Dagster (one epoch of yolov8n.yaml at 64 px), a killed run resuming,
and a checkpoint re-headed to other classes. Every run is offline: the child gets a proxy
that refuses connections, and no file may appear in ultralytics' font or weights folders."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from hoban_pipelines.core.lake import file_sha256
from hoban_pipelines.training.child import train
from hoban_pipelines.training.report import build_checkpoint
from hoban_pipelines.training.job import (
    ARTIFACTS,
    BEST_WEIGHTS,
    CONFUSION_PNG,
    CURVES_PNG,
    EVAL_DIR,
    JOB_RECORD,
    LAST_WEIGHTS,
    RECIPE_FILE,
    RESULTS_CSV,
    SUMMARY_FILE,
    VIEW_DIR,
    CheckpointInfo,
    RunState,
    TrainJob,
    check_classes,
    load_checkpoint,
    offline_amp_check,
    record_job,
    remove_views,
    resolve_device,
    run_state,
    write_base_version,
    write_checkpoint_version,
)
from hoban_pipelines.training.profiles import DEMO_SIZES, demo_samples, evaluation_imgsz, for_profile
from hoban_pipelines.training.recipes import RECIPES, TrainingError, TrainRecipe
from hoban_pipelines.training.view import longest_side

CLASSES = ["person_with_helmet", "person_without_helmet"]
# requests and curl honour these: any download attempt fails at once instead of reaching out
NO_NETWORK = {key: "http://127.0.0.1:9" for key in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY")}
# the first attempt of the resume test dies right after epoch 1's checkpoint, as a SIGKILL would
DIE_AFTER_FIRST_CHECKPOINT = (
    "import os, runpy, sys\n"
    "from ultralytics.utils import callbacks\n"
    "callbacks.default_callbacks['on_model_save'].append(lambda trainer: os._exit(137))\n"
    "sys.argv = ['train_child', '--job', sys.argv[1]]\n"
    "runpy.run_module('hoban_pipelines.training.child', run_name='__main__')\n"
)


def ultralytics_downloads() -> set[str]:
    """Files in the folders ultralytics downloads fonts and weights into."""
    from ultralytics.utils import USER_CONFIG_DIR, WEIGHTS_DIR

    return {str(p) for folder in (USER_CONFIG_DIR, WEIGHTS_DIR) if folder.is_dir() for p in folder.rglob("*")}


def make_job(data_yaml: Path, run_dir: Path, **changes) -> TrainJob:
    recipe = for_profile(RECIPES["base_from_scratch"], "test").recipe
    job = TrainJob(recipe=recipe, data_yaml=str(data_yaml), model="yolov8n.yaml", run_dir=str(run_dir), device="cpu", workers=0)
    return replace(job, **changes)


def run_child(job: TrainJob, cwd: Path, script: str | None = None) -> subprocess.CompletedProcess:
    """The child as Dagster would start it, but with ``--job`` instead of pipes."""
    job_file = cwd / f"job-{Path(job.run_dir).name}.json"
    job_file.write_text(json.dumps(job.as_extras()))
    command = ["-c", script, str(job_file)] if script else ["-m", "hoban_pipelines.training.child", "--job", str(job_file)]
    env = {**os.environ, **NO_NETWORK, "YOLO_OFFLINE": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, *command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


class RecordingContext:
    """The part of a dagster-pipes context the training loop talks to."""

    def __init__(self):
        self.messages: list[dict] = []

    def report_custom_message(self, payload: dict) -> None:
        self.messages.append(payload)


@pytest.fixture(scope="module")
def data_yaml(small_site, tmp_path_factory) -> Path:
    """A copy of the small demo site's base dataset (30 train / 8 val): ultralytics writes label caches beside it."""
    target = tmp_path_factory.mktemp("dataset") / "base_dataset"
    shutil.copytree(small_site / "base_dataset", target)
    return target / "data.yaml"


@pytest.fixture(scope="module")
def trained(data_yaml, tmp_path_factory):
    """One finished child run: (job, completed process, ultralytics download folders before it)."""
    work = tmp_path_factory.mktemp("trained")
    before = ultralytics_downloads()
    job = make_job(data_yaml, work / "run")
    return job, run_child(job, work), before


# --- recipes -----------------------------------------------------------------------------


def test_recipes_carry_the_teams_numbers():
    assert (RECIPES["finetune_sgd"].optimizer, RECIPES["finetune_sgd"].lr0) == ("SGD", 0.005)
    assert (RECIPES["finetune_adamw"].optimizer, RECIPES["finetune_adamw"].lr0) == ("AdamW", 0.0002)
    v2 = RECIPES["go2k_v2"]
    assert (v2.optimizer, v2.lr0, v2.cos_lr, v2.epochs, v2.patience) == ("SGD", 0.005, True, 100, 20)
    assert (v2.mosaic, v2.mixup, v2.degrees, v2.erasing) == (1.0, 0.1, 5.0, 0.1)
    v3 = RECIPES["go2k_v3"]
    assert (v3.imgsz, v3.tile) == (1280, 1280) and v3.copy_paste > 0


def sized(recipe: TrainRecipe, profile: str, train_images: int = 0, device: str = "cpu") -> TrainRecipe:
    """The recipe as the child trains it: a finetune on a view of ``train_images`` entries."""
    return for_profile(recipe, profile, device=device, finetune=True).trained_on(train_images)


def test_profiles_shrink_runs():
    v3 = RECIPES["go2k_v3"]
    assert for_profile(v3, "full").recipe is v3 and sized(v3, "full", 100) is v3
    demo = sized(v3, "demo")
    assert demo.epochs < v3.epochs and demo.imgsz < v3.imgsz and demo.lr0 == v3.lr0 and demo.copy_paste == v3.copy_paste
    assert (sized(v3, "test").epochs, sized(v3, "test").imgsz) == (1, 64)
    # CCTV recipes train on tiles of the demo's image size (people at their own size), most
    # label-free tiles left out; the base set's images stay whole
    cpu = DEMO_SIZES["cpu"]
    assert (demo.imgsz, demo.tile, demo.tile_over) == (cpu.max_imgsz, cpu.max_imgsz, 1280) == (256, 256, 1280)
    assert demo.background_tiles == cpu.background_tiles == 0.2 and v3.background_tiles == 1.0
    # a short CPU run steps the optimizer every batch and warms up for a tenth of the run
    v2_cpu = sized(RECIPES["go2k_v2"], "demo", 2017)
    assert v2_cpu.epochs == 4 and v2_cpu.extra == {"nbs": 16, "warmup_epochs": 0.4}
    assert sized(v3, "demo", 2017).extra == {"nbs": 8, "warmup_epochs": 0.1}
    assert sized(replace(v3, extra={"nbs": 64}), "demo").extra["nbs"] == 64  # the recipe's own word wins
    assert sized(replace(v3, extra={"warmup_epochs": 2.0}), "demo").extra["warmup_epochs"] == 2.0
    # a GPU affords bigger native-scale tiles, every tile and more epochs in the same demo minutes
    gpu = sized(RECIPES["go2k_v2"], "demo", 1076, device="0")
    assert (gpu.imgsz, gpu.tile, gpu.epochs, gpu.background_tiles) == (640, 640, 30, 1.0)
    assert gpu.extra == {"warmup_epochs": 3.0}
    assert sized(RECIPES["go2k_v2"], "demo").tile == demo.tile
    assert sized(RECIPES["base_from_scratch"], "demo").tile == 0
    assert sized(v3, "test").tile == v3.tile
    # the demo spends about the same time on a small set as on an oversampled mix
    v2 = RECIPES["go2k_v2"]
    assert sized(v2, "demo", 96).epochs == demo.epochs == cpu.max_epochs
    assert sized(v2, "demo", 2017).epochs == 4
    assert sized(v2, "demo", 100_000).epochs == 1
    # the team's main run (go2k_v2) gets a larger share of the demo's minutes than the side runs,
    # whose training views hold a sample of that size (one epoch)
    assert (demo_samples(v2, "cpu"), demo_samples(v3, "cpu"), demo_samples(RECIPES["finetune_sgd"], "cpu")) == (8000, 800, 800)
    assert sized(RECIPES["finetune_sgd"], "demo", 800).epochs == 1
    with pytest.raises(TrainingError, match="unknown training profile 'huge'"):
        for_profile(v3, "huge")


def test_profiles_size_the_view_before_the_epochs():
    """The view is built from ``for_profile``'s recipe and budget; the epochs follow from its entries."""
    v2 = RECIPES["go2k_v2"]
    finetune = for_profile(v2, "demo", finetune=True)
    assert finetune.sample_budget == demo_samples(v2, "cpu") == 8000
    assert (finetune.recipe.tile, finetune.recipe.background_tiles, finetune.recipe.epochs) == (256, 0.2, 12)
    assert finetune.trained_on(2017).tile == finetune.recipe.tile
    # training from scratch is not sampled and trains every epoch of the profile, whatever the view holds
    scratch = for_profile(RECIPES["base_from_scratch"], "demo")
    assert scratch.sample_budget == 0
    assert scratch.trained_on(100_000).epochs == DEMO_SIZES["cpu"].max_epochs
    assert scratch.trained_on(100_000).extra == {"nbs": 16, "warmup_epochs": 1.2}
    # the full and test profiles sample nothing and leave the epochs as sized
    for profile in ("full", "test"):
        size = for_profile(v2, profile, finetune=True)
        assert size.sample_budget == 0 and size.trained_on(100_000) is size.recipe


def test_recipe_round_trip_and_bad_recipes():
    recipe = replace(RECIPES["go2k_v2"], extra={"close_mosaic": 5})
    assert TrainRecipe.from_dict(recipe.as_dict()) == recipe
    with pytest.raises(TrainingError, match=r"unknown keys \['lr'\]"):
        TrainRecipe.from_dict({**recipe.as_dict(), "lr": 0.1})
    with pytest.raises(TrainingError, match="optimizer 'Adam'"):
        replace(recipe, optimizer="Adam")
    with pytest.raises(TrainingError, match=r"extra sets \['device', 'lr0'\]"):
        replace(recipe, extra={"device": "0", "lr0": 0.1})
    with pytest.raises(TrainingError, match="tile must be 0"):
        replace(recipe, tile=16)
    with pytest.raises(TrainingError, match="background_tiles must be a share between 0 and 1, got -0.1"):
        replace(recipe, background_tiles=-0.1)
    with pytest.raises(TrainingError, match="tile_over must be a pixel count"):
        replace(recipe, tile_over=-1)


def test_tiled_models_are_scored_on_whole_frames_at_their_training_scale():
    half_scale = replace(RECIPES["go2k_v2"], imgsz=256, tile=512)  # 512-px tiles at 256
    assert evaluation_imgsz(half_scale, 1920) == 960
    demo_v2 = sized(RECIPES["go2k_v2"], "demo")  # 256-px tiles at 256: the frames' own scale
    assert evaluation_imgsz(demo_v2, 1920) == 1920
    assert evaluation_imgsz(RECIPES["go2k_v3"], 1920) == 1920  # 1280 tiles at 1280: the frames' own scale
    assert evaluation_imgsz(RECIPES["go2k_v2"], 1920) == 640  # whole frames: the training size
    assert evaluation_imgsz(demo_v2, 200) == demo_v2.imgsz  # images smaller than a tile are whole anyway
    assert evaluation_imgsz(demo_v2, 960) == demo_v2.imgsz  # and so are images no longer than tile_over


# --- checks before training ----------------------------------------------------------------


def test_device_never_falls_back_to_cpu_silently(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"
    for requested in ("cuda", "0", "cuda:0"):
        with pytest.raises(TrainingError, match=f"device '{requested}' asks for CUDA.*use device 'auto'.* or 'cpu'"):
            resolve_device(requested)
    with pytest.raises(TrainingError, match="not understood"):
        resolve_device("0,1")


def test_device_with_one_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert [resolve_device(d) for d in ("auto", "cuda", "cuda:0", "0", "CPU")] == ["0", "0", "0", "0", "cpu"]
    with pytest.raises(TrainingError, match="asks for GPU 1 but this machine has 1"):
        resolve_device("cuda:1")


def test_missing_checkpoint_names_path_and_setting(tmp_path):
    missing = tmp_path / "v13_stage2_best.pt"
    with pytest.raises(TrainingError, match=re.escape(f"checkpoint {missing} does not exist; set 'base_checkpoint'")):
        load_checkpoint(missing)


def test_corrupt_checkpoints_name_the_file(tmp_path, trained):
    job, _, _ = trained
    real = (Path(job.run_dir) / BEST_WEIGHTS).read_bytes()
    for name, content in {"random.pt": os.urandom(4096), "truncated.pt": real[: len(real) // 2], "empty.pt": b""}.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(TrainingError, match=re.escape(f"checkpoint {path} cannot be loaded")):
            load_checkpoint(path)


def test_class_mismatch_is_an_error_unless_remapped():
    assert check_classes(CLASSES, CLASSES, remap=False) is False
    with pytest.raises(TrainingError) as error:
        check_classes(["helmet", "head", "person"], CLASSES, remap=False)
    assert "['helmet', 'head', 'person']" in str(error.value) and str(CLASSES) in str(error.value)
    assert check_classes(["helmet", "head", "person"], CLASSES, remap=True) is True


def test_empty_training_split_fails_before_ultralytics(data_yaml, tmp_path):
    empty_list = tmp_path / "train.txt"
    empty_list.write_text("\n")
    listed = tmp_path / "listed.yaml"
    listed.write_text(yaml.safe_dump({"train": str(empty_list), "val": str(data_yaml.parent / "images/val"), "names": CLASSES}))
    with pytest.raises(TrainingError, match=re.escape(f"{listed}: the train split is empty")):
        train(make_job(listed, tmp_path / "run"), RecordingContext(), print)
    assert not (tmp_path / "run" / "weights").exists() and not (tmp_path / "run" / VIEW_DIR).exists()

    (tmp_path / "images" / "train").mkdir(parents=True)
    folder = tmp_path / "folder.yaml"
    folder.write_text(yaml.safe_dump({
        "path": ".", "train": "images/train", "val": str(data_yaml.parent / "images/val"), "names": CLASSES,
    }))
    with pytest.raises(TrainingError, match=re.escape(f"{folder}: the train split is empty")):
        train(make_job(folder, tmp_path / "run"), RecordingContext(), print)


def test_run_dir_state(data_yaml, tmp_path):
    job = make_job(data_yaml, tmp_path / "run")
    assert run_state(job)[0] is RunState.FRESH
    record_job(job)
    last = tmp_path / "run" / LAST_WEIGHTS
    last.parent.mkdir()
    last.write_bytes(b"half a checkpoint")  # killed while ultralytics wrote it
    state, note = run_state(job)
    assert state is RunState.FRESH and "starting over" in note
    other = replace(job, recipe=replace(job.recipe, lr0=0.1))
    with pytest.raises(TrainingError, match="holds weights of another run"):
        run_state(other)


# --- publishing a run -----------------------------------------------------------------------


def test_reuse_key_is_the_job_its_upstream_and_the_kind_of_device(data_yaml, tmp_path):
    upstream = {"go2k_v2_mix": "v1", "base_model": "b1"}
    job = make_job(data_yaml, tmp_path / "run", model="base.pt", device="0", workers=2, threads=0)
    key = job.reuse_key(upstream)
    assert json.loads(json.dumps(key)) == key  # stored in a version's JSON, compared as read back
    # what may change on a retry, or between two GPUs, decides nothing
    for retry in (
        replace(job, device="1"), replace(job, threads=4), replace(job, workers=8), replace(job, amp=False),
        replace(job, cache="disk"), replace(job, run_dir=str(tmp_path / "another run")),
        TrainJob.from_extras(job.as_extras()),  # as published in recipe.json
    ):
        assert retry.reuse_key(dict(upstream)) == key
    # the demo profile sizes a CPU run unlike a GPU one; another upstream version is other data
    assert replace(job, device="cpu").reuse_key(upstream) != key
    assert job.reuse_key({**upstream, "go2k_v2_mix": "v2"}) != key
    assert replace(job, recipe=replace(job.recipe, lr0=0.1)).reuse_key(upstream) != key
    assert replace(job, profile="demo").reuse_key(upstream) != key


def fake_run(run_dir: Path) -> Path:
    """A finished run folder: every artifact, the views, and files that are not published."""
    for relative in ARTIFACTS:
        (run_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / relative).write_bytes(f"content of {relative}".encode())
    for view in (VIEW_DIR, EVAL_DIR):
        (run_dir / view / "images").mkdir(parents=True)
        (run_dir / view / "images" / "a.jpg").write_bytes(b"jpeg")
        (run_dir / view / "data.yaml").write_text("names: []\n")
    (run_dir / "weights" / "epoch3.pt").write_bytes(b"not published")
    (run_dir / "args.yaml").write_text("epochs: 1\n")
    (run_dir / JOB_RECORD).write_text("{}")
    return run_dir


def test_write_checkpoint_version_copies_exactly_the_artifacts(data_yaml, tmp_path):
    run_dir = fake_run(tmp_path / "run")
    (run_dir / CONFUSION_PNG).unlink()  # an artifact a run did not write is left out
    job = make_job(data_yaml, run_dir)
    out = tmp_path / "version"
    digest = write_checkpoint_version(run_dir, out, job)
    assert digest == file_sha256(run_dir / BEST_WEIGHTS) == file_sha256(out / BEST_WEIGHTS)
    published = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert published == sorted({*ARTIFACTS, RECIPE_FILE} - {CONFUSION_PNG})
    for relative in set(ARTIFACTS) - {CONFUSION_PNG}:
        assert (out / relative).read_bytes() == (run_dir / relative).read_bytes()
    assert TrainJob.from_extras(json.loads((out / RECIPE_FILE).read_text())) == job
    with pytest.raises(TrainingError, match=re.escape(f"{tmp_path / 'empty' / BEST_WEIGHTS} does not exist")):
        write_checkpoint_version(tmp_path / "empty", tmp_path / "version2", job)


def test_write_base_version_copies_the_checkpoint(tmp_path):
    source = tmp_path / "v13 stage2 best.pt"
    source.write_bytes(b"weights")
    checkpoint = CheckpointInfo(path=source, sha256=file_sha256(source), classes=CLASSES)
    out = tmp_path / "version"
    out.mkdir()
    assert write_base_version(checkpoint, out) == file_sha256(source)
    assert [p.relative_to(out) for p in out.rglob("*") if p.is_file()] == [Path(BEST_WEIGHTS)]
    assert (out / BEST_WEIGHTS).read_bytes() == b"weights"


def test_remove_views_removes_only_the_views(tmp_path):
    run_dir = fake_run(tmp_path / "run")
    views = (VIEW_DIR, EVAL_DIR)
    kept = sorted(p for p in run_dir.rglob("*") if p.is_file() and p.relative_to(run_dir).parts[0] not in views)
    assert remove_views(run_dir) == [run_dir / VIEW_DIR, run_dir / EVAL_DIR]
    assert sorted(p for p in run_dir.rglob("*") if p.is_file()) == kept
    assert remove_views(run_dir) == []  # nothing left to remove


# --- real runs -----------------------------------------------------------------------------


def test_child_trains_and_summarizes(trained, data_yaml):
    job, result, _ = trained
    assert result.returncode == 0, result.stderr[-4000:]
    assert "epoch 1/1" in result.stderr
    run_dir = Path(job.run_dir)
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    for key in ("precision", "recall", "map50", "map50_95", "train_seconds"):
        assert isinstance(summary[key], float) and 0 <= summary[key] < float("inf"), key
    assert (summary["epochs"], summary["best_epoch"], summary["device"], summary["imgsz"]) == (1, 1, "cpu", 64)
    assert [row["class"] for row in summary["per_class"]] == CLASSES
    assert sum(row["instances"] for row in summary["per_class"]) == sum(summary["confusion"][-1][:-1]) + sum(
        summary["confusion"][p][t] for p in range(2) for t in range(2)
    )
    assert len(summary["confusion"]) == 3 and all(len(row) == 3 for row in summary["confusion"])
    assert summary["best_sha256"] == file_sha256(run_dir / BEST_WEIGHTS)
    for picture in (CURVES_PNG, CONFUSION_PNG):
        assert (run_dir / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"train/box_loss", "metrics/mAP50(B)", "val/cls_loss"} <= set(summary["history"][0])
    # ultralytics read a view in the run folder: its label caches landed there, not in the dataset
    assert list(data_yaml.parent.rglob("*.cache")) == []
    assert list((run_dir / VIEW_DIR / "labels").glob("*.cache"))


def test_nothing_is_downloaded(trained):
    job, result, before = trained
    assert result.returncode == 0, result.stderr[-4000:]
    assert ultralytics_downloads() == before
    assert sorted(p.name for p in Path(job.run_dir).parent.iterdir()) == ["job-run.json", "run"]


def test_finished_run_is_summarized_again_without_training(trained, tmp_path):
    job, first, _ = trained
    assert first.returncode == 0, first.stderr[-4000:]
    again = run_child(job, tmp_path)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "holds this job's finished run" in again.stderr and "epoch 1/1" not in again.stderr


def test_child_failure_is_one_line_and_nonzero(data_yaml, tmp_path):
    result = run_child(make_job(data_yaml, tmp_path / "run", model=str(tmp_path / "base.pt")), tmp_path)
    assert result.returncode == 1
    assert f"training failed: checkpoint {tmp_path / 'base.pt'} does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_killed_run_resumes(data_yaml, tmp_path):
    job = make_job(data_yaml, tmp_path / "run")
    job = replace(job, recipe=replace(job.recipe, epochs=2))
    killed = run_child(job, tmp_path, script=DIE_AFTER_FIRST_CHECKPOINT)
    assert killed.returncode == 137, killed.stderr[-4000:]
    results = tmp_path / "run" / RESULTS_CSV
    first_epoch = results.read_text().splitlines()[1]
    assert first_epoch.startswith("1,") and len(results.read_text().splitlines()) == 2

    resumed = run_child(job, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resuming" in resumed.stderr and "after epoch 1" in resumed.stderr
    assert "epoch 1/2" not in resumed.stderr and "epoch 2/2" in resumed.stderr
    rows = results.read_text().splitlines()
    assert rows[1] == first_epoch and [row.split(",")[0] for row in rows[1:]] == ["1", "2"]
    assert json.loads((tmp_path / "run" / SUMMARY_FILE).read_text())["epochs"] == 2


def test_remap_trains_a_new_class_head(trained, data_yaml, tmp_path):
    from ultralytics import YOLO

    base_job, result, _ = trained
    assert result.returncode == 0, result.stderr[-4000:]
    base = str(Path(base_job.run_dir) / BEST_WEIGHTS)
    three = tmp_path / "three.yaml"
    three.write_text(yaml.safe_dump({
        "path": str(data_yaml.parent), "train": "images/train", "val": "images/val", "names": [*CLASSES, "person"],
    }))
    with pytest.raises(TrainingError, match="differ from the dataset's"):
        train(make_job(three, tmp_path / "refused", model=base), RecordingContext(), print)

    context, lines = RecordingContext(), []
    summary = train(make_job(three, tmp_path / "run", model=base, remap=True), context, lines.append)
    assert any(line.startswith("re-heading") for line in lines)
    assert YOLO(summary.best_pt).names == {0: CLASSES[0], 1: CLASSES[1], 2: "person"}
    assert [m["epoch"] for m in context.messages] == [1]
    assert {"train/box_loss", "precision", "recall", "mAP50", "mAP50-95"} <= set(context.messages[0])
    assert summary.per_class[2] == {
        "class": "person", "images": 0, "instances": 0,
        "precision": None, "recall": None, "map50": None, "map50_95": None,
    }
    version = tmp_path / "version"
    job = make_job(three, tmp_path / "run", model=base, remap=True)
    report = build_checkpoint(tmp_path / "run", version, job)
    for key in ("val/mAP50", "val/mAP50-95", "val/precision", "val/recall"):
        assert isinstance(report.details[key], float), key
    assert report.digest == report.details["best_sha256"] == file_sha256(summary.best_pt)
    assert report.details["per_class"].rows[2]["map50"] is None and report.details["profile"] == job.profile
    assert all((version / report.details[name].path).is_file() for name in ("curves", "confusion"))


def test_tiled_run_trains_on_tiles_and_scores_whole_images(data_yaml, tmp_path):
    job = make_job(data_yaml, tmp_path / "run", eval_data=str(data_yaml))
    # tile_over 0: every image larger than a tile is cut; 640-px images -> 9 tiles, people at 1/5
    job = replace(job, recipe=replace(job.recipe, tile=320, tile_over=0))
    context, lines = RecordingContext(), []
    summary = train(job, context, lines.append)
    view = json.loads((tmp_path / "run" / SUMMARY_FILE).read_text())["view"]
    assert view["tile"] == 320 and view["tiles"]["train"] > view["images"]["train"] * 4
    assert any("tiles of 320 px" in line for line in lines)
    # trained at 64 on 320 tiles: whole images (up to 960 px) are scored at 960 * 64 / 320 = 192
    assert longest_side(data_yaml) == 960
    assert (summary.imgsz, summary.eval_imgsz, summary.eval_data) == (64, 192, str(data_yaml))
    assert (tmp_path / "run" / EVAL_DIR / "data.yaml").is_file()


def test_amp_check_needs_no_download():
    from ultralytics.nn.tasks import DetectionModel

    assert offline_amp_check(DetectionModel("yolov8n.yaml", nc=2, verbose=False)) is False  # CPU: no AMP


def test_training_benchmark_reports_its_figures():
    """`hoban bench train`: both sides really train (asset through Dagster, then ultralytics directly)."""
    from hoban_pipelines.bench import train as bench

    figures = bench.run(epochs=2, imgsz=64, site_profile="small")
    assert set(figures) == {"asset_epoch_seconds", "direct_epoch_seconds", "overhead_fraction"}
    assert figures["asset_epoch_seconds"] > 0 and figures["direct_epoch_seconds"] > 0
    # computed before the seconds were rounded to milliseconds
    ratio = figures["asset_epoch_seconds"] / figures["direct_epoch_seconds"] - 1
    assert figures["overhead_fraction"] == pytest.approx(ratio, abs=0.01)
