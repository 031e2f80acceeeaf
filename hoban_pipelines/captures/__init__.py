"""Captures become review material: ``ingest`` (one day's frames per camera as a manifest)."""
