"""The one Definitions object of the hoban_pipelines code location."""

from __future__ import annotations

import os

import dagster as dg

from hoban_pipelines.assets.catalog import all_asset_checks, all_assets
from hoban_pipelines.jobs import all_jobs, all_schedules, all_sensors
from hoban_pipelines.resources import (
    AdoptionPolicy, CvatResource, LakeHandleIOManager, LakeResource, SettingsResource, TrainingChild, YoloRuntime,
)

CVAT_ENV = {"host": "CVAT_HOST", "username": "CVAT_USERNAME", "password": "CVAT_PASSWORD"}

defs = dg.Definitions(
    assets=all_assets,
    asset_checks=all_asset_checks,
    jobs=all_jobs,
    schedules=all_schedules,
    sensors=all_sensors,
    resources={
        "lake": LakeResource(),
        "settings": SettingsResource(),
        "io_manager": LakeHandleIOManager(),
        "yolo": YoloRuntime(),
        "adoption": AdoptionPolicy(),
        # a secret stays an EnvVar (never shown in the UI); unset, no CVAT server is contacted
        "cvat": CvatResource(**{field: dg.EnvVar(variable) for field, variable in CVAT_ENV.items() if os.getenv(variable)}),
        "training_child": TrainingChild(),
    },
)
