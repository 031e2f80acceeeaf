"""hoban_pipelines: the construction-safety vision team's ML workflow as one Dagster code location."""

__version__ = "0.1.0"
