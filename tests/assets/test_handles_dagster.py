"""Handles round-trip through real Dagster materializations on a real (temporary) instance."""

import dagster as dg
import pytest

from hoban_pipelines.assets.publishing import lake_output, publish
from hoban_pipelines.core.report import BuildReport
from hoban_pipelines.core.lake import LakeError, LakeHandle
from hoban_pipelines.resources import LakeHandleIOManager, LakeResource

seen: dict[str, object] = {}


def _write(name: str, text: str, counts: dict[str, int]):
    def build(folder):
        (folder / name).write_text(text)
        return BuildReport(counts=counts)

    return build


@dg.asset
def upstream_set(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.Output[LakeHandle]:
    return lake_output(publish(context, lake, _write("items.txt", seen.get("content", "a\nb\n"), {"items": 2})))


@dg.asset
def downstream_count(context: dg.AssetExecutionContext, lake: LakeResource, upstream_set: LakeHandle) -> dg.Output[LakeHandle]:
    seen["received"] = upstream_set
    lines = (upstream_set.resolve(lake.get().home) / "items.txt").read_text().split()
    return lake_output(publish(context, lake, _write("count.txt", str(len(lines)), {"n": len(lines)}),
                               upstream={"upstream_set": upstream_set.version}))


days = dg.DailyPartitionsDefinition(start_date="2026-02-11", end_date="2026-02-13")


@dg.asset(partitions_def=days)
def daily_part(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.Output[LakeHandle]:
    return lake_output(publish(context, lake, _write("day.txt", context.partition_key, {})))


@dg.asset(deps=[], ins={"daily_part": dg.AssetIn()})
def all_days(daily_part: dict[str, LakeHandle]) -> dg.Output[LakeHandle]:
    seen["days"] = daily_part
    first = next(iter(daily_part.values()))
    return dg.Output(first)


def _resources(home):
    return {"lake": LakeResource(home=str(home)), "io_manager": LakeHandleIOManager(home=str(home))}


def test_downstream_receives_the_exact_upstream_version(tmp_path):
    with dg.instance_for_test() as instance:
        seen["content"] = "a\nb\n"
        first = dg.materialize([upstream_set, downstream_count], instance=instance, resources=_resources(tmp_path))
        assert first.success
        v1 = first.output_for_node("upstream_set")
        assert seen["received"] == v1
        seen["content"] = "a\nb\nc\n"
        second = dg.materialize([upstream_set], instance=instance, resources=_resources(tmp_path))
        v2 = second.output_for_node("upstream_set")
        assert v2.version != v1.version
        dg.materialize(
            [upstream_set, downstream_count], selection=[downstream_count], instance=instance, resources=_resources(tmp_path)
        )
        assert seen["received"] == v2
        event = instance.get_latest_materialization_event(dg.AssetKey("upstream_set"))
        mat = event.asset_materialization
        assert mat.metadata["version"].value == v2.version
        assert mat.tags["dagster/data_version"] == v2.version
        assert (tmp_path / v1.path).is_dir()  # the older version stays


def test_partitioned_upstream_arrives_as_a_dict_of_handles(tmp_path):
    with dg.instance_for_test() as instance:
        for day in ("2026-02-11", "2026-02-12"):
            assert dg.materialize([daily_part], partition_key=day, instance=instance, resources=_resources(tmp_path)).success
        assert dg.materialize([daily_part, all_days], selection=[all_days], instance=instance, resources=_resources(tmp_path)).success
        assert sorted(seen["days"]) == ["2026-02-11", "2026-02-12"]
        assert seen["days"]["2026-02-12"].partition == "2026-02-12"


def test_a_deleted_upstream_version_is_a_clear_error(tmp_path):
    with dg.instance_for_test() as instance:
        result = dg.materialize([upstream_set], instance=instance, resources=_resources(tmp_path))
        handle = result.output_for_node("upstream_set")
        (tmp_path / handle.path / "items.txt").unlink()
        (tmp_path / handle.path / "_version.json").unlink()
        (tmp_path / handle.path).rmdir()
        with pytest.raises(LakeError, match=f"upstream_set version {handle.version} is missing.*rematerialize upstream_set"):
            dg.materialize([upstream_set, downstream_count], selection=[downstream_count], instance=instance, resources=_resources(tmp_path))
