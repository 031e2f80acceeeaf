"""The one publishing path: the asset's name from the context, what the version records, and
metadata a person reads (tables with a schema, rounded numbers, small previews, nothing
repeated for a reused version), through real materializations on a real instance."""

import json
from pathlib import Path

import cv2
import dagster as dg
import numpy as np

from hoban_pipelines.assets.publishing import lake_output, publish
from hoban_pipelines.core.lake import Lake, LakeHandle
from hoban_pipelines.core.report import BuildReport, Picture, Table
from hoban_pipelines.resources import LakeHandleIOManager, LakeResource


def _build(folder):
    rng = np.random.default_rng(0)  # noise: a PNG that does not compress, as large as a real sample grid
    cv2.imwrite(str(folder / "grid.png"), rng.integers(0, 255, (1400, 1920, 3), dtype=np.uint8))
    return BuildReport(
        counts={"images": 3},
        details={
            "score": 0.5309583816562584,
            "per_split": Table([{"split": "train", "images": 2, "share": 2 / 3}, {"split": "val", "images": 1, "share": 1 / 3}],
                               ["split", "images", "share"]),
            "grid": Picture("grid.png", "samples"),
            "settings": {"seed": 0},
        },
        warnings=["one thing to know"],
    )


@dg.asset
def reported_set(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.Output[LakeHandle]:
    return lake_output(publish(context, lake, _build, params={"seed": 0}, upstream={"src": "v1"}, classes=["a", "b"]))


def _materialization(instance):
    records = instance.fetch_materializations(dg.AssetKey("reported_set"), limit=10).records
    return [record.asset_materialization.metadata for record in reversed(records)]


def test_metadata_is_for_people_and_a_reused_version_repeats_nothing(tmp_path):
    resources = {"lake": LakeResource(home=str(tmp_path)), "io_manager": LakeHandleIOManager(home=str(tmp_path))}
    with dg.instance_for_test() as instance:
        for _ in range(2):
            assert dg.materialize([reported_set], instance=instance, resources=resources).success
        first, second = _materialization(instance)

    assert isinstance(first["per_split"], dg.TableMetadataValue)
    schema = {column.name: column.type for column in first["per_split"].schema.columns}
    assert schema == {"split": "string", "images": "int", "share": "float"}
    assert first["per_split"].records[0].data["share"] == 0.667
    assert first["score"].value == 0.5309583816562584 and first["score (rounded)"].value == "0.531"
    preview = first["grid"].value
    assert preview.startswith("![samples](data:image/jpeg;base64,") and len(preview) < 300_000
    assert Path(first["grid/file"].value).stat().st_size > 5_000_000  # the full picture stays in the lake
    assert first["reused_version"].value is False and first["count/images"].value == 3

    assert second["reused_version"].value is True and second["version"].value == first["version"].value
    assert second["score"].value == first["score"].value
    assert not {"per_split", "grid", "grid/file", "settings"} & set(second)

    version = first["version"].value
    info = json.loads((tmp_path / "lake" / "reported_set" / version / "_version.json").read_text())
    assert (info["params"], info["upstream"], info["classes"], info["counts"]) == ({"seed": 0}, {"src": "v1"}, ["a", "b"], {"images": 3})
    assert Lake(tmp_path).handle("reported_set", version).classes == ["a", "b"]
