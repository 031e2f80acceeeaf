"""The embedded demo site: synthetic CCTV data shaped like the team's, standing in for their NAS."""

import dagster as dg

from hoban_pipelines.demo import GENERATOR_VERSION
from hoban_pipelines.demo.install import install_site
from hoban_pipelines.core.lake import LakeHandle
from hoban_pipelines.assets.publishing import lake_output
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
    site = settings.get()
    store = lake.get()
    store.ensure_writable()
    summary, status = install_site(
        store.home / DEMO_SITE_DIR, seed=site.demo_seed, profile=site.demo_profile, replace=config.replace
    )
    context.log.info(f"demo site {status}: {store.home / DEMO_SITE_DIR}")
    handle = store.handle_for(
        store.home / DEMO_SITE_DIR,
        asset="demo_site",
        version=f"{summary['profile']}-seed{summary['seed']}-{GENERATOR_VERSION.replace(' ', '-')}",
        counts={k: v for k, v in summary["counts"].items() if isinstance(v, int)},
    )
    return lake_output(handle, {"status": status, "summary": dg.MetadataValue.json(summary)})
