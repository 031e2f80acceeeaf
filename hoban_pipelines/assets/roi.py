"""The video-ROI workflow as assets: the team's crop dataset from labelled fixed-camera videos
(``roi_crops``) and the classifier trained on it (``roi_classifier``).

The videos are an observed input (``roi_videos`` in the inputs group); the crops are rebuilt
when their folder changes, the classifier when the crops do.
"""

import pandas as pd

import dagster as dg

from hoban_pipelines.assets.classifiers import train_crop_classifier
from hoban_pipelines.assets.inputs import ROI_VIDEO_SUFFIXES
from hoban_pipelines.assets.publishing import lake_output, publish
from hoban_pipelines.core.fingerprints import fingerprint_folder
from hoban_pipelines.core.lake import LakeHandle
from hoban_pipelines.resources import LakeResource, SettingsResource, TrainingChild, YoloRuntime
from hoban_pipelines.roi import crops as roi_crops_rules
from hoban_pipelines.roi.crops import CROPS_TABLE, TEST, build_roi_crops
from hoban_pipelines.roi.videos import read_roi_videos
from hoban_pipelines.training.classifier import ClassifierRecipe

GROUP = "roi"
# ROI crops are small (the demo's zones: 112 x 136): 64 px keeps their detail at a fraction of 224's cost
ROI_CLASSIFIER = ClassifierRecipe(imgsz=64, epochs=40, demo_epochs=10)


class RoiCropsConfig(dg.Config):
    """The team's sampling rule (video_roi_dataset_readme)."""

    target: int = roi_crops_rules.TARGET_CROPS_PER_ROI
    ratio_false: float = roi_crops_rules.LABEL_RATIOS["false"]
    ratio_true: float = roi_crops_rules.LABEL_RATIOS["true"]
    ratio_unknown: float = roi_crops_rules.LABEL_RATIOS["unknown"]
    cooldown: int = roi_crops_rules.COOLDOWN_FRAMES
    min_motion: float = roi_crops_rules.MIN_MOTION_MAD
    max_hash_distance: int = roi_crops_rules.MAX_HASH_DISTANCE
    real_test_crops: int = roi_crops_rules.REAL_TEST_CROPS
    seed: int = roi_crops_rules.SEED


@dg.asset(group_name=GROUP, kinds={"opencv", "parquet"}, code_version="1", deps=["roi_videos"])
def roi_crops(context: dg.AssetExecutionContext, config: RoiCropsConfig, lake: LakeResource,
              settings: SettingsResource) -> dg.Output[LakeHandle]:
    """Per video and ROI, crops sampled by the team's rule (label ratios, motion, cooldown,
    average-hash near-duplicates, random top-up), simulation videos for train and 500 random
    real crops for test; crops.parquet, counts per rule and a contact sheet per label."""
    folder = settings.get().require("roi_videos", "folder of ROI videos with their JSON specs")
    videos = read_roi_videos(folder)
    ratios = {"false": config.ratio_false, "true": config.ratio_true, "unknown": config.ratio_unknown}
    params = config.model_dump()
    return lake_output(publish(
        context, lake,
        lambda out: build_roi_crops(videos, out, target=config.target, ratios=ratios, seed=config.seed,
                                    real_test_crops=config.real_test_crops, cooldown=config.cooldown,
                                    min_motion=config.min_motion, max_hash_distance=config.max_hash_distance),
        params=params, upstream={"roi_videos": fingerprint_folder(folder, ROI_VIDEO_SUFFIXES, content=True).version},
        classes=videos.labels,
    ))


class RoiClassifierConfig(dg.Config):
    imgsz: int = ROI_CLASSIFIER.imgsz
    epochs: int = ROI_CLASSIFIER.epochs  # the full profile's; the demo profile trains demo_epochs
    demo_epochs: int = ROI_CLASSIFIER.demo_epochs
    retrain: bool = False  # train again even when this exact job has a published version


@dg.asset(group_name=GROUP, kinds={"pytorch"}, pool="gpu", code_version="1")
def roi_classifier(context: dg.AssetExecutionContext, config: RoiClassifierConfig, lake: LakeResource,
                   settings: SettingsResource, yolo: YoloRuntime, training_child: TrainingChild,
                   roi_crops: LakeHandle) -> dg.Output[LakeHandle]:
    """A classifier of the ROI crops (ultralytics classify from yolov8n-cls.yaml, no pretrained
    weights) trained on the simulation crops, scored on the real test crops: val/accuracy,
    per-class P/R/F1, the confusion matrix and the misclassified crops."""
    root = roi_crops.resolve(lake.get().home)
    labels = sorted(pd.read_parquet(root / CROPS_TABLE)["label"].unique())
    recipe = ClassifierRecipe(imgsz=config.imgsz, epochs=config.epochs, demo_epochs=config.demo_epochs)
    return train_crop_classifier(
        context, recipe=recipe, crops=root, classes=labels, eval_split=TEST, upstream={"roi_crops": roi_crops.version},
        retrain=config.retrain, lake=lake, settings=settings, runtime=yolo, child=training_child,
    )
