"""The team's inputs as observed source assets: a new data version whenever their folders change."""

import dagster as dg

from hoban_pipelines.core.fingerprints import fingerprint_folder
from hoban_pipelines.core.yolo_format import IMAGE_SUFFIXES
from hoban_pipelines.resources import SettingsResource

ROI_VIDEO_SUFFIXES = (".json", ".avi", ".mp4", ".mov", ".mkv")


def _observe(settings: SettingsResource, key: str, what: str, suffixes=None) -> dg.ObserveResult:
    path = settings.get().require(key, what)
    fingerprint = fingerprint_folder(path, suffixes, content=True)
    return dg.ObserveResult(
        data_version=dg.DataVersion(fingerprint.version),
        metadata={
            "path": dg.MetadataValue.path(str(path)),
            "files": fingerprint.files,
            "bytes": fingerprint.bytes,
            "by_suffix": dg.MetadataValue.json(fingerprint.by_suffix),
        },
    )


@dg.observable_source_asset(group_name="inputs", description="CVAT exports (XML or export .zip), one per labelling part: setting `cvat_exports`.")
def cvat_exports(settings: SettingsResource) -> dg.ObserveResult:
    return _observe(settings, "cvat_exports", "folder of CVAT exports", (".xml", ".zip"))


@dg.observable_source_asset(group_name="inputs", description="The CCTV snapshots the CVAT exports name: setting `snapshots`.")
def snapshots(settings: SettingsResource) -> dg.ObserveResult:
    return _observe(settings, "snapshots", "folder of labelled snapshots", IMAGE_SUFFIXES)


@dg.observable_source_asset(group_name="inputs", description='The generic helmet dataset ("v13") in YOLO layout: setting `base_dataset`.')
def base_dataset(settings: SettingsResource) -> dg.ObserveResult:
    return _observe(settings, "base_dataset", "YOLO dataset folder (with data.yaml)")


@dg.observable_source_asset(group_name="inputs", description="Continuous capture folders, one per camera: setting `captures`.")
def capture_folders(settings: SettingsResource) -> dg.ObserveResult:
    configured = settings.get()
    prints = {
        cam: fingerprint_folder(configured.require(f"captures.{cam}", f"capture folder of {cam}"), IMAGE_SUFFIXES)
        for cam in sorted(configured.captures)
    }
    combined = "-".join(p.version[:8] for p in prints.values())
    return dg.ObserveResult(
        data_version=dg.DataVersion(combined),
        metadata={f"files/{cam}": p.files for cam, p in prints.items()},
    )


@dg.observable_source_asset(group_name="inputs", description="Fixed-camera videos with a JSON spec each (ROIs, labelled "
                            "segments) for the ROI classifier: setting `roi_videos`.")
def roi_videos(settings: SettingsResource) -> dg.ObserveResult:
    return _observe(settings, "roi_videos", "folder of ROI videos with their JSON specs", ROI_VIDEO_SUFFIXES)
