"""The one leakage grouping: a split is checked with the numbers it was made with, read back
from its own version, whatever they are."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from hoban_pipelines.assets.datasets import go2k_split, go2k_split_checks
from hoban_pipelines.assets.labels import go2k_manual
from hoban_pipelines.core.lake import publish_directory
from hoban_pipelines.datasets.checks import leakage_problems
from hoban_pipelines.datasets.grouping import Grouping, leakage_links, time_links
from hoban_pipelines.datasets.split import SPLIT_MANIFEST, SplitParameters, build_split
from hoban_pipelines.labels.cleaning import CleaningRule
from hoban_pipelines.labels.cvat_import import build_dataset, export_files
from hoban_pipelines.labels.label_map import LabelMap
from hoban_pipelines.resources import LakeHandleIOManager, LakeResource, SettingsResource

CLASSES = ["person_with_helmet", "person_without_helmet"]
SHORT, LONG = Grouping(burst_seconds=10, similarity=0.95), Grouping(burst_seconds=120, similarity=0.95)


def test_time_links_join_consecutive_frames_of_one_camera_only():
    cameras = pd.Series(["a", "a", "b", "a", None])
    stamps = pd.Series(pd.to_datetime(["2026-02-11 10:00:00", "2026-02-11 10:00:30", "2026-02-11 10:00:31",
                                       "2026-02-11 10:02:00", "2026-02-11 10:00:01"]))
    assert time_links(cameras, stamps, 30) == [(0, 1)]
    assert time_links(cameras, stamps, 90) == [(0, 1), (1, 3)]
    assert time_links(cameras, stamps, 5) == []


def test_precomputed_pairs_are_filtered_at_the_groupings_similarity():
    links = leakage_links(["a", "b", "c"], [None] * 3, [pd.NaT] * 3, Grouping(similarity=0.99),
                          similar=[(0, 1, 0.995), (1, 2, 0.985)])
    assert links.near_duplicates == [(0, 1, 0.995)]
    assert list(links.groups(3)) == [0, 0, 1]


@pytest.fixture(scope="module")
def labelled(demo_profile_site, tmp_path_factory):
    """The demo profile's 232 snapshots: frames of one camera come 1-3 s apart in bursts and
    tens of seconds to hours apart otherwise, so 10 s and 120 s group them differently."""
    out = tmp_path_factory.mktemp("labelled") / "go2k_manual"
    with publish_directory(out) as staging:
        build_dataset(export_files(demo_profile_site / "cvat_exports"), staging, label_map=LabelMap.identity(CLASSES),
                      rule=CleaningRule(), image_root=demo_profile_site / "snapshots")
    return out


def _split(labelled, grouping, tmp_path, name):
    out = tmp_path / name
    out.mkdir()
    build_split(labelled, CLASSES, SplitParameters(grouping=grouping), out)
    return out


def test_each_split_passes_its_own_check_and_only_its_own(labelled, tmp_path):
    short, long = _split(labelled, SHORT, tmp_path, "short"), _split(labelled, LONG, tmp_path, "long")
    assert leakage_problems(short, SPLIT_MANIFEST, SHORT) == []
    assert leakage_problems(long, SPLIT_MANIFEST, LONG) == []
    # frames 10-120 s apart may straddle the short split: checked at 120 s they are leaks
    looser = leakage_problems(short, SPLIT_MANIFEST, LONG)
    assert looser and all("same camera within 120 s" in problem for problem in looser if "near-duplicates" not in problem)
    # a split grouped at 120 s holds every 10 s burst on one side
    assert leakage_problems(long, SPLIT_MANIFEST, SHORT) == []


def _resources(home):
    return {"lake": LakeResource(home=str(home)), "io_manager": LakeHandleIOManager(home=str(home)),
            "settings": SettingsResource()}


@pytest.mark.parametrize("burst_seconds", [10, 120])
def test_go2k_splits_blocking_check_reads_the_versions_own_grouping(small_site, hoban_home, tmp_path, monkeypatch, burst_seconds):
    config = tmp_path / "hoban.yaml"
    config.write_text(f"cvat_exports: {small_site / 'cvat_exports'}\nsnapshots: {small_site / 'snapshots'}\n")
    monkeypatch.setenv("HOBAN_CONFIG", str(config))
    run_config = {"ops": {"go2k_split": {"config": {"burst_seconds": burst_seconds, "similarity": 0.95}}}}
    with dg.instance_for_test() as instance:
        result = dg.materialize([go2k_manual, go2k_split, go2k_split_checks], instance=instance,
                                resources=_resources(hoban_home), run_config=run_config)
        evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
        assert evaluations["go2k_split_no_leakage"].passed
        handle = result.output_for_node("go2k_split")
        recorded = LakeResource(home=str(hoban_home)).get().version_info("go2k_split", handle.version)["params"]
        assert recorded["grouping"] == {"burst_seconds": burst_seconds, "similarity": 0.95}
        assert f"within {burst_seconds} s" not in evaluations["go2k_split_no_leakage"].metadata["problems"].value
