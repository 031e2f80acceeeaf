"""The last stage: which evaluated checkpoint is the production model."""
