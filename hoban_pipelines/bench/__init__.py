"""Benchmarks that measure the pipeline's parts on generated data (no dagster, no network)."""
