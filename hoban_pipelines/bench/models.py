"""A detector checkpoint for benchmarks and tests when no trained model is at hand.

A YOLO built from its yaml (no weights can be downloaded here) scores every anchor about
0.0004: ultralytics sets the class bias to log(5 / nc / (640 / stride)^2) for training, and
torch's default initialisation shrinks the features to nothing by the head, so nothing passes
a confidence floor. With He initialisation and the class logits spread to about N(-5, 1.5), the
same network fires like a busy trained model: on the demo frames, 235 boxes a 256-px tile at
conf 0.05, 60 at 0.1, 4 at 0.2, overlapping and of all sizes. That exercises slicing, batching, per-tile NMS and the
cross-tile merges harder than a trained model's few confident boxes, and its speed is a trained
model's: the same layers and shapes.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

SCAFFOLD = "yolov8n.yaml"
LOGIT_CENTRE, LOGIT_SPREAD = -5.0, 2.0  # on a noise image; about N(-5, 1.5) on a site frame
# a longer tail, like a trained model: on the demo frames, 74 boxes a 256-px tile above conf
# 0.05, 23 above 0.1, 1 above 0.3; denser at the floor than a trained model, so what a sweep
# over them costs is not understated
TRAINED_LIKE = {"logit_centre": -7.0, "logit_spread": 3.0}


def firing_checkpoint(path: Path, classes: list[str], *, imgsz: int = 640, seed: int = 0,
                      logit_centre: float = LOGIT_CENTRE, logit_spread: float = LOGIT_SPREAD) -> Path:
    """Write an ultralytics checkpoint of an untrained ``SCAFFOLD`` that fires (module docstring)."""
    import torch
    from ultralytics import __version__
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(seed)
    model = DetectionModel(SCAFFOLD, nc=len(classes), verbose=False)
    model.names = dict(enumerate(classes))
    with torch.no_grad():
        # He initialisation keeps the activations' scale through the stack (torch's default
        # shrinks them layer by layer, to nothing at the head)
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        classifiers = [branch[-1] for branch in model.model[-1].cv3]
        for conv in classifiers:
            conv.bias.zero_()
        model.eval()
        scores = model(torch.rand(1, 3, imgsz, imgsz))[0][0, 4:].double().clamp(1e-9, 1 - 1e-9)
        spread = float(torch.logit(scores).std())  # measured on a noise image
        for conv in classifiers:
            conv.weight.mul_(logit_spread / spread)
            conv.bias.fill_(logit_centre)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.half(), "ema": None, "updates": 0, "optimizer": None, "epoch": -1,
                "train_args": {"imgsz": imgsz, "task": "detect"}, "date": datetime.now(timezone.utc).isoformat(),
                "version": __version__}, path)
    return path
