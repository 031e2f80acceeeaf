"""The embedded demo site: synthetic CCTV data shaped like the team's, standing in for their NAS."""

import dagster as dg

from hoban_pipelines.demo import GENERATOR_VERSION
from hoban_pipelines.demo.install import install_site
from hoban_pipelines.core.lake import LakeHandle
from hoban_pipelines.assets.publishing import Published, asset_name, lake_output
from hoban_pipelines.core.report import BuildReport
from hoban_pipelines.resources import LakeResource, SettingsResource

DEMO_SITE_DIR = "demo_site"


class DemoSiteConfig(dg.Config):
    replace: bool = False  # rename an existing, different demo site aside and generate anew


@dg.asset(group_name="demo", kinds={"python"}, code_version=GENERATOR_VERSION)
def demo_site(
    context: dg.AssetExecutionContext, config: DemoSiteConfig, lake: LakeResource, settings: SettingsResource
) -> dg.Output[LakeHandle]:
    """Two CCTV cameras' snapshots with four CVAT exports, a generic YOLO helmet dataset and
    two days of captures with frozen-frame runs, written to ``$HOBAN_HOME/demo_site`` (the
    default settings point there). Seed and size come from ``demo_seed``/``demo_profile``."""
    configured = settings.get()
    store = lake.get()
    store.ensure_writable()
    site = store.home / DEMO_SITE_DIR
    summary, status = install_site(site, seed=configured.demo_seed, profile=configured.demo_profile, replace=config.replace)
    context.log.info(f"demo site {status}: {site}")
    counts = {k: v for k, v in summary["counts"].items() if isinstance(v, int)}
    # the site is installed in place (it is the settings' default input), not a lake version
    handle = store.handle_for(
        site, asset=asset_name(context), counts=counts,
        version=f"{summary['profile']}-seed{summary['seed']}-{GENERATOR_VERSION.replace(' ', '-')}",
    )
    report = BuildReport(counts=counts, details={"status": status, "summary": summary})
    return lake_output(Published(handle=handle, root=site, reused=status == "up to date", report=report))
