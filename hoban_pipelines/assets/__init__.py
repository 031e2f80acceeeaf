"""Thin Dagster assets: read inputs, call domain functions, write the lake, report metadata."""

import hoban_pipelines.beta_apis  # noqa: F401  (before any decorator runs)
