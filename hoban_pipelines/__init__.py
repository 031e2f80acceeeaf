"""hoban_pipelines: the construction-safety vision team's ML workflow as one Dagster code location."""

import os

# ultralytics pip-installs a missing requirement at run time whenever the machine is online
# (AUTOINSTALL, read once when ultralytics is first imported). Every dependency is declared
# instead, so no process of ours lets it install anything: this runs before any of our modules
# can import ultralytics, in the CLI, the code location and the training child alike.
os.environ.setdefault("YOLO_AUTOINSTALL", "false")

__version__ = "0.1.0"
