"""The user's settings file as a Dagster resource (see ``hoban_pipelines.core.settings``)."""

from pathlib import Path

import dagster as dg

from hoban_pipelines.core.settings import Settings, load_settings


class SettingsResource(dg.ConfigurableResource):
    """Where the team's data lives. Leave ``config_file`` empty for ``$HOBAN_CONFIG`` or ``./hoban.yaml``."""

    config_file: str | None = None

    def get(self) -> Settings:
        return load_settings(Path(self.config_file).expanduser().resolve() if self.config_file else None)
