"""The lake as Dagster sees it: a resource for writing versions, an IO manager for handles.

The IO manager stores each output's ``LakeHandle`` as JSON under ``$HOBAN_HOME/handles`` and
hands exactly that record to downstream assets, so an asset is always computed from the
upstream version Dagster recorded, never from "the newest folder".
"""

from pathlib import Path

import dagster as dg

from hoban_pipelines.core.lake import Lake, LakeError, LakeHandle, write_text_atomic
from hoban_pipelines.core.settings import hoban_home


def _home(configured: str | None) -> Path:
    return Path(configured).expanduser().resolve() if configured else hoban_home()


class LakeResource(dg.ConfigurableResource):
    """The storage root. Leave ``home`` empty to use ``$HOBAN_HOME`` (default ``./.hoban``)."""

    home: str | None = None

    def get(self) -> Lake:
        return Lake(_home(self.home))


class LakeHandleIOManager(dg.ConfigurableIOManager):
    """Persists ``LakeHandle`` outputs as small JSON records and loads them for inputs."""

    home: str | None = None

    def _record(self, key: dg.AssetKey, partition: str | None) -> Path:
        base = _home(self.home) / "handles" / Path(*key.path)
        return base / f"{partition}.json" if partition else base.with_suffix(".json")

    def handle_output(self, context: dg.OutputContext, obj: LakeHandle) -> None:
        if not isinstance(obj, LakeHandle):
            raise TypeError(
                f"asset {context.asset_key.to_user_string()} returned {type(obj).__name__}; "
                "assets on the lake return a LakeHandle"
            )
        partition = context.partition_key if context.has_partition_key else None
        write_text_atomic(self._record(context.asset_key, partition), obj.to_json())

    def _load(self, key: dg.AssetKey, partition: str | None) -> LakeHandle:
        record = self._record(key, partition)
        name = key.to_user_string() + (f" partition {partition}" if partition else "")
        if not record.is_file():
            raise LakeError(f"{name} has no materialization in {_home(self.home)} ({record} missing): materialize it first")
        handle = LakeHandle.from_json(record.read_text(), str(record))
        if not handle.resolve(_home(self.home)).is_dir():
            raise LakeError(
                f"{name} version {handle.version} is missing from the lake "
                f"({handle.resolve(_home(self.home))}): rematerialize {key.to_user_string()}"
            )
        return handle

    def load_input(self, context: dg.InputContext) -> LakeHandle | dict[str, LakeHandle]:
        key = context.asset_key
        if not context.has_asset_partitions:
            return self._load(key, None)
        partitions = context.asset_partition_keys
        if context.has_partition_key and len(partitions) == 1:
            return self._load(key, partitions[0])
        return {p: self._load(key, p) for p in partitions}
