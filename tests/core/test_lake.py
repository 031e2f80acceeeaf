from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hoban_pipelines.core.lake import VERSION_FILE, Lake, LakeError, LakeHandle, tree_digest


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_publish_renames_a_complete_version_into_place(tmp_path):
    lake = Lake(tmp_path)
    with lake.new_version("go2k_manual", meta={"code_version": "1"}) as v:
        _write(v.path / "labels" / "a.txt", "0 0.5 0.5 0.1 0.1\n")
        assert v.path.name.startswith(".tmp-")
        assert lake.versions("go2k_manual") == []  # nothing visible while writing
    assert lake.versions("go2k_manual") == [v.version]
    assert (v.final_path / "labels" / "a.txt").read_text().startswith("0 ")
    info = lake.version_info("go2k_manual", v.version)
    assert info["code_version"] == "1" and info["digest"].startswith(v.version.split("-")[1])


def test_failure_midway_leaves_no_version_and_no_temp(tmp_path):
    lake = Lake(tmp_path)
    with pytest.raises(RuntimeError, match="disk on fire"):
        with lake.new_version("go2k_manual") as v:
            _write(v.path / "half.txt", "partial")
            raise RuntimeError("disk on fire")
    assert lake.versions("go2k_manual") == []
    assert list((tmp_path / "lake" / "go2k_manual").iterdir()) == []


def test_identical_content_reuses_the_version_and_new_content_adds_one(tmp_path):
    lake = Lake(tmp_path)
    with lake.new_version("mix") as first:
        _write(first.path / "train.txt", "a.jpg\n")
    with lake.new_version("mix") as again:
        _write(again.path / "train.txt", "a.jpg\n")
    assert again.reused and again.version == first.version
    with lake.new_version("mix") as other:
        _write(other.path / "train.txt", "b.jpg\n")
    assert not other.reused
    assert sorted(lake.versions("mix")) == sorted([first.version, other.version])
    # the older version is untouched
    assert (first.final_path / "train.txt").read_text() == "a.jpg\n"


def test_partitions_and_a_caller_supplied_digest(tmp_path):
    lake = Lake(tmp_path)
    with lake.new_version("captures_dedup", partition="2026-02-11") as v:
        _write(v.path / "keep.txt", "x")
        v.digest = "ab" * 32
    assert v.version.endswith("-abababababab")
    assert v.final_path.parent == tmp_path / "lake" / "captures_dedup" / "2026-02-11"


def test_tree_digest_ignores_the_version_file_and_sees_renames(tmp_path):
    _write(tmp_path / "a" / "x.txt", "1")
    before = tree_digest(tmp_path / "a")
    _write(tmp_path / "a" / VERSION_FILE, "{}")
    assert tree_digest(tmp_path / "a") == before
    os.rename(tmp_path / "a" / "x.txt", tmp_path / "a" / "y.txt")
    assert tree_digest(tmp_path / "a") != before


def test_unwritable_home_names_the_path_and_the_setting(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    lake = Lake(blocker / "home")  # a file in the way fails even for root
    with pytest.raises(LakeError, match=r"HOBAN_HOME=.*a_file/home is not writable.*set HOBAN_HOME"):
        lake.ensure_writable()
    with pytest.raises(LakeError):
        with lake.new_version("x"):
            pytest.fail("must not start writing")


def test_handle_round_trips_as_json(tmp_path):
    handle = LakeHandle(asset="a", version="v1", path="lake/a/v1", counts={"images": 3}, classes=["helmet"],
                        upstream={"b": "v0"})
    assert LakeHandle.from_json(handle.to_json()) == handle
    assert handle.resolve(tmp_path) == tmp_path / "lake" / "a" / "v1"
    assert json.loads(handle.to_json())["counts"] == {"images": 3}


def test_a_handle_record_of_an_older_release_asks_for_a_rematerialization():
    old = json.dumps({"asset": "go2k_split", "version": "v1", "path": "lake/go2k_split/v1", "extra": {"classes": []}})
    with pytest.raises(LakeError, match=r"handles/go2k_split.json was written by an older .*\['extra'\].*rematerialize go2k_split"):
        LakeHandle.from_json(old, "handles/go2k_split.json")


def test_a_version_records_what_it_was_built_from_and_the_lookup_finds_it(tmp_path):
    lake = Lake(tmp_path)
    built = {}
    for seed in (1, 2, 1):
        meta = {"params": {"seed": seed}, "upstream": {"src": f"s{seed}"}, "classes": ["a"], "counts": {"n": seed}}
        with lake.new_version("x", meta=meta) as version:
            (version.path / "f.txt").write_text(f"{seed}-{len(built)}")  # distinct content each time
        built.setdefault(seed, []).append(version.version)
    found = lake.find_version("x", lambda info: info["params"]["seed"] == 1)
    assert found.version == built[1][-1]  # the newest match
    assert found == lake.handle("x", found.version)
    assert (found.classes, found.upstream, found.counts) == (["a"], {"src": "s1"}, {"n": 1})
    assert lake.find_version("x", lambda info: info["params"]["seed"] == 3) is None
    with pytest.raises(LakeError, match="x has no version nope"):
        lake.handle("x", "nope")
