"""Every asset and asset check of the code location: what definitions.py serves, and what jobs.py
reads each job's pools from."""

import dagster as dg

from hoban_pipelines.assets import (
    captures, datasets, demo, evaluation, inputs, labels, promotion, retraining, review, roi, training,
)
from hoban_pipelines.assets.datasets import load_recipe_assets

recipe_assets, recipe_checks = load_recipe_assets()

all_assets = [
    *dg.load_assets_from_modules([demo, inputs, labels, datasets, training, evaluation, captures, review, retraining,
                                  promotion, roi]),
    *recipe_assets,
]
all_asset_checks = [*dg.load_asset_checks_from_modules([labels, datasets, retraining]), *recipe_checks]
