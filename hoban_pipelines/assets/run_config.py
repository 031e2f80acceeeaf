"""Run config classes made from the domain's own parameter dataclasses, so a default (the
team's number) is written once, in the domain, and the launchpad shows it."""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any, Literal, get_origin, get_type_hints

import dagster as dg


def config_class(
    name: str, doc: str, parameters: type, *, defaults: Any = None, skip: tuple[str, ...] = (),
    rename: dict[str, str] | None = None, extra: dict[str, tuple[type, Any]] | None = None,
) -> type[dg.Config]:
    """A ``dg.Config`` with a field per field of the dataclass ``parameters`` (but ``skip``),
    named as in ``rename``, defaulting to ``defaults``' values (an instance) or the dataclass'
    own defaults; ``extra`` adds fields of the asset's own: name -> (type, default)."""
    rename = rename or {}
    hints = get_type_hints(parameters)
    annotations: dict[str, Any] = {}
    values: dict[str, Any] = {}
    for spec in fields(parameters):
        if spec.name in skip:
            continue
        key = rename.get(spec.name, spec.name)
        kind = hints[spec.name]
        annotations[key] = str if get_origin(kind) is Literal else kind  # config takes the values as text
        value = getattr(defaults, spec.name) if defaults is not None else spec.default
        if value is not MISSING:
            values[key] = value
    for key, (kind, value) in (extra or {}).items():
        annotations[key], values[key] = kind, value
    return type(name, (dg.Config,), {"__annotations__": annotations, **values, "__doc__": doc})


def parameters_of(config: dg.Config, parameters: type, *, rename: dict[str, str] | None = None, **fixed: Any):
    """The dataclass ``parameters`` from a config made by :func:`config_class` (its extra fields left out)."""
    rename = rename or {}
    dumped = config.model_dump()
    return parameters(**{spec.name: dumped[rename.get(spec.name, spec.name)]
                         for spec in fields(parameters) if rename.get(spec.name, spec.name) in dumped}, **fixed)
