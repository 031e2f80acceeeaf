"""The evaluation stage as assets: a model exported to ONNX, one sliced inference pass cached,
every sweep scored from that cache, the adopted inference setting and the report card.

Every asset here is partitioned by model (``MODEL_PARTITIONS``): materializing a partition
evaluates that model, so any go2k model (and the base model) is evaluated from the UI by picking
its partition, and the partitions sit side by side. An evaluation partition names its model, so
the model's handle is the one Dagster recorded for that model asset (``LakeResource.recorded``),
declared as a dependency for lineage. The frames and ground truth are go2k_split's val split,
the same the training scored. Inference runs in the ``gpu`` pool on the ``yolo`` resource's device.
"""

import json

import dagster as dg

from hoban_pipelines.assets.publishing import lake_output, partition_of, publish, reused_version
from hoban_pipelines.assets.training import EVALUATION_DATA, MODELS
from hoban_pipelines.core.lake import Lake, LakeHandle
from hoban_pipelines.assets.classifiers import train_crop_classifier
from hoban_pipelines.evaluation import builds, verifier
from hoban_pipelines.evaluation.engine import BACKENDS, EvaluationError, InferenceSettings
from hoban_pipelines.evaluation.export import export_onnx
from hoban_pipelines.evaluation.predictions import evaluation_set, frames_key
from hoban_pipelines.resources import AdoptionPolicy, LakeResource, SettingsResource, TrainingChild, YoloRuntime
from hoban_pipelines.training.classifier import ClassifierRecipe, load_classifier
from hoban_pipelines.training.job import BEST_WEIGHTS
from hoban_pipelines.training.job import resolve_device
from hoban_pipelines.training.report import build_comparison

GROUP = "evaluation"
DEFAULT_MODEL = "model_go2k_v2"
MODEL_PARTITIONS = dg.StaticPartitionsDefinition(
    [DEFAULT_MODEL, *(model for model in MODELS if model != DEFAULT_MODEL), "base_model"])
MODEL_DEPS = [dg.AssetDep(name) for name in MODEL_PARTITIONS.get_partition_keys()]
# the verifier's crops are 64 px squares; it runs on every sliced detection, so it stays small
VERIFIER_RECIPE = ClassifierRecipe(imgsz=64, epochs=40, demo_epochs=10)


def _model(context: dg.AssetExecutionContext, lake: LakeResource) -> tuple[str, LakeHandle]:
    name = partition_of(context)
    return name, lake.recorded(name)


@dg.asset(
    group_name=GROUP, kinds={"onnx"}, partitions_def=MODEL_PARTITIONS, deps=MODEL_DEPS, code_version="1",
    description="The partition's model exported to ONNX by ultralytics (dynamic batch), checked against the "
                "checkpoint's own outputs and versioned by it.",
)
def model_export(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.Output[LakeHandle]:
    name, model = _model(context, lake)
    store = lake.get()
    key = {"model": model.version}
    reused = reused_version(context, lake, key)
    if reused:
        return lake_output(reused)
    root = model.resolve(store.home)
    imgsz = builds.model_defaults(root).imgsz
    return lake_output(publish(context, lake, lambda out: export_onnx(root / builds.BEST_WEIGHTS, out, imgsz=imgsz),
                               params={"reuse_key": key, "imgsz": imgsz}, upstream={name: model.version},
                               classes=model.classes))


class SlicedPredictionsConfig(dg.Config):
    """How the cached pass runs. 0 keeps the model's own value: tiles of the size it trained on,
    the full-image pass at the scale it scored whole frames at (the team's models: 640)."""

    backend: str = "auto"  # torch | onnx | auto: onnx on a CPU, torch on a GPU
    slice_size: int = 0
    overlap: float = 0.2
    full_imgsz: int = 0
    conf_floor: float = 0.05  # below every confidence a sweep tries
    batch: int = 16  # tiles a forward, across frames
    reinfer: bool = False  # infer again even when this exact pass is cached


@dg.asset(
    group_name=GROUP, kinds={"pytorch", "parquet"}, partitions_def=MODEL_PARTITIONS, pool="gpu", code_version="1",
    ins={"data": dg.AssetIn(EVALUATION_DATA), "export": dg.AssetIn("model_export")}, deps=MODEL_DEPS,
    description=f"Raw sliced and full-image detections of the partition's model on {EVALUATION_DATA}'s val "
                "frames, cached once: every sweep reads them.",
)
def sliced_predictions(context: dg.AssetExecutionContext, config: SlicedPredictionsConfig, lake: LakeResource,
                       yolo: YoloRuntime, data: LakeHandle, export: LakeHandle) -> dg.Output[LakeHandle]:
    device = resolve_device(yolo.device)
    backend = builds.resolve_backend(config.backend, device)
    name, model = _model(context, lake)
    store = lake.get()
    model_root, data_root = model.resolve(store.home), data.resolve(store.home)
    settings = builds.model_defaults(model_root, config.slice_size, config.full_imgsz, config.overlap, config.conf_floor)
    frames = evaluation_set(data_root)
    key = {"model": model.version, "data": data.version, "frames": frames_key(frames.images),
           "settings": settings.as_dict(), "backend": backend}
    reused = None if config.reinfer else reused_version(context, lake, key)
    if reused:
        return lake_output(reused)
    detector = builds.load_detector(backend, model_root, export.resolve(store.home), device=device,
                                    threads=yolo.threads)
    context.log.info(f"sliced inference of {name} on {len(frames.images)} frames: {settings.as_dict()}, "
                     f"{backend} on {detector.device_name}")
    about = {"model_version": model.version, "dataset_version": data.version, "export_version": export.version}
    return lake_output(publish(
        context, lake,
        lambda out: builds.build_sliced_predictions(detector, frames, settings, out, model=name, dataset=EVALUATION_DATA,
                                                    batch=config.batch, about=about),
        params={"reuse_key": key}, upstream={name: model.version, EVALUATION_DATA: data.version,
                                             "model_export": export.version},
        classes=frames.classes,
    ))


def _evaluation(lake: LakeResource, context: dg.AssetExecutionContext, cache: LakeHandle,
                data: LakeHandle) -> builds.Evaluation:
    home = lake.get().home
    evaluation = builds.Evaluation.load(cache.resolve(home), data.resolve(home), partition_of(context), EVALUATION_DATA)
    computed_on = evaluation.predictions.record.get("dataset_version")
    if computed_on != data.version:
        raise EvaluationError(f"sliced_predictions for {partition_of(context)} was computed on {EVALUATION_DATA} "
                              f"{computed_on}, not the current {data.version}: rematerialize sliced_predictions")
    return evaluation


_SWEEP_INS = {"cache": dg.AssetIn("sliced_predictions"), "data": dg.AssetIn(EVALUATION_DATA)}


@dg.asset(group_name=GROUP, kinds={"pandas"}, partitions_def=MODEL_PARTITIONS, code_version="1", ins=_SWEEP_INS,
          description="P, R, F1 and TP/FP/FN against confidence (the team's 0.15..0.50, and a 0.01 grid) at the "
                      "team's merge (NMS/IOS/0.4), the PR curve and mAP, from the cache.")
def conf_sweep(context: dg.AssetExecutionContext, lake: LakeResource, cache: LakeHandle,
               data: LakeHandle) -> dg.Output[LakeHandle]:
    evaluation = _evaluation(lake, context, cache, data)
    return lake_output(publish(context, lake, lambda out: builds.build_conf_sweep(evaluation, out),
                               upstream={"sliced_predictions": cache.version, EVALUATION_DATA: data.version}))


@dg.asset(group_name=GROUP, kinds={"pandas"}, partitions_def=MODEL_PARTITIONS, code_version="1", ins=_SWEEP_INS,
          description="NMS, NMM and GREEDYNMM x IOU and IOS x 0.3/0.4/0.5 at the team's confidences "
                      "(18 merges x 8 confidences), from the cache.")
def postprocess_sweep(context: dg.AssetExecutionContext, lake: LakeResource, cache: LakeHandle,
                      data: LakeHandle) -> dg.Output[LakeHandle]:
    evaluation = _evaluation(lake, context, cache, data)
    return lake_output(publish(context, lake, lambda out: builds.build_postprocess_sweep(evaluation, out),
                               upstream={"sliced_predictions": cache.version, EVALUATION_DATA: data.version}))


def _rows(lake: LakeResource, handle: LakeHandle, name: str):
    import pandas as pd

    return pd.read_csv(handle.resolve(lake.get().home) / name)


class VerifierCropsConfig(dg.Config):
    """context_margin: share of a box's longer side added on each side of its square crop."""

    context_margin: float = verifier.CONTEXT_MARGIN
    crop_px: int = verifier.CROP_SIZE
    false_positive_conf: float = verifier.FP_CONF
    background_per_frame: int = verifier.BACKGROUND_PER_FRAME
    held_out_share: float = verifier.HELD_OUT_SHARE
    seed: int = verifier.SEED


@dg.asset(group_name=GROUP, kinds={"opencv", "parquet"}, partitions_def=MODEL_PARTITIONS, code_version="1",
          ins={"data": dg.AssetIn(EVALUATION_DATA), "cache": dg.AssetIn("sliced_predictions")},
          description=f"The verifier's crops for the partition's model: {EVALUATION_DATA}'s labelled people with "
                      f"their class, and as '{verifier.BACKGROUND}' the model's background false positives from its "
                      "sliced_predictions and empty person-sized patches, each a square with a context margin; half "
                      "the evaluation frames are held out to score the verifier.")
def verifier_crops(context: dg.AssetExecutionContext, config: VerifierCropsConfig, lake: LakeResource,
                   data: LakeHandle, cache: LakeHandle) -> dg.Output[LakeHandle]:
    settings = verifier.VerifierCropSettings(
        margin=config.context_margin, size=config.crop_px, fp_conf=config.false_positive_conf,
        background_per_frame=config.background_per_frame, held_out_share=config.held_out_share, seed=config.seed)
    key = {"sliced_predictions": cache.version, EVALUATION_DATA: data.version, "settings": settings.as_dict()}
    reused = reused_version(context, lake, key)
    if reused:
        return lake_output(reused)
    evaluation = _evaluation(lake, context, cache, data)
    return lake_output(publish(
        context, lake, lambda out: verifier.build_verifier_crops(data.resolve(lake.get().home), evaluation, out, settings),
        params={"reuse_key": key, **settings.as_dict()}, classes=[*data.classes, verifier.BACKGROUND],
        upstream={EVALUATION_DATA: data.version, "sliced_predictions": cache.version},
    ))


class CropVerifierConfig(dg.Config):
    imgsz: int = VERIFIER_RECIPE.imgsz
    epochs: int = VERIFIER_RECIPE.epochs  # the full profile's; the demo profile trains demo_epochs
    demo_epochs: int = VERIFIER_RECIPE.demo_epochs
    retrain: bool = False


@dg.asset(group_name=GROUP, kinds={"pytorch"}, partitions_def=MODEL_PARTITIONS, pool="gpu", code_version="1",
          description="The second-stage verifier of the partition's model: a crop classifier (ultralytics classify from yolov8n-cls.yaml) of "
                      "people by class and 'background', trained on verifier_crops' fit frames and scored on its "
                      "held-out ones: val/accuracy, per-class P/R/F1, confusion matrix, misclassified crops.")
def crop_verifier(context: dg.AssetExecutionContext, config: CropVerifierConfig, lake: LakeResource,
                  settings: SettingsResource, yolo: YoloRuntime, training_child: TrainingChild,
                  verifier_crops: LakeHandle) -> dg.Output[LakeHandle]:
    recipe = ClassifierRecipe(imgsz=config.imgsz, epochs=config.epochs, demo_epochs=config.demo_epochs)
    return train_crop_classifier(
        context, recipe=recipe, crops=verifier_crops.resolve(lake.get().home), classes=verifier_crops.classes,
        eval_split=verifier.HELD_OUT, upstream={"verifier_crops": verifier_crops.version}, retrain=config.retrain,
        lake=lake, settings=settings, runtime=yolo, child=training_child,
    )


class GateSweepConfig(dg.Config):
    """class_agnostic: a full-image detection of any class vouches for a sliced one (the team's
    gate), or only one of its own class. verifier_thresholds: the verifier's probability of a
    detection's own class it must reach to keep it, each swept; verifier_threshold: the one the
    headline figures are read at."""

    class_agnostic: bool = True
    verifier_thresholds: list[float] = list(verifier.VERIFIER_THRESHOLDS)
    verifier_threshold: float = verifier.DEFAULT_THRESHOLD


@dg.asset(group_name=GROUP, kinds={"pandas"}, partitions_def=MODEL_PARTITIONS, code_version="3",
          ins={**_SWEEP_INS, "postprocess": dg.AssetIn("postprocess_sweep"), "crop_verifier": dg.AssetIn("crop_verifier"),
               "verifier_crops": dg.AssetIn("verifier_crops")},
          description="The full-image gate at 48 conf x radius settings and without it, with recall by person "
                      "size, at the merge and confidence the adoption policy picks from postprocess_sweep; beside "
                      "it, on the verifier's held-out frames, the crop_verifier gate and both together, with the "
                      "milliseconds each adds to a frame.")
def gate_sweep(context: dg.AssetExecutionContext, config: GateSweepConfig, lake: LakeResource,
               adoption: AdoptionPolicy, yolo: YoloRuntime, cache: LakeHandle, data: LakeHandle,
               postprocess: LakeHandle, crop_verifier: LakeHandle, verifier_crops: LakeHandle) -> dg.Output[LakeHandle]:
    policy = adoption.get()
    params = {"policy": policy.as_dict(), "class_agnostic": config.class_agnostic,
              "verifier_thresholds": config.verifier_thresholds, "verifier_threshold": config.verifier_threshold}
    upstream = {"sliced_predictions": cache.version, "postprocess_sweep": postprocess.version,
                EVALUATION_DATA: data.version, "crop_verifier": crop_verifier.version,
                "verifier_crops": verifier_crops.version}
    # the same inputs give the same rows, bar the verifier's timing: reuse them rather than time again
    key = {**params, "upstream": upstream}
    reused = reused_version(context, lake, key)
    if reused:
        return lake_output(reused)
    evaluation = _evaluation(lake, context, cache, data)
    rows = _rows(lake, postprocess, builds.POSTPROCESS_SWEEP_CSV)
    home = lake.get().home
    verifier_gate = verifier.VerifierGate(
        load_classifier(crop_verifier.resolve(home) / BEST_WEIGHTS, resolve_device(yolo.device)),
        verifier.read_verifier_record(verifier_crops.resolve(home))["held_out_frames"],
        tuple(config.verifier_thresholds), config.verifier_threshold)
    return lake_output(publish(
        context, lake,
        lambda out: builds.build_gate_sweep(evaluation, rows, policy, out, config.class_agnostic, verifier_gate),
        params={"reuse_key": key, **params}, upstream=upstream,
    ))


@dg.asset(group_name=GROUP, kinds={"json"}, partitions_def=MODEL_PARTITIONS, code_version="1",
          ins={**_SWEEP_INS, "postprocess": dg.AssetIn("postprocess_sweep"), "gates": dg.AssetIn("gate_sweep")},
          description="The adopted inference setting (slicing, confidence, merge, gate) chosen by the adoption "
                      "policy, with its P/R/F1 with and without the gate; pseudo-labelling uses it.")
def inference_config(context: dg.AssetExecutionContext, lake: LakeResource, adoption: AdoptionPolicy,
                     cache: LakeHandle, data: LakeHandle, postprocess: LakeHandle,
                     gates: LakeHandle) -> dg.Output[LakeHandle]:
    evaluation = _evaluation(lake, context, cache, data)
    policy = adoption.get()
    _, swept_under = builds.read_sweep_base(gates.resolve(lake.get().home))
    if swept_under != policy:
        raise EvaluationError(f"gate_sweep for {partition_of(context)} was swept under policy {swept_under}, the "
                              f"adoption resource now says {policy}: rematerialize gate_sweep first")
    model = partition_of(context)
    about = {"model": model, "model_version": evaluation.predictions.record.get("model_version"),
             "sliced_predictions": cache.version}
    return lake_output(publish(
        context, lake,
        lambda out: builds.build_inference_config(
            evaluation, _rows(lake, postprocess, builds.POSTPROCESS_SWEEP_CSV),
            _rows(lake, gates, builds.GATE_SWEEP_CSV), policy, out, about=about),
        params={"policy": policy.as_dict()},
        upstream={"sliced_predictions": cache.version, "postprocess_sweep": postprocess.version,
                  "gate_sweep": gates.version, EVALUATION_DATA: data.version},
    ))


@dg.asset(group_name=GROUP, kinds={"pandas"}, partitions_def=MODEL_PARTITIONS, pool="gpu", code_version="1",
          ins={**_SWEEP_INS, "adopted": dg.AssetIn("inference_config"), "export": dg.AssetIn("model_export")},
          deps=MODEL_DEPS,
          description="The team's card for the partition's model: sliced P/R/F1 at the adopted setting with and "
                      "without the gate, per class, confusion matrices, speed per backend on the yolo device, "
                      "frames and failures, the worst false positives and misses as pictures.")
def model_report_card(context: dg.AssetExecutionContext, lake: LakeResource, yolo: YoloRuntime, cache: LakeHandle,
                      data: LakeHandle, adopted: LakeHandle, export: LakeHandle) -> dg.Output[LakeHandle]:
    name, model = _model(context, lake)
    store = lake.get()
    # the same inputs give the same card, bar the side run's timing: reuse it rather than time again
    key = {"model": model.version, "sliced_predictions": cache.version, "inference_config": adopted.version,
           "model_export": export.version, EVALUATION_DATA: data.version}
    reused = reused_version(context, lake, key)
    if reused:
        return lake_output(reused)
    evaluation = _evaluation(lake, context, cache, data)
    home = store.home
    setting = builds.read_inference_config(adopted.resolve(home))
    record = evaluation.predictions.record
    settings = InferenceSettings(**record["settings"])
    speeds = [record["speed"]]
    for backend in (b for b in BACKENDS if b != record["speed"]["backend"]):  # a short side run for the others
        detector = builds.load_detector(backend, model.resolve(home), export.resolve(home),
                                        device=resolve_device(yolo.device), threads=yolo.threads)
        speeds.append(builds.measure_speed(detector, evaluation.data.images[:builds.SPEED_FRAMES], settings,
                                           batch=record["speed"]["batch"]))
    return lake_output(publish(
        context, lake,
        lambda out: builds.build_report_card(evaluation, setting, speeds, out, model=name, model_version=model.version),
        params={"reuse_key": key},
        upstream={name: model.version, "sliced_predictions": cache.version, "inference_config": adopted.version,
                  EVALUATION_DATA: data.version},
    ))


def report_cards(store: Lake, models: dict[str, LakeHandle]) -> dict[str, tuple[str, dict]]:
    """The newest report card (version, card) of each model's current version, for the models that have one."""
    cards = {}
    for name, handle in models.items():
        card = store.find_version(
            "model_report_card", lambda info: (info.get("upstream") or {}).get(name) == handle.version, name)
        if card is not None:
            cards[name] = card.version, json.loads((card.resolve(store.home) / builds.REPORT_CARD_FILE).read_text())
    return cards


@dg.asset(group_name="models", kinds={"pandas"}, code_version="3", deps=[*MODEL_DEPS, "model_report_card"])
def model_comparison(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.Output[LakeHandle]:
    """Every model's validation metrics side by side, overall and per class, like the team's table;
    with the sliced evaluation's figures (adopted setting, P/R/F1, ms a frame per backend) for
    each model whose current version has a report card. A model not trained yet (a retrained one
    before its first review round) is left out."""
    models = {name: lake.recorded(name) for name in MODEL_PARTITIONS.get_partition_keys() if lake.is_recorded(name)}
    store = lake.get()
    cards = report_cards(store, models)
    return lake_output(publish(
        context, lake,
        lambda out: build_comparison({name: handle.resolve(store.home) for name, handle in models.items()}, out,
                                     extra={name: builds.sliced_columns(card) for name, (_, card) in cards.items()}),
        upstream={name: handle.version for name, handle in models.items()}
        | {f"model_report_card[{name}]": version for name, (version, _) in cards.items()},
    ))
