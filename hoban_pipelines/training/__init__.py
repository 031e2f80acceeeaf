"""Datasets become checkpoints, one concept a module: ``recipes`` (what to train), ``profiles``
(run sizes), ``view`` (the files ultralytics reads), ``job`` (one run: device, checkpoint, run
folder, publishing), ``child`` (the Pipes subprocess that trains), ``summary`` (a finished run's
metrics, the model comparison) and ``plots`` (their pictures)."""
