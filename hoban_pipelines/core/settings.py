"""The one configuration surface users edit: where their data lives.

Settings come from a YAML file (``$HOBAN_CONFIG``, else ``./hoban.yaml``; without either the
defaults below apply, and they point at the embedded demo site). Relative paths are relative
to the file; ``${VAR}`` expands from the environment; ``${HOBAN_HOME}`` (the storage root) and
``${HOBAN_PROJECT}`` (this checkout) always have a value.
"""

from __future__ import annotations

import os
import string
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

DEFAULT_HOBAN_HOME = ".hoban"
CONFIG_ENV = "HOBAN_CONFIG"
DEFAULT_CONFIG_FILE = "hoban.yaml"
DEMO_SITE = "${HOBAN_HOME}/demo_site"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class ConfigError(ValueError):
    """A setting that is missing, malformed or points at something unusable."""


def hoban_home() -> Path:
    """The storage root: ``$HOBAN_HOME`` or ``./.hoban``, absolute."""
    return Path(os.environ.get("HOBAN_HOME") or DEFAULT_HOBAN_HOME).expanduser().resolve()


@dataclass(frozen=True)
class Settings:
    """Where the team's inputs live. Field names are the keys of ``hoban.yaml``."""

    cvat_exports: str = f"{DEMO_SITE}/cvat_exports"
    snapshots: str = f"{DEMO_SITE}/snapshots"
    base_dataset: str = f"{DEMO_SITE}/base_dataset"
    base_checkpoint: str = ""
    captures: dict[str, str] = field(
        default_factory=lambda: {
            "cam1": f"{DEMO_SITE}/captures/cam1",
            "cam2": f"{DEMO_SITE}/captures/cam2",
        }
    )
    capture_timezone: str = "Asia/Seoul"  # the sites' clock: capture names carry local time, no zone
    # regexes with a (?P<stamp>...) group in YYYYMMDD_HHMMSS, tried in order on each capture's file name
    capture_patterns: list[str] = field(default_factory=lambda: [r"(?P<stamp>\d{8}_\d{6})"])
    # fixed-camera videos with one JSON spec each (ROIs, labelled segments), for the ROI classifier
    roi_videos: str = f"{DEMO_SITE}/roi_videos"
    # where reviewers drop their CVAT exports of finished review tasks (a sensor watches it)
    review_drop: str = "${HOBAN_HOME}/review_drop"
    classes: list[str] = field(
        default_factory=lambda: ["person_with_helmet", "person_without_helmet"]
    )
    label_map: str = ""  # CVAT label (+ attribute) -> class; empty: labels are the class names
    recipes: str = "${HOBAN_PROJECT}/recipes"  # one dataset asset per recipe YAML in this folder
    train_profile: str = "demo"  # demo: short runs that fit the demo; full: the recipes' own numbers
    demo_seed: int = 7
    demo_profile: str = "demo"
    source: str = "built-in defaults"

    def path(self, key: str) -> Path:
        """The absolute path a setting names (``captures.cam1`` for one camera)."""
        value = self.captures[key.split(".", 1)[1]] if key.startswith("captures.") else getattr(self, key)
        if not value:
            raise ConfigError(f"setting '{key}' is empty in {self.source}; set it to a path")
        return _expand(value, key, self.source)

    def require(self, key: str, what: str = "folder", *, file: bool = False) -> Path:
        """The path of a setting that must exist and be readable, or a ConfigError saying which.

        ``what`` names the thing for the message ("folder of CVAT exports"); ``file`` asks
        for a file instead of a folder.
        """
        path = self.path(key)
        if not path.exists():
            raise ConfigError(
                f"{path} does not exist (setting '{key}' in {self.source}). "
                f"Point '{key}' at your {what}, or run `make demo` to create the demo site."
            )
        wanted_dir = not file
        if wanted_dir != path.is_dir():
            raise ConfigError(
                f"{path} is not a {'folder' if wanted_dir else 'file'} (setting '{key}' in {self.source})."
            )
        if not os.access(path, os.R_OK | (os.X_OK if wanted_dir else 0)):
            raise ConfigError(f"{path} is not readable (setting '{key}' in {self.source}); fix its permissions.")
        return path

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "source"}


def _expand(value: str, key: str, source: str) -> Path:
    env = dict(os.environ, HOBAN_HOME=str(hoban_home()), HOBAN_PROJECT=str(PROJECT_ROOT))
    try:
        expanded = string.Template(value).substitute(env)
    except (KeyError, ValueError) as exc:
        raise ConfigError(
            f"setting '{key}' in {source} uses an undefined variable {exc}; export it or write the path out"
        ) from None
    path = Path(expanded).expanduser()
    if not path.is_absolute():
        base = Path(source).parent if source.endswith((".yaml", ".yml")) else Path.cwd()
        path = base / path
    return path.resolve()


def config_file() -> Path | None:
    """The settings file in force, if any."""
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        path = Path(explicit).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"{CONFIG_ENV}={explicit} does not name a readable file; fix or unset {CONFIG_ENV}")
        return path
    local = Path.cwd() / DEFAULT_CONFIG_FILE
    return local.resolve() if local.is_file() else None


def load_settings(path: Path | None = None) -> Settings:
    """Settings from ``path`` (or the file in force), checked for unknown keys and types."""
    path = path or config_file()
    if path is None:
        return Settings()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read settings file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"settings file {path}{where} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"settings file {path} must hold a mapping of settings, got {type(raw).__name__}")
    known = {f.name for f in fields(Settings)} - {"source"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"settings file {path}: unknown setting(s) {unknown}; known: {sorted(known)}")
    defaults = Settings()
    for key, value in raw.items():
        expected = type(getattr(defaults, key))
        if value is None and expected is str:
            raw[key] = ""
        elif not isinstance(value, expected):
            raise ConfigError(
                f"settings file {path}: '{key}' must be a {expected.__name__}, got {type(value).__name__}"
            )
    return Settings(**raw, source=str(path))
