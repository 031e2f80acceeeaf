"""The embedded demo site: a synthetic stand-in for the user's construction-site data.

It generates, from a seed, what the team works with: 1920x1080 JPEG snapshots from two fixed
CCTV cameras full of small workers with and without hard hats, four CVAT exports of the
labelled ones (boxes and masks, with the recurring false boxes of their pre-annotations,
cross-part duplicates and one conflict), a generic YOLO helmet dataset ("v13"), and two days
of continuous captures with bursts, frozen-frame runs and static stretches, plus exact ground
truth for all of it. No network, fonts or downloaded data; no dagster import.
"""

from hoban_pipelines.demo.profiles import PROFILES, SiteProfile
from hoban_pipelines.demo.site import GENERATOR_VERSION, generate_site

__all__ = ["GENERATOR_VERSION", "PROFILES", "SiteProfile", "generate_site"]
