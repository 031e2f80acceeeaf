"""Dagster resources: the lake (storage root and handle IO manager) and the user's settings."""

from hoban_pipelines.resources.lake import LakeHandleIOManager, LakeResource
from hoban_pipelines.resources.settings import SettingsResource

__all__ = ["LakeHandleIOManager", "LakeResource", "SettingsResource"]
