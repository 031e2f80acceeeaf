"""The sweeps against direct scoring: every row a sweep reads off its shortcuts (one NMS merge for
every confidence, one matching for every threshold) must equal ``metrics.score`` of the final
detections of that setting, computed the long way. Synthetic caches: boxes of every size bucket,
duplicates cut at tile borders, wrong classes, background alarms and a full-image pass near some
people only, so that merges, the gate and the size buckets all change the counts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hoban_pipelines.evaluation.engine import FRAME_COLUMNS, EvaluationError, InferenceSettings
from hoban_pipelines.evaluation.gate import Gate
from hoban_pipelines.evaluation.metrics import SIZE_EDGES, score
from hoban_pipelines.evaluation.postprocess import Postprocess
from hoban_pipelines.evaluation.predictions import EvaluationSet, Predictions, load_predictions, write_predictions
from hoban_pipelines.evaluation.sweeps import (
    GATE_CONFS, GATE_RADII, TEAM_CONFS, TEAM_GATE, Policy, Setting, adopt, base_setting, conf_sweep,
    evaluation_inputs, final_detections, gate_sweep, postprocess_settings, postprocess_sweep,
)

CLASSES = ["person_with_helmet", "person_without_helmet"]
WIDTH, HEIGHT = 640, 480
N_FRAMES = 8
BOX = ["x1", "y1", "x2", "y2"]


def _clip(frame: pd.DataFrame) -> pd.DataFrame:
    frame[["x1", "x2"]] = frame[["x1", "x2"]].clip(0, WIDTH)
    frame[["y1", "y2"]] = frame[["y1", "y2"]].clip(0, HEIGHT)
    return frame[(frame["x2"] > frame["x1"] + 1) & (frame["y2"] > frame["y1"] + 1)]


def synthetic(seed: int = 5) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str]]:
    """(truth, sliced, full, frame names) of a small scene in which every part of a setting matters."""
    rng = np.random.default_rng(seed)
    names = [f"cam1/frame_{index}.jpg" for index in range(N_FRAMES)]
    truth, sliced, full = [], [], []
    for name in names:
        for side in rng.choice([10, 14, 24, 40, 60, 90, 150], size=7):  # every size bucket
            cls = int(rng.integers(0, 2))
            x1, y1 = rng.uniform(0, WIDTH - side), rng.uniform(0, HEIGHT - side)
            truth.append((name, cls, x1, y1, x1 + side, y1 + side))
            for _ in range(int(rng.integers(0, 4))):  # the same person seen by overlapping tiles
                jitter = rng.normal(0, 0.12 * side, 4)
                label = cls if rng.random() < 0.85 else 1 - cls
                sliced.append((name, label, rng.uniform(0.05, 0.95), x1 + jitter[0], y1 + jitter[1],
                               x1 + side + jitter[2], y1 + side + jitter[3]))
            if rng.random() < 0.4:  # a box cut at a tile border: half the person, matched by IOS only
                sliced.append((name, cls, rng.uniform(0.05, 0.6), x1, y1, x1 + side / 2, y1 + side))
            if rng.random() < 0.6:  # the whole frame sees this one too, roughly where it is
                shift = rng.normal(0, 25, 2)
                full.append((name, cls, rng.uniform(0.05, 0.7), x1 + shift[0], y1 + shift[1],
                             x1 + side + shift[0], y1 + side + shift[1]))
        for _ in range(5):  # alarms on nothing, in both passes
            x1, y1, side = rng.uniform(0, WIDTH - 80), rng.uniform(0, HEIGHT - 80), rng.uniform(8, 80)
            sliced.append((name, int(rng.integers(0, 2)), rng.uniform(0.05, 0.9), x1, y1, x1 + side, y1 + side))
        x1, y1 = rng.uniform(0, WIDTH - 50), rng.uniform(0, HEIGHT - 50)
        full.append((name, int(rng.integers(0, 2)), rng.uniform(0.05, 0.5), x1, y1, x1 + 50, y1 + 50))
    columns = ["image", "cls", "score", *BOX]
    truth = pd.DataFrame(truth, columns=["image", "cls", *BOX])
    sliced = _clip(pd.DataFrame(sliced, columns=columns)).assign(tile=lambda t: np.arange(len(t)) % 8)
    full = _clip(pd.DataFrame(full, columns=columns)).assign(tile=-1)
    return truth, sliced, full, names


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A cache as the engine writes it (Parquet, float32 scores and boxes) and the truth of its frames."""
    folder = tmp_path_factory.mktemp("sweeps")
    truth, sliced, full, names = synthetic()
    detections = pd.concat([sliced.assign(**{"pass": "sliced"}), full.assign(**{"pass": "full"})], ignore_index=True)
    detections = detections[["image", "pass", "tile", "cls", "score", *BOX]].astype(
        {"tile": "int32", "cls": "int16", "score": "float32", "x1": "float32", "y1": "float32",
         "x2": "float32", "y2": "float32"})
    frames = pd.DataFrame([{"image": name, "path": str(folder / name), "width": WIDTH, "height": HEIGHT, "channels": 3,
                            "tiles": 6, "status": "ok"} for name in names], columns=FRAME_COLUMNS)
    record = {"classes": CLASSES, "settings": InferenceSettings(slice_size=256, imgsz=256, full_imgsz=640).as_dict(),
              "speed": {"backend": "torch", "frames": N_FRAMES}}
    write_predictions(folder / "predictions.parquet", detections, frames, record)
    return load_predictions(folder / "predictions.parquet"), truth, names


def direct(scene, setting: Setting):
    predictions, truth, names = scene
    return score(final_detections(predictions, setting), truth, names, CLASSES)


def counts(scores) -> dict[str, tuple[int, int, int]]:
    """tp, fp, fn per class and for "all"."""
    return {"all": (scores.tp, scores.fp, scores.fn),
            **{row["class"]: (row["tp"], row["fp"], row["fn"]) for row in scores.per_class}}


def test_the_scene_exercises_what_it_should(scene):
    """Otherwise the equalities below would hold trivially."""
    predictions, truth, names = scene
    assert len(predictions.sliced) > 100 and len(predictions.full) > 20
    plain = direct(scene, Setting(0.15))
    assert plain.tp > 10 and plain.fp > 10 and plain.fn > 5
    assert all(bucket["truth"] > 0 for bucket in plain.sizes)
    assert direct(scene, Setting(0.15, gate=TEAM_GATE)).tp < plain.tp  # the gate removes some people
    assert (direct(scene, Setting(0.15, Postprocess("NMS", "IOS", 0.3))).fp
            != direct(scene, Setting(0.15, Postprocess("NMS", "IOU", 0.5))).fp)


@pytest.mark.parametrize("postprocess", [Postprocess("NMS", "IOS", 0.4), Postprocess("GREEDYNMM", "IOU", 0.3),
                                         Postprocess("NMM", "IOS", 0.5)], ids=lambda p: p.name)
def test_conf_sweep_rows_equal_direct_scoring(scene, postprocess):
    """NMS reads every confidence off one merge; the merges are re-run at each: both must equal scoring each
    setting on its own, per class and in all."""
    predictions, truth, names = scene
    confs = (0.07, 0.12, 0.3, 0.55, 0.8)
    sweep = conf_sweep(predictions, truth, names, CLASSES, postprocess, confs=confs)
    rows = sweep.rows
    assert sorted(rows["conf"].unique()) == sorted(set(confs) | set(TEAM_CONFS))
    assert len(rows) == rows["conf"].nunique() * (len(CLASSES) + 1)
    for conf, at_conf in rows.groupby("conf"):
        expected = counts(direct(scene, Setting(float(conf), postprocess)))
        got = {row["class"]: (row["tp"], row["fp"], row["fn"]) for _, row in at_conf.iterrows()}
        assert got == expected, f"conf {conf}"
    floor = score(final_detections(predictions, Setting(0.0, postprocess)), truth, names, CLASSES)
    assert sweep.extra["map50"] == pytest.approx(floor.map50) and floor.map50 > 0
    assert sweep.extra["postprocess"] == postprocess.name
    curve = sweep.extra["pr_curve"]
    assert curve["conf"].is_monotonic_increasing and len(curve) == rows["conf"].nunique()
    if postprocess.method == "NMS":  # a merge re-run at a higher conf may merge less and find more
        assert curve["recall"].is_monotonic_decreasing


def test_postprocess_sweep_is_every_merge_at_every_team_conf_and_equals_direct_scoring(scene):
    predictions, truth, names = scene
    rows = postprocess_sweep(predictions, truth, names, CLASSES).rows
    assert len(postprocess_settings()) == 18
    assert len(rows) == 18 * 8 == len(rows.drop_duplicates(["method", "metric", "threshold", "conf"]))
    assert sorted(rows["conf"].unique()) == list(TEAM_CONFS)
    for row in rows.itertuples():
        setting = Setting(row.conf, Postprocess(row.method, row.metric, row.threshold))
        scores = direct(scene, setting)
        assert (row.tp, row.fp, row.fn) == (scores.tp, scores.fp, scores.fn), setting.name
        assert (row.precision, row.recall, row.f1) == pytest.approx((scores.precision, scores.recall, scores.f1))
    assert rows.groupby("method")["fp"].sum().nunique() > 1  # the merges do differ on this scene


def test_gate_sweep_is_no_gate_then_every_gate_with_recall_by_size(scene):
    predictions, truth, names = scene
    base = Setting(0.15, Postprocess("GREEDYNMM", "IOS", 0.4))
    sweep = gate_sweep(predictions, truth, names, CLASSES, base)
    rows, sizes = sweep.rows, sweep.extra["sizes"]
    assert len(rows) == 1 + len(GATE_CONFS) * len(GATE_RADII) == 49
    assert rows.iloc[0]["gate"] == "no gate" and pd.isna(rows.iloc[0]["gate_conf"])
    assert rows["gate"].is_unique and TEAM_GATE.name in set(rows["gate"])
    assert sweep.extra["base"] == base.name
    buckets = len(SIZE_EDGES) - 1
    assert len(sizes) == 49 * buckets and (sizes.groupby("gate").size() == buckets).all()
    for row in rows.itertuples():
        gate = None if pd.isna(row.gate_conf) else Gate(row.gate_conf, row.radius)
        scores = direct(scene, Setting(base.conf, base.postprocess, gate))
        assert (row.tp, row.fp, row.fn) == (scores.tp, scores.fp, scores.fn), row.gate
        assert sizes[sizes["gate"] == row.gate].drop(columns="gate").to_dict("records") == scores.sizes
    # a wider radius keeps everything a narrower one keeps
    gated = rows.dropna(subset=["gate_conf"])
    for _, by_radius in gated.groupby("gate_conf"):
        assert by_radius.sort_values("radius")[["tp", "fp"]].diff().dropna().ge(0).all().all()
    assert (gated["tp"] <= rows.iloc[0]["tp"]).all() and gated["tp"].nunique() > 1


def test_a_per_class_gate_sweep_scores_per_class_gates_and_adopts_one(scene):
    """class_agnostic=False: only a full-image box of the same class vouches; the adopted gate keeps that."""
    predictions, truth, names = scene
    base = Setting(0.15, Postprocess("GREEDYNMM", "IOS", 0.4))
    rows = gate_sweep(predictions, truth, names, CLASSES, base, class_agnostic=False).rows
    assert not rows["class_agnostic"].any() and rows["gate"].iloc[1].endswith("/per-class")
    for row in rows.dropna(subset=["gate_conf"]).itertuples():
        scores = direct(scene, Setting(base.conf, base.postprocess, Gate(row.gate_conf, row.radius, False)))
        assert (row.tp, row.fp, row.fn) == (scores.tp, scores.fp, scores.fn), row.gate
    merges = postprocess_sweep(predictions, truth, names, CLASSES).rows
    adoption = adopt(predictions, truth, names, CLASSES, merges, rows, Policy("best_f1"))
    shown = adoption.setting.gate or Gate(TEAM_GATE.conf, TEAM_GATE.radius, False)
    assert shown.class_agnostic is False
    assert adoption.with_gate == direct(scene, Setting(adoption.setting.conf, adoption.setting.postprocess, shown))


POLICY_ROWS = pd.DataFrame(
    {"precision": [0.95, 0.90, 0.70, 0.99, 0.80], "recall": [0.70, 0.86, 0.95, 0.10, 0.86],
     "f1": [0.806, 0.880, 0.806, 0.182, 0.829]}, index=[10, 11, 12, 13, 14])


def test_precision_at_recall_picks_the_most_precise_setting_with_enough_recall():
    index, reason = Policy("precision_at_recall", 0.85).choose(POLICY_ROWS)
    assert index == 11 and reason == "the highest precision with recall >= 0.85"
    assert Policy("precision_at_recall", 0.9).choose(POLICY_ROWS)[0] == 12  # recall exactly enough is enough
    assert Policy("precision_at_recall", 0.95).choose(POLICY_ROWS)[0] == 12
    assert Policy("precision_at_recall", 0.0).choose(POLICY_ROWS)[0] == 13


def test_precision_at_recall_falls_back_to_best_f1_and_says_so():
    index, reason = Policy("precision_at_recall", 0.99).choose(POLICY_ROWS)
    assert index == 11
    assert "the best F1" in reason and "no setting keeps recall >= 0.99" in reason and "0.950" in reason


def test_best_f1_picks_best_f1_and_breaks_ties_by_precision():
    assert Policy("best_f1").choose(POLICY_ROWS) == (11, "the best F1")
    tie = POLICY_ROWS.assign(f1=0.5)
    assert Policy("best_f1").choose(tie)[0] == 13


@pytest.mark.parametrize("kwargs, message", [({"kind": "best_recall"}, "policy 'best_recall' is not one of"),
                                             ({"min_recall": 1.5}, "min_recall 1.5 must be in"),
                                             ({"min_recall": -0.1}, "min_recall -0.1 must be in")])
def test_bad_policies_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Policy(**kwargs)


def test_a_policy_needs_settings_to_choose_from():
    with pytest.raises(ValueError, match="no settings"):
        Policy().choose(POLICY_ROWS.iloc[:0])


@pytest.mark.parametrize("kind", ["precision_at_recall", "best_f1"])
def test_adopt_picks_by_policy_and_its_scores_equal_direct_scoring(scene, kind):
    predictions, truth, names = scene
    policy = Policy(kind, 0.5)
    merges = postprocess_sweep(predictions, truth, names, CLASSES).rows
    base, _ = base_setting(merges, policy)
    assert base == Setting(float(merges.loc[policy.choose(merges)[0], "conf"]), base.postprocess)
    gates = gate_sweep(predictions, truth, names, CLASSES, base).rows
    adoption = adopt(predictions, truth, names, CLASSES, merges, gates, policy)
    chosen = gates.loc[policy.choose(gates)[0]]
    assert adoption.setting.conf == base.conf and adoption.setting.postprocess == base.postprocess
    assert (adoption.setting.gate.name if adoption.setting.gate else "no gate") == chosen["gate"]
    plain = Setting(base.conf, base.postprocess)
    gated = Setting(base.conf, base.postprocess, adoption.setting.gate or TEAM_GATE)
    assert adoption.without_gate == direct(scene, plain)
    assert adoption.with_gate == direct(scene, gated)
    assert len(adoption.reasons) == 2 and adoption.reasons[0].startswith("conf and merge: ")
    assert adoption.policy == policy


def test_adopt_without_a_gate_still_scores_the_teams_gate(scene):
    """When "no gate" wins, the card still shows what C0.2/R40 would do."""
    predictions, truth, names = scene
    merges = postprocess_sweep(predictions, truth, names, CLASSES, settings=[Postprocess()]).rows
    base, _ = base_setting(merges, Policy("best_f1"))
    gates = gate_sweep(predictions, truth, names, CLASSES, base).rows
    only_plain = gates.iloc[:1]  # the policy can only pick "no gate"
    adoption = adopt(predictions, truth, names, CLASSES, merges, only_plain, Policy("best_f1"))
    assert adoption.setting.gate is None and adoption.reasons[1].endswith("(no gate)")
    assert adoption.with_gate == direct(scene, Setting(base.conf, base.postprocess, TEAM_GATE))
    assert adoption.with_gate != adoption.without_gate


@pytest.mark.parametrize("setting", [Setting(0.25), Setting(0.3, Postprocess("NMM", "IOU", 0.5, True), Gate()),
                                     Setting(0.45, Postprocess("GREEDYNMM"), Gate(0.1, 160.0, False))],
                         ids=lambda s: s.name)
def test_setting_round_trips_through_its_dict_and_json(setting):
    assert Setting.from_dict(setting.as_dict()) == setting
    assert Setting.from_dict(json.loads(json.dumps(setting.as_dict()))) == setting


def test_float32_scores_at_a_team_conf_count_the_same_in_the_sweep_and_the_setting(scene):
    """Cached scores are float32, and float32(0.35) is just below 0.35. The sweeps count a detection at a conf
    in float64 (``counts_by_conf``, like ``score(conf=...)``), so the setting they stand for must filter the
    same way: otherwise the adopted setting's scores are not those of the row it was picked from."""
    predictions, truth, names = scene
    assert float(np.float32(0.35)) < 0.35
    # a frame of its own: one person, found once at exactly float32(0.35), so no merge can hide it
    person = {"image": "cam1/edge.jpg", "cls": 0, "x1": 10.0, "y1": 10.0, "x2": 50.0, "y2": 90.0}
    found = pd.DataFrame([{**person, "pass": "sliced", "tile": 0, "score": 0.35}])
    sliced = pd.concat([predictions.sliced, found[predictions.sliced.columns].astype(predictions.sliced.dtypes)],
                       ignore_index=True)
    edge = Predictions(sliced, predictions.full, predictions.frames, predictions.record)
    truth = pd.concat([truth, pd.DataFrame([person])], ignore_index=True)
    names = [*names, person["image"]]
    for postprocess in (Postprocess("NMS", "IOS", 0.4), Postprocess("GREEDYNMM", "IOS", 0.4)):
        row = postprocess_sweep(edge, truth, names, CLASSES, settings=[postprocess]).rows.query("conf == 0.35").iloc[0]
        at_conf = score(final_detections(edge, Setting(0.0, postprocess)), truth, names, CLASSES, conf=0.35)
        assert (row.tp, row.fp, row.fn) == (at_conf.tp, at_conf.fp, at_conf.fn), postprocess.name
        setting = score(final_detections(edge, Setting(0.35, postprocess)), truth, names, CLASSES)
        assert (setting.tp, setting.fp, setting.fn) == (row.tp, row.fp, row.fn), postprocess.name


# evaluation_inputs: the cache's frames paired with the dataset's labels


def _dataset(folder: Path, names: list[str], truth: pd.DataFrame, rename=lambda name: name, classes=CLASSES):
    """The scene's frames as a dataset naming them its own way, the files at the cache's paths."""
    images = [(rename(name), folder / name) for name in names]
    return EvaluationSet(folder, list(classes), images, truth.assign(image=truth["image"].map(rename)))


def _cache_at(scene, folder: Path) -> Predictions:
    predictions, _, _ = scene
    frames = predictions.frames.assign(path=[str(folder / "x" / ".." / name) for name in predictions.frames["image"]])
    for path in frames["path"]:
        Path(path).resolve().parent.mkdir(parents=True, exist_ok=True)
        Path(path).resolve().touch()
    return Predictions(predictions.sliced, predictions.full, frames, predictions.record)


def test_evaluation_inputs_pair_frames_by_file_path_whatever_they_are_named(scene, tmp_path):
    _, truth, names = scene
    predictions = _cache_at(scene, tmp_path)  # a differently spelled path to the same files
    data = _dataset(tmp_path, names, truth, rename=lambda name: "images/val/" + Path(name).name)
    paired, frames = evaluation_inputs(predictions, data, "model m", "dataset d")
    assert frames == sorted(names)
    pd.testing.assert_frame_equal(paired, truth.reset_index(drop=True))  # renamed back to the cache's names
    assert score(final_detections(predictions, Setting(0.2)), paired, frames, CLASSES) == direct(scene, Setting(0.2))


def test_evaluation_inputs_keep_only_frames_the_cache_read(scene, tmp_path):
    """Labelled frames missing from the cache, or unreadable in it, are not scored (and their truth goes)."""
    _, truth, names = scene
    predictions = _cache_at(scene, tmp_path)
    frames = predictions.frames.copy()
    frames.loc[frames["image"] == names[1], ["width", "height", "tiles", "status"]] = [0, 0, 0, "unreadable: x"]
    partial = Predictions(predictions.sliced, predictions.full, frames[frames["image"] != names[2]], predictions.record)
    paired, scored = evaluation_inputs(partial, _dataset(tmp_path, names, truth), "m", "d")
    assert scored == sorted(set(names) - {names[1], names[2]})
    assert set(paired["image"]) == set(scored) and len(paired) == truth["image"].isin(scored).sum()


def test_evaluation_inputs_refuse_other_classes_naming_both_lists(scene, tmp_path):
    _, truth, names = scene
    data = _dataset(tmp_path, names, truth, classes=["helmet", "head"])
    with pytest.raises(EvaluationError) as error:
        evaluation_inputs(_cache_at(scene, tmp_path), data, "model m", "dataset d")
    assert str(CLASSES) in str(error.value) and "['helmet', 'head']" in str(error.value)
    assert "model m" in str(error.value) and "dataset d" in str(error.value)


def test_evaluation_inputs_refuse_a_cache_of_other_frames(scene, tmp_path):
    _, truth, names = scene
    predictions = _cache_at(scene, tmp_path / "elsewhere")
    (tmp_path / "cam1").mkdir()
    data = _dataset(tmp_path, names, truth)  # same names, different files
    with pytest.raises(EvaluationError, match=rf"cover none of dataset d's {N_FRAMES} labelled frames"):
        evaluation_inputs(predictions, data, "model m", "dataset d")
