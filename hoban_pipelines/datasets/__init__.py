"""Labelled sets become training datasets: the leakage grouping, splits, mixes, recipes, near-duplicates, checks."""
