"""Models become measured settings: ``slicing`` (tiles as sahi cuts them), ``engine`` (one sliced
and one full-image inference pass, raw detections cached as Parquet), ``export`` (ONNX),
``postprocess`` (sahi's merges over cached detections), ``gate`` (the full-image gate),
``metrics`` (matching, P/R/F1, mAP, size buckets, false-positive kinds), ``sweeps`` (every
setting scored from one cache, the adopted setting) and ``report`` (plots, pictures, the card)."""
