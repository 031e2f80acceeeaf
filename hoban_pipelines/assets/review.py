"""The review packages as an asset: CVAT tasks of go2k_manual and the pseudo-labelled captures.

The packages are built in the lake whether or not a CVAT server is configured; with one (the
``cvat`` resource), each package also becomes a task there, and the task ids are in the
materialization's metadata.
"""

import dagster as dg

from hoban_pipelines.assets.captures import REVIEW_GROUP
from hoban_pipelines.assets.publishing import lake_output, publish, reused_version
from hoban_pipelines.core.lake import LakeHandle
from hoban_pipelines.core.report import Table
from hoban_pipelines.resources import CvatResource, LakeResource
from hoban_pipelines.review.packages import upload_review_packages
from hoban_pipelines.review.round import build_review_round


class ReviewPackagesConfig(dg.Config):
    max_images: int = 1200  # images a CVAT task (the team's parts: 1,202, 1,202, 1,200)
    include_go2k_manual: bool = True  # go2k_manual's images first, for a second look at the hand labels
    upload_again: bool = False  # with a CVAT server: create tasks for packages already built (and uploaded) before


@dg.asset(group_name=REVIEW_GROUP, kinds={"cvat"}, code_version="1",
          ins={"selection": dg.AssetIn("captures_selection")})
def cvat_review_packages(context: dg.AssetExecutionContext, lake: LakeResource, cvat: CvatResource,
                         config: ReviewPackagesConfig, go2k_manual: LakeHandle, selection: LakeHandle,
                         pseudo_labels: LakeHandle) -> dg.Output:
    """CVAT task packages of at most ``max_images`` images, go2k_manual first, then the captures in
    the selection's order: each a zip of the images and CVAT 1.1 XML pre-annotations (the
    detection score as an attribute), and a manifest of which image went to which task."""
    home = lake.get().home
    classes = pseudo_labels.classes
    labelled = go2k_manual.resolve(home) if config.include_go2k_manual else None
    upstream = {"go2k_manual": go2k_manual.version, "captures_selection": selection.version,
                "pseudo_labels": pseudo_labels.version}
    key = {**upstream, "max_images": config.max_images, "include_go2k_manual": config.include_go2k_manual}
    published = reused_version(context, lake, key) or publish(
        context, lake,
        lambda out: build_review_round(labelled, selection.resolve(home), pseudo_labels.resolve(home), classes, out,
                                       config.max_images),
        params={"reuse_key": key}, classes=classes, upstream=upstream,
    )
    if cvat.configured and published.reused and not config.upload_again:
        context.log.info(f"these packages are version {published.handle.version}, uploaded when first built; "
                         "set upload_again to create their tasks once more")
    elif cvat.configured:
        with cvat.client() as client:
            created = upload_review_packages(published.root, client, project_id=cvat.project_id or None)
        context.log.info(f"created {len(created)} CVAT tasks on {cvat.host}")
        published.report.details["cvat_tasks"] = Table(created, list(created[0]) if created else ["name"])
    return lake_output(published)
