"""Put a generated demo site in place atomically, and never over a different one silently."""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path

from hoban_pipelines.demo.site import GENERATOR_VERSION, generate_site
from hoban_pipelines.core.lake import publish_directory

SITE_FILE = "site.json"
log = logging.getLogger(__name__)


class SiteExistsError(RuntimeError):
    """The target holds something other than the requested site."""


def install_site(target: Path, *, seed: int, profile: str, replace: bool = False) -> tuple[dict, str]:
    """Generate the site into ``target``; returns its summary and 'created', 'up to date' or 'replaced'.

    An existing identical site (same seed, profile and generator version) is reused. A different
    one, or a folder that is not a site, is kept: with ``replace`` it is renamed aside to
    ``<target>.replaced-<UTC time>``, otherwise a SiteExistsError says how to proceed.
    """
    target = Path(target).resolve()
    status = "created"
    if target.exists():
        site_file = target / SITE_FILE
        existing = json.loads(site_file.read_text()) if site_file.is_file() else None
        wanted = {"seed": seed, "profile": profile, "generator_version": GENERATOR_VERSION}
        if existing is not None and all(existing.get(k) == v for k, v in wanted.items()):
            return existing, "up to date"
        if not replace:
            what = (
                f"a demo site with seed={existing.get('seed')} profile={existing.get('profile')} "
                f"generator {existing.get('generator_version')}"
                if existing
                else "files that are not a demo site"
            )
            raise SiteExistsError(
                f"{target} already holds {what}; asked for seed={seed} profile={profile} "
                f"generator {GENERATOR_VERSION}. Move it away, choose another folder, or ask for "
                "replacement (--replace, or replace: true on the demo_site asset), which renames "
                "the old folder aside instead of deleting it."
            )
        aside = target.with_name(f"{target.name}.replaced-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}")
        os.rename(target, aside)
        log.warning("moved the previous demo site %s aside to %s", target, aside)
        status = "replaced"
    with publish_directory(target) as staging:
        summary = generate_site(staging, seed=seed, profile=profile)
    return summary, status
