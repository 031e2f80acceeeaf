"""Human review of pseudo-labels in CVAT: ``packages`` (task packages, and creating the tasks from them)."""
