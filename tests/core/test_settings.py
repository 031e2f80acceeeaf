from __future__ import annotations

import os

import pytest

from hoban_pipelines.core.settings import ConfigError, Settings, load_settings


def test_defaults_point_at_the_demo_site_under_hoban_home(hoban_home):
    settings = load_settings()
    assert settings.path("cvat_exports") == (hoban_home / "demo_site" / "cvat_exports").resolve()
    assert settings.path("captures.cam2") == (hoban_home / "demo_site" / "captures" / "cam2").resolve()
    assert settings.base_checkpoint == ""


def test_file_values_expand_variables_and_resolve_relative_to_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SITE_NAS", str(tmp_path / "nas"))
    config = tmp_path / "conf" / "hoban.yaml"
    config.parent.mkdir()
    config.write_text("cvat_exports: ${SITE_NAS}/cvat\nsnapshots: ../snaps\ncaptures: {north: caps/n}\n")
    settings = load_settings(config)
    assert settings.path("cvat_exports") == tmp_path / "nas" / "cvat"
    assert settings.path("snapshots") == tmp_path / "snaps"
    assert settings.path("captures.north") == tmp_path / "conf" / "caps" / "n"
    assert settings.source == str(config)


def test_missing_path_error_names_path_setting_and_file(hoban_home):
    settings = load_settings()
    with pytest.raises(ConfigError) as err:
        settings.require("cvat_exports", "folder of CVAT exports")
    message = str(err.value)
    assert str(hoban_home / "demo_site" / "cvat_exports") in message
    assert "'cvat_exports'" in message and os.environ["HOBAN_CONFIG"] in message


def test_a_file_where_a_folder_is_expected(tmp_path):
    (tmp_path / "exports").write_text("")
    config = tmp_path / "hoban.yaml"
    config.write_text("cvat_exports: exports\n")
    with pytest.raises(ConfigError, match="is not a folder.*'cvat_exports'"):
        load_settings(config).require("cvat_exports")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads anything; permission bits cannot be tested")
def test_unreadable_folder(tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir(mode=0o000)
    config = tmp_path / "hoban.yaml"
    config.write_text("cvat_exports: exports\n")
    with pytest.raises(ConfigError, match="not readable.*'cvat_exports'"):
        load_settings(config).require("cvat_exports")


@pytest.mark.parametrize(
    "text, match",
    [
        ("cvat_exports: [unclosed\n", r"line \d+ is not valid YAML"),
        ("- a\n- b\n", "must hold a mapping"),
        ("cvat_export: /x\n", r"unknown setting\(s\) \['cvat_export'\]"),
        ("captures: /one/folder\n", "'captures' must be a dict"),
        ("cvat_exports: ${NOT_SET_ANYWHERE}/x\n", None),
    ],
)
def test_bad_settings_files_say_what_is_wrong(tmp_path, monkeypatch, text, match):
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    config = tmp_path / "hoban.yaml"
    config.write_text(text)
    if match is None:
        with pytest.raises(ConfigError, match="undefined variable 'NOT_SET_ANYWHERE'"):
            load_settings(config).path("cvat_exports")
        return
    with pytest.raises(ConfigError, match=match):
        load_settings(config)


def test_hoban_config_naming_a_missing_file(monkeypatch, tmp_path):
    monkeypatch.setenv("HOBAN_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="HOBAN_CONFIG=.*nope.yaml does not name a readable file"):
        load_settings()


def test_empty_base_checkpoint_is_reported_as_empty():
    with pytest.raises(ConfigError, match="'base_checkpoint' is empty"):
        Settings().path("base_checkpoint")
