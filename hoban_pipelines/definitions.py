"""The one Definitions object of the hoban_pipelines code location."""

from __future__ import annotations

import dagster as dg

from hoban_pipelines.assets import datasets, demo, evaluation, inputs, labels, training
from hoban_pipelines.assets.datasets import load_recipe_assets
from hoban_pipelines.jobs import all_jobs
from hoban_pipelines.resources import AdoptionPolicy, LakeHandleIOManager, LakeResource, SettingsResource, YoloRuntime

recipe_assets, recipe_checks = load_recipe_assets()

defs = dg.Definitions(
    assets=[*dg.load_assets_from_modules([demo, inputs, labels, datasets, training, evaluation]), *recipe_assets],
    asset_checks=[*dg.load_asset_checks_from_modules([labels, datasets]), *recipe_checks],
    jobs=all_jobs,
    resources={
        "lake": LakeResource(),
        "settings": SettingsResource(),
        "io_manager": LakeHandleIOManager(),
        "yolo": YoloRuntime(),
        "adoption": AdoptionPolicy(),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
    },
)
