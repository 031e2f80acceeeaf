"""Dagster resources: the lake (storage root and handle IO manager), the user's settings, the YOLO
runtime, where the training child runs (a subprocess or a Kubernetes pod), the policy the
evaluation adopts an inference setting by, and the team's CVAT server."""

from hoban_pipelines.resources.adoption import AdoptionPolicy
from hoban_pipelines.resources.cvat import CvatResource
from hoban_pipelines.resources.kubernetes import TrainingChild
from hoban_pipelines.resources.lake import LakeHandleIOManager, LakeResource
from hoban_pipelines.resources.settings import SettingsResource
from hoban_pipelines.resources.runtime import YoloRuntime

__all__ = ["AdoptionPolicy", "CvatResource", "LakeHandleIOManager", "LakeResource", "SettingsResource", "TrainingChild",
           "YoloRuntime"]
