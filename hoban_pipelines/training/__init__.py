"""Datasets become checkpoints: training recipes, demo sizing, the job and its child process, views, summaries."""
