"""Sliced inference: every frame cut into tiles as sahi cuts them, tiles of many frames batched
through one model, raw detections in frame coordinates; and the full-image pass the gate needs.

What a tile sees is what sahi's ultralytics wrapper gives it (read from sahi 0.12 and
ultralytics 8.4 source): the tile in RGB, letterboxed by ultralytics' own ``LetterBox`` (the
minimal rectangle when a batch's images share a shape), ultralytics' per-tile NMS at IoU 0.7
with at most 300 boxes, boxes scaled back and clipped by ``scale_boxes``, shifted by the tile's
origin and clamped to the frame. Nothing is merged across tiles here: the raw detections at a
low confidence floor are what every later setting (confidence, merge, gate) is computed from,
so a model is never run twice on the same frames.

Two backends behind one ``Detector``: ``torch`` (ultralytics' ``AutoBackend`` on the checkpoint)
and ``onnx`` (onnxruntime on the exported model; on these CPUs within 10-15% of torch, either
way depending on the tile size). The thread
count is set here, once: ultralytics' ``select_device`` would reset torch to one thread fewer
than the cores on every CPU call, so it is never called. torch, onnxruntime and ultralytics are
imported inside functions: the code location imports this module and must load quickly.
"""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import cv2
import numpy as np
import pandas as pd

from hoban_pipelines.evaluation.slicing import Slicing

BACKENDS = ("torch", "onnx")
SLICED, FULL = "sliced", "full"  # the two passes
DETECTION_COLUMNS = ["image", "pass", "tile", "cls", "score", "x1", "y1", "x2", "y2"]
FRAME_COLUMNS = ["image", "path", "width", "height", "channels", "tiles", "status"]
OK = "ok"
ONNX_SOURCE_KEY = "hoban_source_sha256"  # metadata the export adds: which checkpoint it came from
# ultralytics stops its NMS after 2 s + 0.05 s an image and drops the rest with a warning (a
# busy full frame at 1920 px on a CPU took longer); a cached pass must be complete
NMS_SECONDS_PER_IMAGE = 60.0
PREFETCH = 4  # frames decoded ahead of the model, in a thread (cv2 releases the GIL)


class EvaluationError(ValueError):
    """Inputs that cannot be evaluated as given: the message names the file and what to do."""


@dataclass(frozen=True)
class InferenceSettings:
    """What a cached pass is computed with; together with the model and the frames it names the cache.

    ``slice_size`` and ``overlap``: the tiling; ``imgsz``: the size tiles are inferred at;
    ``full_imgsz``: the full-image pass's size (0: no full-image pass); ``conf_floor``: the
    lowest confidence kept, below every setting a sweep will try; ``tile_iou`` and ``max_det``:
    ultralytics' per-tile NMS, as sahi runs it.
    """

    slice_size: int
    imgsz: int
    full_imgsz: int = 0
    overlap: float = 0.2
    conf_floor: float = 0.05
    tile_iou: float = 0.7
    max_det: int = 300

    def __post_init__(self) -> None:
        Slicing(self.slice_size, self.overlap)  # validates both
        for name in ("imgsz", "full_imgsz"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (1 if name == "imgsz" else 0):
                raise EvaluationError(f"{name} {value!r} must be a positive number of pixels"
                                      + (" (0: no full-image pass)" if name == "full_imgsz" else ""))
        if not 0 < self.conf_floor < 1:
            raise EvaluationError(f"conf_floor {self.conf_floor!r} must be in (0, 1)")

    @property
    def slicing(self) -> Slicing:
        return Slicing(self.slice_size, self.overlap)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_threads(threads: int) -> int:
    """The CPU threads torch and onnxruntime run with: ``threads``, or every core for 0."""
    return threads if threads > 0 else (os.cpu_count() or 1)


class Detector:
    """One YOLO detector on one backend: ``predict`` takes BGR images and returns, per image,
    its boxes as (x1, y1, x2, y2, score, class) rows in that image's pixels."""

    def __init__(self, *, backend: str, weights: Path, names: list[str], stride: int, trained_imgsz: int,
                 device: str, threads: int, forward: Callable[[Any], Any], end2end: bool = False) -> None:
        self.backend, self.weights, self.names, self.stride = backend, Path(weights), names, stride
        self.trained_imgsz, self.device, self.threads = trained_imgsz, device, threads
        self._forward, self._end2end = forward, end2end

    @property
    def device_name(self) -> str:
        """The device as a person reads it: the GPU's name, or the CPU and its thread count."""
        if self.device == "cpu":
            return f"CPU ({self.threads} threads)"
        import torch

        return torch.cuda.get_device_name(int(self.device))

    def predict(self, images: list[np.ndarray], imgsz: int, conf: float, iou: float = 0.7,
                max_det: int = 300) -> list[np.ndarray]:
        import torch
        from ultralytics.data.augment import LetterBox
        from ultralytics.utils import nms, ops

        if not images:
            return []
        shapes = {image.shape for image in images}
        if shapes == {(imgsz, imgsz, 3)}:  # a tile at its own size: the letterbox would be a copy of it
            batch = np.stack(images)
        else:
            letterbox = LetterBox(imgsz, auto=len(shapes) == 1, stride=self.stride)
            batch = np.stack([letterbox(image=image) for image in images])
        tensor = torch.from_numpy(np.ascontiguousarray(batch[..., ::-1].transpose(0, 3, 1, 2)))  # BGR HWC -> RGB CHW
        with torch.inference_mode():
            tensor = tensor.to(self._torch_device).float().div_(255)
            kept = nms.non_max_suppression(self.raw(tensor), conf, iou, max_det=max_det, end2end=self._end2end,
                                           max_time_img=NMS_SECONDS_PER_IMAGE)
        results = []
        for image, boxes in zip(images, kept):
            boxes = boxes.clone()
            boxes[:, :4] = ops.scale_boxes(tensor.shape[2:], boxes[:, :4], image.shape)
            results.append(boxes.cpu().numpy())
        return results

    def raw(self, tensor):
        """The model's raw output, (batch, 4 + classes, anchors), for a preprocessed RGB batch in [0, 1]."""
        output = self._forward(tensor)
        return output[0] if isinstance(output, (list, tuple)) else output  # the torch model adds its features

    @property
    def _torch_device(self) -> str:
        return "cpu" if self.device == "cpu" or self.backend == "onnx" else f"cuda:{self.device}"


def load_torch_detector(weights: Path, device: str = "cpu", threads: int = 0) -> Detector:
    """The checkpoint at ``weights`` through ultralytics' AutoBackend (fused, eval mode)."""
    import torch
    from ultralytics.nn.autobackend import AutoBackend

    threads = resolve_threads(threads)
    torch.set_num_threads(threads)
    weights = Path(weights)
    torch_device = torch.device("cpu" if device == "cpu" else f"cuda:{device}")
    try:
        model = AutoBackend(str(weights), device=torch_device, fuse=True, verbose=False)
    except Exception as exc:  # any reason it cannot load: say which file
        raise EvaluationError(f"checkpoint {weights} cannot be loaded for inference: {exc}") from exc
    model.eval()
    names = [str(model.names[index]) for index in sorted(model.names)]
    trained = _trained_imgsz(getattr(getattr(model, "model", None), "args", None))
    return Detector(backend="torch", weights=weights, names=names, stride=int(max(model.stride, 32)),
                    trained_imgsz=trained, device=device, threads=threads, forward=model,
                    end2end=bool(getattr(model, "end2end", False)))


def _trained_imgsz(args: Any) -> int:
    value = (args or {}).get("imgsz", 640) if isinstance(args, dict) else getattr(args, "imgsz", 640)
    return int(max(value) if isinstance(value, (list, tuple)) else value)


def load_onnx_detector(path: Path, *, source_sha256: str | None = None, device: str = "cpu",
                       threads: int = 0) -> Detector:
    """The exported model at ``path`` on onnxruntime; with ``source_sha256``, an error unless it
    was exported from exactly that checkpoint."""
    import ast

    import onnxruntime
    import torch

    path = Path(path)
    threads = resolve_threads(threads)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    if device != "cpu":
        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            raise EvaluationError(
                f"device {device!r} asks for CUDA but this onnxruntime ({onnxruntime.__version__}) has no CUDA "
                "provider; install onnxruntime-gpu, or use the torch backend on this machine"
            )
        providers = [("CUDAExecutionProvider", {"device_id": int(device)}), "CPUExecutionProvider"]
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:
        raise EvaluationError(f"{path} is not a loadable ONNX model ({exc}); rematerialize model_export") from exc
    meta = dict(session.get_modelmeta().custom_metadata_map)
    if source_sha256 is not None and meta.get(ONNX_SOURCE_KEY) != source_sha256:
        recorded = meta.get(ONNX_SOURCE_KEY) or "no recorded checkpoint"
        raise EvaluationError(
            f"{path} does not match its checkpoint: it was exported from {recorded}, the checkpoint is "
            f"{source_sha256}; rematerialize model_export for this model"
        )
    try:
        names_map = ast.literal_eval(meta["names"])
        names = [str(names_map[index]) for index in sorted(names_map)]
        stride, imgsz = int(meta["stride"]), ast.literal_eval(meta["imgsz"])
    except (KeyError, ValueError, SyntaxError) as exc:
        raise EvaluationError(f"{path} lacks ultralytics' metadata (names, stride, imgsz): export it with "
                              "ultralytics (model_export)") from exc
    input_name = session.get_inputs()[0].name

    def forward(tensor):
        return torch.from_numpy(session.run(None, {input_name: tensor.numpy()})[0])

    return Detector(backend="onnx", weights=path, names=names, stride=stride,
                    trained_imgsz=int(max(imgsz) if isinstance(imgsz, (list, tuple)) else imgsz),
                    device=device, threads=threads, forward=forward)


@dataclass
class Frame:
    image: str  # the name it is reported under (relative to the dataset)
    path: Path
    pixels: np.ndarray | None = None  # BGR, 3 channels
    channels: int = 0
    status: str = OK


def read_frame(image: str, path: Path) -> Frame:
    """A frame as 3-channel BGR; grayscale and 4-channel images are converted (and say so), an
    unreadable file is a frame with a status instead of pixels."""
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        reason = "no such file" if not Path(path).is_file() else "not a readable image (empty, truncated or not an image)"
        return Frame(image, Path(path), status=f"unreadable: {reason}")
    if pixels.dtype == np.uint16:  # 16-bit PNG/TIFF: keep the high byte, as an 8-bit export would
        pixels = (pixels >> 8).astype(np.uint8)
    elif pixels.dtype != np.uint8:
        return Frame(image, Path(path), status=f"unreadable: unsupported pixel type {pixels.dtype}")
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if channels == 1:
        return Frame(image, Path(path), cv2.cvtColor(pixels.reshape(pixels.shape[:2]), cv2.COLOR_GRAY2BGR), 1,
                     "converted from grayscale")
    if channels == 4:
        return Frame(image, Path(path), cv2.cvtColor(pixels, cv2.COLOR_BGRA2BGR), 4, "converted from 4 channels")
    if channels != 3:
        return Frame(image, Path(path), status=f"unreadable: {channels} channels")
    return Frame(image, Path(path), pixels, 3)


def read_frames(images: Iterable[tuple[str, Path]], prefetch: bool = True) -> Iterator[Frame]:
    """The frames in order; with ``prefetch``, decoded ``PREFETCH`` ahead in a thread so a GPU never
    waits on a JPEG. On a CPU whose every core runs the model a decoding thread would only take
    turns with it, so frames are decoded in line there."""
    if not prefetch:
        for image, path in images:
            yield read_frame(image, Path(path))
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = []
        for image, path in images:
            pending.append(pool.submit(read_frame, image, Path(path)))
            if len(pending) > PREFETCH:
                yield pending.pop(0).result()
        for future in pending:
            yield future.result()


class _Batcher:
    """Collects images of one shape into batches of ``size`` and runs them; results go to ``sink``
    with each image's key and shift. One shape a batch: the letterbox then matches a per-frame run."""

    def __init__(self, detector: Detector, imgsz: int, conf: float, iou: float, max_det: int, size: int,
                 sink: Callable[[Any, tuple[int, int], np.ndarray], None]) -> None:
        self.detector, self.imgsz, self.conf, self.iou, self.max_det = detector, imgsz, conf, iou, max_det
        self.size, self.sink = max(1, size), sink
        self.pending: dict[tuple[int, ...], list[tuple[Any, tuple[int, int], np.ndarray]]] = defaultdict(list)

    def add(self, key: Any, shift: tuple[int, int], image: np.ndarray) -> None:
        queue = self.pending[image.shape]
        queue.append((key, shift, image))
        if len(queue) >= self.size:
            self._run(image.shape)

    def flush(self) -> None:
        for shape in list(self.pending):
            self._run(shape)

    def _run(self, shape: tuple[int, ...]) -> None:
        items = self.pending.pop(shape, [])
        if not items:
            return
        results = self.detector.predict([image for _, _, image in items], self.imgsz, self.conf, self.iou, self.max_det)
        for (key, shift, _), boxes in zip(items, results):
            self.sink(key, shift, boxes)


@dataclass
class PassResult:
    """One inference pass over a list of frames."""

    detections: pd.DataFrame  # DETECTION_COLUMNS, frame pixels
    frames: pd.DataFrame  # FRAME_COLUMNS
    seconds: float  # wall time of the pass, reading included
    warnings: list[str] = field(default_factory=list)


def run_pass(detector: Detector, images: Iterable[tuple[str, Path]], settings: InferenceSettings, *,
             full_image: bool = False, batch: int = 16,
             progress: Callable[[int], None] | None = None) -> PassResult:
    """The sliced pass (default) or the full-image pass over ``images`` ((name, path) pairs).

    Unreadable frames are reported in the frame table and the warnings; the pass goes on.
    ``batch`` counts tiles; the full-image pass batches as many frames as hold about as many pixels.
    """
    found: list[tuple[str, int, np.ndarray, np.ndarray]] = []  # image, tile, boxes in frame pixels, kept rows
    frame_rows: list[dict[str, Any]] = []
    imgsz = settings.full_imgsz if full_image else settings.imgsz
    if full_image and not imgsz:
        raise EvaluationError("the full-image pass needs full_imgsz > 0")
    pass_name = FULL if full_image else SLICED
    slicing = settings.slicing

    def sink(key, shift, boxes):
        image, tile, width, height = key
        xyxy = boxes[:, :4].astype(np.float64) + np.array([shift[0], shift[1], shift[0], shift[1]])
        xyxy = np.clip(xyxy, 0, [width, height, width, height])
        keep = (xyxy[:, 0] < xyxy[:, 2]) & (xyxy[:, 1] < xyxy[:, 3])  # sahi drops boxes that clamp to nothing
        if keep.any():
            found.append((image, tile, xyxy[keep], boxes[keep]))

    size = max(1, batch * settings.imgsz ** 2 // imgsz ** 2) if full_image else batch
    batcher = _Batcher(detector, imgsz, settings.conf_floor, settings.tile_iou, settings.max_det, size, sink)
    started = time.perf_counter()
    for done, frame in enumerate(read_frames(images, prefetch=detector.device != "cpu"), start=1):
        if frame.pixels is None:
            frame_rows.append({"image": frame.image, "path": str(frame.path), "width": 0, "height": 0, "channels": 0,
                               "tiles": 0, "status": frame.status})
            continue
        height, width = frame.pixels.shape[:2]
        tiles = np.array([[0, 0, width, height]]) if full_image else slicing.tiles(width, height)
        for tile, (x1, y1, x2, y2) in enumerate(tiles.tolist()):
            batcher.add((frame.image, -1 if full_image else tile, width, height), (x1, y1), frame.pixels[y1:y2, x1:x2])
        frame_rows.append({"image": frame.image, "path": str(frame.path), "width": width, "height": height,
                           "channels": frame.channels, "tiles": len(tiles), "status": frame.status})
        if progress:
            progress(done)
    batcher.flush()
    seconds = time.perf_counter() - started
    detections = _detection_table(found, pass_name).astype(
        {"tile": "int32", "cls": "int16", "score": "float32", "x1": "float32", "y1": "float32",
         "x2": "float32", "y2": "float32"})
    frames = pd.DataFrame(frame_rows, columns=FRAME_COLUMNS)
    return PassResult(detections, frames, seconds,
                      frame_warnings(frames, None if full_image else slicing))


def _detection_table(found: list[tuple[str, int, np.ndarray, np.ndarray]], pass_name: str) -> pd.DataFrame:
    """One DataFrame of every tile's kept boxes (``DETECTION_COLUMNS``), built once for the pass."""
    if not found:
        return pd.DataFrame(columns=DETECTION_COLUMNS)
    counts = [len(xyxy) for _, _, xyxy, _ in found]
    xyxy = np.concatenate([xyxy for _, _, xyxy, _ in found])
    raw = np.concatenate([boxes for _, _, _, boxes in found])
    return pd.DataFrame({
        "image": np.repeat([image for image, _, _, _ in found], counts), "pass": pass_name,
        "tile": np.repeat([tile for _, tile, _, _ in found], counts), "cls": raw[:, 5].astype(int),
        "score": raw[:, 4], "x1": xyxy[:, 0], "y1": xyxy[:, 1], "x2": xyxy[:, 2], "y2": xyxy[:, 3],
    })


def frame_warnings(frames: pd.DataFrame, slicing: Slicing | None) -> list[str]:
    """What a person should know about the frames of a pass: unreadable and converted files,
    frames smaller than a tile (one tile, the whole frame, as sahi does), several frame sizes."""
    found = []
    unreadable = frames[frames["status"].str.startswith("unreadable")]
    if len(unreadable):
        listed = "; ".join(f"{row.image} ({row.status})" for row in unreadable.head(5).itertuples())
        found.append(f"{len(unreadable)} of {len(frames)} frames could not be read and were skipped: {listed}"
                     + (" ..." if len(unreadable) > 5 else ""))
    for status, count in Counter(frames["status"]).items():
        if status.startswith("converted"):
            found.append(f"{count} frames {status} to 3-channel colour")
    readable = frames[frames["width"] > 0]
    if slicing is not None:
        small = readable[(readable["width"] < slicing.size) | (readable["height"] < slicing.size)]
        if len(small):
            found.append(f"{len(small)} frames are smaller than a {slicing.size}-px tile on a side and were cut into "
                         f"fewer, narrower tiles (whole-frame on that side), e.g. {small['image'].iloc[0]} "
                         f"({small['width'].iloc[0]}x{small['height'].iloc[0]})")
    sizes = Counter(zip(readable["width"], readable["height"]))
    if len(sizes) > 1:
        found.append("frames come in several sizes: " + ", ".join(
            f"{w}x{h} ({n})" for (w, h), n in sizes.most_common()))
    return found
