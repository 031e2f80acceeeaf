"""The YOLO/GPU runtime: where and how training and inference run.

Every asset that uses it sits in the ``gpu`` concurrency pool, which the instance limits to one
step at a time (dagster.yaml), so two training runs never share a GPU.
"""

import dagster as dg


class YoloRuntime(dg.ConfigurableResource):
    """``device``: 'auto' (CUDA when present, else CPU), 'cpu', or a CUDA device ('0', 'cuda:0');
    asking for CUDA where there is none is an error, never a silent CPU run."""

    device: str = "auto"
    batch: int = 0  # images per batch; 0 keeps the recipe's (GPU memory decides the real number)
    workers: int = 2  # dataloader processes on a GPU (ultralytics loads CPU batches in the training process)
    threads: int = 0  # torch CPU threads; 0: every core
    amp: bool = True  # mixed precision on CUDA; always off on the CPU
    cache: bool = False  # ultralytics image cache in RAM
