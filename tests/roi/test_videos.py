"""The roi_videos specs: the group rule, video_path resolution, and each bad input named."""

from __future__ import annotations

import json
import re

import pytest
from roi_synthetic import FRAMES, LABEL_MAP, SIZE, standard_video, write_spec, write_video, standard_patterns

from hoban_pipelines.roi.videos import (
    FOUND_AS_GIVEN,
    FOUND_BESIDE_JSON,
    FOUND_RELATIVE_TO_JSON,
    RoiSpecError,
    read_roi_videos,
)


def test_reads_specs_group_from_folder_or_field(tmp_path):
    standard_video(tmp_path / "simulation", "sim_a")
    standard_video(tmp_path / "real", "real_a")
    standard_video(tmp_path / "other", "field_b", group="real")
    found = read_roi_videos(tmp_path)
    by_name = {v.name: v for v in found.videos}
    assert {n: v.group for n, v in by_name.items()} == {"sim_a": "simulation", "real_a": "real", "field_b": "real"}
    video = by_name["sim_a"]
    assert (video.frame_count, video.width, video.height) == (FRAMES, *SIZE)
    assert video.rois == ((8, 8, 64, 48), (88, 60, 64, 48))
    assert [s.label for s in video.segments] == ["false", "true", "unknown"]
    assert video.label_at(0) == "false" and video.label_at(120) == "true" and video.label_at(FRAMES) is None
    assert not found.unopened


def test_group_neither_field_nor_folder_is_refused(tmp_path):
    standard_video(tmp_path / "clips", "a")
    with pytest.raises(RoiSpecError, match=r"a\.json: field 'group'.*Add \"group\""):
        read_roi_videos(tmp_path)


def test_video_path_as_given_relative_or_beside_the_json_is_reported(tmp_path):
    folder = tmp_path / "simulation"
    given = write_video(tmp_path / "store" / "given.avi", standard_patterns())
    write_spec(folder, "given", given)
    write_video(folder / "clips" / "relative.avi", standard_patterns())
    write_spec(folder, "relative", "clips/relative.avi")
    write_video(folder / "beside.avi", standard_patterns())
    write_spec(folder, "beside", "/old/machine/videos/beside.avi")
    found = read_roi_videos(tmp_path)
    how = {v.name: v.path_found for v in found.videos}
    assert how == {"given": FOUND_AS_GIVEN, "relative": FOUND_RELATIVE_TO_JSON, "beside": FOUND_BESIDE_JSON}
    assert any("beside.json" in w and "beside the JSON" in w for w in found.warnings)


@pytest.mark.parametrize("missing", ["roi", "segments"])
def test_a_spec_missing_a_field_names_the_file_and_field(tmp_path, missing):
    path = standard_video(tmp_path / "simulation", "a")
    spec = json.loads(path.read_text())
    del spec[missing]
    path.write_text(json.dumps(spec))
    with pytest.raises(RoiSpecError, match=rf"a\.json: field '{missing}': missing\. Add '{missing}'") as error:
        read_roi_videos(tmp_path)
    assert error.value.spec_path == path and error.value.field_name == missing


def test_a_segment_past_the_end_is_clipped_and_warned(tmp_path):
    segments = [{"start_frame": 0, "end_frame": 10_000, "label": 1}, {"start_frame": 20_000, "end_frame": 20_010, "label": 2}]
    standard_video(tmp_path / "simulation", "a", segments=segments)
    found = read_roi_videos(tmp_path)
    (video,) = found.videos
    assert [(s.start_frame, s.end_frame, s.label) for s in video.segments] == [(0, FRAMES - 1, "true")]
    assert any("clipped to 449" in w for w in found.warnings)
    assert any("starts past the video's end" in w and "dropped" in w for w in found.warnings)


def test_an_roi_outside_the_frame_names_the_video_and_the_roi(tmp_path):
    standard_video(tmp_path / "simulation", "a", roi=[120, 10, 64, 48])
    with pytest.raises(RoiSpecError, match=r"field 'roi': ROI \[120, 10, 64, 48\] lies outside the frame of .*a\.avi \(160x120\)"):
        read_roi_videos(tmp_path)


def test_a_video_that_cannot_be_opened_is_reported_and_the_rest_go_on(tmp_path):
    folder = tmp_path / "real"
    standard_video(folder, "good")
    (folder / "broken.avi").write_bytes(b"not a video at all" * 100)
    write_spec(folder, "broken", "broken.avi")
    write_spec(folder, "missing", "nowhere.avi")
    found = read_roi_videos(tmp_path)
    assert [v.name for v in found.videos] == ["good"]
    reasons = {u.spec_path.stem: u.reason for u in found.unopened}
    assert "cannot be opened" in reasons["broken"] and "not found" in reasons["missing"]
    assert len(found.warnings) == 2


def test_a_label_id_not_in_the_label_map_is_refused(tmp_path):
    standard_video(tmp_path / "simulation", "a", segments=[{"start_frame": 0, "end_frame": 9, "label": 7}])
    with pytest.raises(RoiSpecError, match=re.escape(f"field 'segments[0].label': label id '7' is not in label_map {sorted(LABEL_MAP)}")):
        read_roi_videos(tmp_path)


def test_overlapping_segments_with_different_labels_are_refused(tmp_path):
    segments = [{"start_frame": 0, "end_frame": 50, "label": 0}, {"start_frame": 40, "end_frame": 90, "label": 1}]
    standard_video(tmp_path / "simulation", "a", segments=segments)
    with pytest.raises(RoiSpecError, match="overlaps"):
        read_roi_videos(tmp_path)
