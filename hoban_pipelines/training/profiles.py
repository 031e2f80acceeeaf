"""Run sizes: how the 'full', 'demo' and 'test' profiles size a recipe (``for_profile``), the
demo's measured sizes per device (``DEMO_SIZES``), and the image size a tiled model is scored at.

A run is sized in two steps, each fact computed once: ``for_profile`` fixes what the training
view is built from (image size, tiles, the share of label-free tiles, the sample budget), and
``RunSize.trained_on`` the epochs once the view's entries are counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from hoban_pipelines.training.recipes import TrainingError, TrainRecipe

PROFILES = ("full", "demo", "test")

# demo: `make demo` trains a base model from scratch and the go2k models on 2 CPU cores.
# Measured on the demo base dataset (300 train / 60 val 640x640 images, batch 16, 2 cores, one
# torch thread): an epoch takes about 33 s at imgsz 320 and 145 s at 640, so 640 is out of reach.
# On whole 1920x1080 frames at 256-320 the go2k people (20-80 px) are 3-13 px and the go2k
# models score mAP50 0.000, so the demo trains them on tiles.
# Measured on 2 cores, go2k_v2 from the demo's base model, mAP50 on go2k_split's 23 whole valid
# frames (helmet / no helmet); all but the last on the site generator's previous version (1.0):
# - 512-px tiles at 256 (people at half size, scored at 960), ~5,300 samples: 0.27 (0.41 / 0.12);
#   on an H100 such half-size tiles needed ~12,400 samples for 0.50.
# - 256-px tiles at 256 (native size, scored at 1920): the base model alone scores 0.30; after
#   one epoch of every tile (8,589, the base set's images tiled too) 0.22. Left whole, the base
#   images keep their people's heads (a cut-off body still carried its helmet class), and 80% of
#   the label-free tiles are left out: 2 epochs of 2,017 entries reach 0.28, 4 epochs 0.52.
# - ultralytics accumulates gradients up to a nominal batch of 64, so a batch-16 run of 8,000
#   samples stepped the optimizer 125 times; stepping every batch (nbs = batch) gave the base
#   model 0.55 instead of 0.48 on its val in the same 12 epochs (0.40 instead of 0.30 on the
#   go2k frames before any finetuning). Its warmup (3 epochs, at least 100 iterations) would
#   cover a whole short run: the demo warms up for a tenth of the run (the 100 still apply).
# - Through `make demo` (all of the above): go2k_v2 4 epochs of 2,086 entries, 0.51 (0.85 /
#   0.17), about 6.5 min of the 15. The side runs (finetunes, go2k_v3) get 800 samples each.
@dataclass(frozen=True)
class DemoSize:
    max_imgsz: int  # CCTV recipes train on tiles of this size at this size: people keep their pixels
    max_epochs: int
    sample_budget: int  # training samples a finetune sees (epochs x entries)
    background_tiles: float  # share of label-free tiles kept
    step_every_batch: bool  # nbs = batch: no gradient accumulation


DEMO_SIZES = {
    "cpu": DemoSize(max_imgsz=256, max_epochs=12, sample_budget=4000,
                    background_tiles=0.2, step_every_batch=True),
    # On a GPU the same 15 minutes buy bigger tiles at native scale: measured on an H100 with the
    # real child, 30 epochs of 640 tiles at 640 from the demo's go2k frames (1,480 tiles, 6-7 s an
    # epoch, 204 s in all) reach mAP50 0.984 on whole frames at 1920 (a base model from
    # scratch: 30 epochs, 0.59 on the base valid, 49 s).
    "cuda": DemoSize(max_imgsz=640, max_epochs=30, sample_budget=45_000,
                     background_tiles=1.0, step_every_batch=False),
}
DEMO_WARMUP_SHARE = 0.1
# test: one epoch at the smallest size ultralytics trains at (two strides of 32)
TEST_EPOCHS = 1
TEST_IMGSZ = 64


def device_kind(device: str) -> str:
    """'cpu' or 'cuda', the keys of ``DEMO_SIZES``: the demo profile sizes a run per kind of device."""
    return "cpu" if device == "cpu" else "cuda"


@dataclass(frozen=True)
class RunSize:
    """A recipe at a profile's size.

    ``recipe`` is what the training view is built from (image size, tiles, label-free share) and
    trains at most the profile's epochs; the view keeps ``sample_budget`` training entries (0: all).
    ``trained_on`` is the recipe as trained on the view that was built.
    """

    recipe: TrainRecipe
    sample_budget: int = 0  # training samples the run spends (epochs x entries); 0: the recipe's epochs
    warmup_share: float | None = None  # warmup epochs as a share of the epochs; None: the recipe's own

    def trained_on(self, train_entries: int) -> TrainRecipe:
        """The recipe for a view of ``train_entries`` training entries (tiles and oversampled copies
        included): the sample budget spent as fewer epochs over more entries, the warmup a share of them."""
        recipe = self.recipe
        if self.sample_budget and train_entries:
            recipe = replace(recipe, epochs=min(recipe.epochs, max(1, round(self.sample_budget / train_entries))))
        if self.warmup_share is not None:
            warmup = {"warmup_epochs": round(self.warmup_share * recipe.epochs, 2)}
            recipe = replace(recipe, extra={**warmup, **recipe.extra})  # the recipe's own word wins
        return recipe


def for_profile(recipe: TrainRecipe, profile: str, *, device: str = "cpu", finetune: bool = False) -> RunSize:
    """The recipe at a run size: 'full' as written, 'demo' fits the demo's 15 minutes on ``device``
    (2 CPU cores, or one GPU), 'test' is one tiny epoch.

    In the demo a ``finetune`` (from a checkpoint) spends the recipe's share of samples
    (``demo_samples``), if need be less than an epoch; training from scratch needs all its epochs.
    """
    if profile == "full":
        return RunSize(recipe)
    if profile == "demo":
        size = DEMO_SIZES[device_kind(device)]
        imgsz = min(recipe.imgsz, size.max_imgsz)
        if recipe.demo_tiles:
            recipe = replace(recipe, tile=imgsz, background_tiles=size.background_tiles)
        short_run = {"nbs": recipe.batch} if size.step_every_batch else {}
        epochs = min(recipe.epochs, size.max_epochs)
        sized = replace(recipe, epochs=epochs, imgsz=imgsz, extra={**short_run, **recipe.extra})
        budget = demo_samples(recipe, device) if finetune else 0
        return RunSize(sized, sample_budget=budget, warmup_share=DEMO_WARMUP_SHARE)
    if profile == "test":
        return RunSize(replace(recipe, epochs=TEST_EPOCHS, imgsz=TEST_IMGSZ))
    raise TrainingError(f"unknown training profile {profile!r}; known: {list(PROFILES)}")


def demo_samples(recipe: TrainRecipe, device: str) -> int:
    """Training samples a finetune sees in the demo profile: several epochs of a small set, or
    one epoch of a fixed sample of a larger one (the training view draws it)."""
    return round(DEMO_SIZES[device_kind(device)].sample_budget * recipe.demo_weight)


def evaluation_imgsz(recipe: TrainRecipe, longest_side: int) -> int:
    """The image size whole images are evaluated at: the scale the model trained at.

    A model trained on ``tile``-pixel tiles at ``imgsz`` saw people at ``imgsz / tile`` of their
    size, so whole frames are evaluated at ``longest_side * imgsz / tile`` (a multiple of 32).
    Images the recipe does not tile (no longer than ``tile_over``) trained whole at ``imgsz``.
    """
    if not recipe.tile or longest_side <= max(recipe.tile, recipe.tile_over):
        return recipe.imgsz
    return 32 * math.ceil(recipe.imgsz * longest_side / recipe.tile / 32)
