"""What a stage's build returns besides the folder it wrote: counts, tables, pictures, warnings.

Every domain builder (``build_*``) writes one version into a folder and returns a ``BuildReport``.
The Dagster side turns it into metadata a person reads in the UI (tables with a schema, rounded
numbers, small previews of the pictures); the CLI and the tests read the same object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Table:
    """Rows of a table a person reads; ``columns`` gives the order (and the columns shown)."""

    rows: list[dict[str, Any]]
    columns: list[str]


@dataclass(frozen=True)
class Picture:
    """A picture the build wrote, relative to the version folder (the full-size file stays there)."""

    path: str
    alt: str


@dataclass
class BuildReport:
    """``counts`` go into the handle (what downstream assets and checks read); ``details`` are
    shown, in order: numbers, text, paths (relative ones inside the version), JSON-able values,
    :class:`Table` and :class:`Picture`. ``digest`` names the content when the build knows it
    (a checkpoint's sha256); otherwise every file of the version is hashed."""

    counts: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    digest: str | None = None
