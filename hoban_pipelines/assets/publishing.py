"""How every lake-backed asset publishes: one version per materialization, metadata for people.

An asset resolves its inputs, calls :func:`publish` with the domain function that builds into a
folder, and returns :func:`lake_output`. ``publish`` takes the asset's name (and partition) from
the context, so no asset types its own name, and records in the version what it was built from
and with (``params``, ``upstream``, ``classes``, ``counts``): a check or a later run reads those
from the version itself (:meth:`Lake.find_version`, :meth:`Lake.handle`).

``lake_output`` turns the build's :class:`BuildReport` into metadata a team member reads in the
UI: tables as Dagster tables with a schema, each float beside a rounded display value, pictures
as small JPEG previews (the full-size file stays in the version; its path is in the metadata).
A reused version (the same content was published before) gets its numbers only: its tables and
pictures are already in the event log once, on the materialization that first published it.
"""

from __future__ import annotations

import base64
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import dagster as dg

from hoban_pipelines.core.lake import LakeHandle
from hoban_pipelines.core.pictures import jpeg_preview
from hoban_pipelines.core.report import BuildReport, Picture, Table
from hoban_pipelines.resources import LakeResource

DISPLAY_SUFFIX = " (rounded)"


@dataclass(frozen=True)
class Published:
    handle: LakeHandle
    root: Path  # the version folder, absolute
    reused: bool  # identical content was already published: this is that version
    report: BuildReport


def asset_name(context: dg.AssetExecutionContext) -> str:
    return context.asset_key.to_user_string()


def partition_of(context: dg.AssetExecutionContext) -> str | None:
    """The asset's partition; None for an unpartitioned asset, also inside a partitioned run."""
    partitioned = context.assets_def.partitions_def is not None
    return context.partition_key if partitioned and context.has_partition_key else None


def publish(
    context: dg.AssetExecutionContext,
    lake: LakeResource,
    build: Callable[[Path], BuildReport],
    *,
    params: dict[str, Any] | None = None,
    upstream: dict[str, str] | None = None,
    classes: list[str] | None = None,
) -> Published:
    """Build a new version of the context's asset with ``build(folder)`` and publish it by rename.

    ``params``: what the version was built with (run config, recipe), read back by its checks;
    ``upstream``: every lake version it was computed from.
    """
    asset, partition = asset_name(context), partition_of(context)
    store = lake.get()
    meta = {
        "code_version": context.assets_def.code_versions_by_key.get(context.asset_key),
        "params": params or {},
        "upstream": upstream or {},
        "classes": list(classes or []),
    }
    with store.new_version(asset, partition=partition, meta=meta) as version:
        report = build(version.path)
        version.meta["counts"] = report.counts
        version.digest = report.digest
    for warning in report.warnings:
        context.log.warning(warning)
    handle = store.handle_for(
        version.final_path, asset=asset, version=version.version, partition=partition,
        counts=report.counts, classes=list(classes or []), upstream=dict(upstream or {}),
    )
    return Published(handle=handle, root=version.final_path, reused=version.reused, report=report)


def published_with_key(context: dg.AssetExecutionContext, lake: LakeResource, key: Any) -> LakeHandle | None:
    """The newest version of the context's asset (and partition) published with ``params={"reuse_key": key}``:
    the same computation on the same inputs, which an asset reuses instead of running again."""
    return lake.get().find_version(asset_name(context), lambda info: (info.get("params") or {}).get("reuse_key") == key,
                                   partition_of(context))


def reused_version(context: dg.AssetExecutionContext, lake: LakeResource, key: dict) -> Published | None:
    """The published version of this exact computation, if there is one (its counts only: a reused
    version's tables and pictures are on the materialization that published it)."""
    earlier = published_with_key(context, lake, key)
    if earlier is None:
        return None
    partition = partition_of(context)
    context.log.info(f"{asset_name(context)}{f' for {partition}' if partition else ''}: this exact computation is "
                     f"published as {earlier.version}; reusing it")
    return Published(handle=earlier, root=earlier.resolve(lake.get().home), reused=True,
                     report=BuildReport(counts=dict(earlier.counts)))


def lake_output(published: Published) -> dg.Output[LakeHandle]:
    """The handle as the asset's output, its version as the data version, the report as metadata."""
    metadata = {
        "version": published.handle.version,
        "lake_path": dg.MetadataValue.path(published.handle.path),
        "reused_version": published.reused,
        **{f"count/{name}": dg.MetadataValue.int(int(value)) for name, value in published.handle.counts.items()},
        **report_metadata(published.report.details, published.root, reused=published.reused),
    }
    if published.handle.upstream:
        metadata["upstream"] = dg.MetadataValue.json(published.handle.upstream)
    if published.report.warnings:
        metadata["warnings"] = dg.MetadataValue.json(published.report.warnings)
    with warnings.catch_warnings():  # data_version is beta in 1.13 (see beta_apis)
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.Output(published.handle, data_version=dg.DataVersion(published.handle.version), metadata=metadata)


def report_metadata(details: dict[str, Any], root: Path, *, reused: bool = False) -> dict[str, dg.MetadataValue]:
    """Dagster metadata of a report's details; a reused version keeps only its scalars."""
    metadata: dict[str, dg.MetadataValue] = {}
    for name, value in details.items():
        if isinstance(value, bool) or value is None:
            metadata[name] = dg.MetadataValue.bool(value) if value is not None else dg.MetadataValue.null()
        elif isinstance(value, int):
            metadata[name] = dg.MetadataValue.int(value)
        elif isinstance(value, float):
            metadata[name] = dg.MetadataValue.float(value)
            metadata[name + DISPLAY_SUFFIX] = dg.MetadataValue.text(display(value))
        elif isinstance(value, str):
            metadata[name] = dg.MetadataValue.text(value)
        elif isinstance(value, Path):
            metadata[name] = dg.MetadataValue.path(str(root / value))  # a relative path lies in the version
        elif reused:
            continue  # tables, pictures and JSON are on the materialization that published it
        elif isinstance(value, Table):
            metadata[name] = table_metadata(value)
        elif isinstance(value, Picture):
            metadata[name] = picture_metadata(root / value.path, value.alt)
            metadata[f"{name}/file"] = dg.MetadataValue.path(str(root / value.path))
        else:
            metadata[name] = dg.MetadataValue.json(value)
    return metadata


def display(value: float) -> str:
    """A float as a person reads it: three decimals for scores, one for larger quantities."""
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"


def table_metadata(table: Table) -> dg.TableMetadataValue:
    """A Dagster table with a schema (column types from the values); floats rounded for display."""
    def cell(value: Any) -> Any:
        if isinstance(value, float):
            return None if math.isnan(value) else round(value, 3)  # a missing value (pandas' NaN) shows empty
        if value is None or isinstance(value, (bool, int, str)):
            return value
        return str(value)

    records = [{column: cell(row.get(column)) for column in table.columns} for row in table.rows]
    columns = []
    for column in table.columns:
        values = [record[column] for record in records if record[column] is not None]
        kind = ("bool" if all(isinstance(v, bool) for v in values) else
                "int" if all(isinstance(v, int) and not isinstance(v, bool) for v in values) else
                "float" if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) else
                "string") if values else "string"
        columns.append(dg.TableColumn(column, kind))
    return dg.MetadataValue.table(
        records=[dg.TableRecord(record) for record in records], schema=dg.TableSchema(columns=columns)
    )


def picture_metadata(path: Path, alt: str) -> dg.MarkdownMetadataValue:
    """A small JPEG preview of the picture at ``path``, inline in markdown."""
    data = base64.b64encode(jpeg_preview(path)).decode()
    return dg.MetadataValue.md(f"![{alt}](data:image/jpeg;base64,{data})")
