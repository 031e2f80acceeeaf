"""Sizes of a generated demo site. The simulated world depends only on the seed; a profile
only decides how many frames are sampled from it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SiteProfile:
    name: str
    snapshots_per_camera: int
    labelled_per_camera: int
    # Near-duplicate snapshot groups (same camera, 1-3 s apart), across both cameras.
    labelled_near_duplicate_groups: int
    unlabelled_near_duplicate_groups: int
    # Images that appear in two CVAT parts with identical labels (besides the one conflict).
    cross_part_duplicates: int
    base_train_images: int
    base_val_images: int
    captures_per_camera_per_day: int
    frozen_runs_per_camera_per_day: int
    # Captures taken while the site is empty at lunch: a live but static stretch.
    lunch_captures_per_camera_per_day: int
    bursts_per_camera_per_day: int
    # Capture timestamps that equal a labelled snapshot's, per camera and day.
    snapshot_matches_per_camera_per_day: int


PROFILES: dict[str, SiteProfile] = {
    # `make demo`: the whole downstream pipeline, YOLO training included, fits in ~15 min on 2 CPU cores.
    "demo": SiteProfile(
        "demo", snapshots_per_camera=116, labelled_per_camera=60, labelled_near_duplicate_groups=2,
        unlabelled_near_duplicate_groups=4, cross_part_duplicates=4, base_train_images=300, base_val_images=60,
        captures_per_camera_per_day=150, frozen_runs_per_camera_per_day=3, lunch_captures_per_camera_per_day=8,
        bursts_per_camera_per_day=4, snapshot_matches_per_camera_per_day=2),
    # Tests: generation in a few seconds.
    "small": SiteProfile(
        "small", snapshots_per_camera=12, labelled_per_camera=8, labelled_near_duplicate_groups=1,
        unlabelled_near_duplicate_groups=1, cross_part_duplicates=2, base_train_images=30, base_val_images=8,
        captures_per_camera_per_day=15, frozen_runs_per_camera_per_day=1, lunch_captures_per_camera_per_day=3,
        bursts_per_camera_per_day=1, snapshot_matches_per_camera_per_day=1),
}


def get_profile(name: str) -> SiteProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown demo profile {name!r}; known profiles: {', '.join(sorted(PROFILES))}"
        ) from None
