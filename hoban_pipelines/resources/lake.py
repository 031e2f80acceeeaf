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


def _partition_records(home: Path, key: dg.AssetKey) -> Path:
    """The folder of a partitioned asset's records, one ``<partition>.json`` each."""
    return home / "handles" / Path(*key.path)


def _record(home: Path, key: dg.AssetKey, partition: str | None) -> Path:
    base = _partition_records(home, key)
    return base / f"{partition}.json" if partition else base.with_suffix(".json")


def _load(home: Path, key: dg.AssetKey, partition: str | None) -> LakeHandle:
    record = _record(home, key, partition)
    name = key.to_user_string() + (f" partition {partition}" if partition else "")
    if not record.is_file():
        raise LakeError(f"{name} has no materialization in {home} ({record} missing): materialize it first")
    handle = LakeHandle.from_json(record.read_text(), str(record))
    if not handle.resolve(home).is_dir():
        raise LakeError(
            f"{name} version {handle.version} is missing from the lake "
            f"({handle.resolve(home)}): rematerialize {key.to_user_string()}"
        )
    return handle


class LakeResource(dg.ConfigurableResource):
    """The storage root. Leave ``home`` empty to use ``$HOBAN_HOME`` (default ``./.hoban``)."""

    home: str | None = None

    def get(self) -> Lake:
        return Lake(_home(self.home))

    def recorded(self, asset: str, partition: str | None = None) -> LakeHandle:
        """The handle Dagster recorded for ``asset``'s latest materialization: what an input of it
        would load. For an asset whose upstream is chosen by its partition (the model an
        evaluation partition names), where a declared input cannot say which."""
        return _load(_home(self.home), dg.AssetKey.from_user_string(asset), partition)

    def is_recorded(self, asset: str, partition: str | None = None) -> bool:
        return _record(_home(self.home), dg.AssetKey.from_user_string(asset), partition).is_file()

    def recorded_partitions(self, asset: str) -> list[str]:
        """The partitions of ``asset`` with a recorded materialization, in key order."""
        folder = _partition_records(_home(self.home), dg.AssetKey.from_user_string(asset))
        return sorted(record.stem for record in folder.glob("*.json")) if folder.is_dir() else []


class LakeHandleIOManager(dg.ConfigurableIOManager):
    """Persists ``LakeHandle`` outputs as small JSON records and loads them for inputs."""

    home: str | None = None

    def handle_output(self, context: dg.OutputContext, obj: LakeHandle) -> None:
        if not isinstance(obj, LakeHandle):
            raise TypeError(
                f"asset {context.asset_key.to_user_string()} returned {type(obj).__name__}; "
                "assets on the lake return a LakeHandle"
            )
        # an unpartitioned asset in a partitioned run (model_comparison in evaluation_job) has no partition
        partition = context.asset_partition_key if context.has_asset_partitions else None
        write_text_atomic(_record(_home(self.home), context.asset_key, partition), obj.to_json())

    def load_input(self, context: dg.InputContext) -> LakeHandle | dict[str, LakeHandle]:
        key = context.asset_key
        home = _home(self.home)
        if not context.has_asset_partitions:
            return _load(home, key, None)
        partitions = context.asset_partition_keys
        if context.has_partition_key and len(partitions) == 1:
            return _load(home, key, partitions[0])
        return {p: _load(home, key, p) for p in partitions}
