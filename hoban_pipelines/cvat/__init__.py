"""CVAT label formats: the RLE mask codec, the XML reader and the XML writer (no dagster)."""
