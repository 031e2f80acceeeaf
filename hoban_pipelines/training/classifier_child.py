"""The crop-classifier training subprocess: ``python -m hoban_pipelines.training.classifier_child``.

Started like the detectors' child (``training.child``), through Dagster Pipes, with the job in
``context.extras`` (the keys of ``training.classifier.ClassifierJob``); every epoch's loss and
accuracy come back as log lines and custom messages, and ``run_dir/summary.json`` holds the
scores the asset publishes. Without Dagster, ``--job job.json`` names the job.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# before ultralytics is imported: it reads this once, and nothing here may reach the internet
os.environ.setdefault("YOLO_OFFLINE", "1")

from dagster_pipes import PipesContext, open_dagster_pipes  # noqa: E402

from hoban_pipelines.training.classifier import ClassifierJob, train_classifier  # noqa: E402
from hoban_pipelines.training.recipes import TrainingError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hoban_pipelines.training.classifier_child",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--job", type=Path, help="job JSON (the keys of ClassifierJob) for a run without Dagster")
    options = parser.parse_args(argv)
    try:
        with open_dagster_pipes() as context:
            if options.job:
                extras = json.loads(options.job.read_text())
                log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
            elif isinstance(context, PipesContext):
                extras, log = dict(context.extras), context.log.info
            else:
                raise TrainingError("not started by Dagster: name the job with --job job.json")
            job = ClassifierJob.from_extras(extras)
            summary = train_classifier(job, log, on_epoch=context.report_custom_message)
            log(f"accuracy {summary['accuracy']:.3f} on {summary['images']} {job.eval_split} crops; "
                f"summary in {Path(job.run_dir) / 'summary.json'}")
    except (TrainingError, OSError, json.JSONDecodeError) as exc:
        print(f"classifier training failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
