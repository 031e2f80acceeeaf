"""Dagster resources: the lake (storage root and handle IO manager), the user's settings, the YOLO
runtime, and the policy the evaluation adopts an inference setting by."""

from hoban_pipelines.resources.adoption import AdoptionPolicy
from hoban_pipelines.resources.lake import LakeHandleIOManager, LakeResource
from hoban_pipelines.resources.settings import SettingsResource
from hoban_pipelines.resources.runtime import YoloRuntime

__all__ = ["AdoptionPolicy", "LakeHandleIOManager", "LakeResource", "SettingsResource", "YoloRuntime"]
