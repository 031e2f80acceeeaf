"""Human review of pseudo-labels in CVAT and what comes back: ``packages`` (task packages, and
creating the tasks), ``round`` (a round's images), ``drop_folder`` and ``cvat_server`` (finished
exports arriving), ``changes`` (what reviewers changed, the reviewed labels), ``mix`` (the
retraining mix)."""
