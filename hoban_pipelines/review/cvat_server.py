"""Finished review tasks fetched from the team's CVAT server into the review drop folder.

With a CVAT server configured, a reviewer need not export by hand: a task created from our
packages (its name starts with the packages' task prefix) whose status is "completed" is
exported by the server ("CVAT for images 1.1", without images: the lake has them) and written
into the drop folder, where the drop-folder sensor takes it like any other export. A task is
fetched again only when it changed on the server since (its ``updated_date``), which is what
a reopened and re-completed task looks like; the drop folder's content hash then decides
whether anything new arrived. The file is written under a hidden name and renamed, so the
drop folder never sees half an export. Plain Python: ``client`` is a cvat-sdk client.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

EXPORT_FORMAT = "CVAT for images 1.1"  # the export's name (the import format is "CVAT 1.1")
COMPLETED = "completed"


def fetch_completed_tasks(client: Any, folder: Path, fetched: dict[str, str], task_prefix: str) -> list[Path]:
    """Export each completed ``task_prefix*`` task not fetched at its current ``updated_date``
    into ``folder`` as ``<task name>_<task id>.zip``; ``fetched`` (task id -> updated_date) is
    updated in place. Returns the files written."""
    folder = Path(folder)
    written = []
    for task in client.tasks.list():
        if task.status != COMPLETED or not task.name.startswith(task_prefix):
            continue
        stamp = str(task.updated_date)
        if fetched.get(str(task.id)) == stamp:
            continue
        target = folder / f"{task.name}_{task.id}.zip"
        partial = folder / f".{target.name}.part"  # hidden: the drop-folder sensor ignores it
        task.export_dataset(EXPORT_FORMAT, partial, include_images=False)
        os.replace(partial, target)
        fetched[str(task.id)] = stamp
        written.append(target)
    return written
