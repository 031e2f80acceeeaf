"""Dagster resources: the lake (storage root and handle IO manager), the user's settings, the YOLO runtime."""

from hoban_pipelines.resources.lake import LakeHandleIOManager, LakeResource
from hoban_pipelines.resources.settings import SettingsResource
from hoban_pipelines.resources.runtime import YoloRuntime

__all__ = ["LakeHandleIOManager", "LakeResource", "SettingsResource", "YoloRuntime"]
