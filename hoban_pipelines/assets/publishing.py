"""What every lake-backed asset returns: its handle as the output, its version as the data version."""

import warnings
from typing import Any

import dagster as dg

from hoban_pipelines.core.lake import LakeHandle


def lake_output(handle: LakeHandle, metadata: dict[str, Any] | None = None) -> dg.Output[LakeHandle]:
    with warnings.catch_warnings():  # data_version is beta in 1.13 (see beta_apis)
        warnings.simplefilter("ignore", dg.BetaWarning)
        return _output(handle, metadata)


def _output(handle: LakeHandle, metadata: dict[str, Any] | None) -> dg.Output[LakeHandle]:
    return dg.Output(
        handle,
        data_version=dg.DataVersion(handle.version),
        metadata={
            "version": handle.version,
            "lake_path": dg.MetadataValue.path(handle.path),
            **{f"count/{name}": dg.MetadataValue.int(value) for name, value in handle.counts.items()},
            **(metadata or {}),
        },
    )
