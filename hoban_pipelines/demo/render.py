"""Frames of the simulated site: a pure function of (seed, camera, timestamp).

A frame is the camera's cached static background, the visible workers composited through
their exact masks, daylight for that moment, and sensor noise drawn from the frame's own
random stream; the JPEG is encoded with fixed parameters, so the same inputs give the same
bytes on every run.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import cv2
import numpy as np

from hoban_pipelines.demo.crew import Crew, WorkerState, daylight_gains
from hoban_pipelines.demo.scene import (
    FRAME_HEIGHT,
    FRAME_WIDTH,
    Box,
    CameraScene,
    build_camera_scene,
    camera_index,
    ground_shadow,
)
from hoban_pipelines.demo.seeding import Stream, stream_rng
from hoban_pipelines.demo.workers import Sprite, draw_worker

CLASSES = ("person_with_helmet", "person_without_helmet")
JPEG_QUALITY = 90
SENSOR_NOISE_SIGMA = 2.8
WORKER_GAP = 3  # px kept free between workers' boxes, so every box holds one worker
KEEP_OUT_MARGIN = 10  # px kept free around the planted false-positive spots


def gaussian_noise_table(sigma: float) -> np.ndarray:
    """Maps a uniform byte to a Gaussian value (as int8): cheap per-pixel Gaussian noise."""
    normal = NormalDist(0.0, sigma)
    values = [round(normal.inv_cdf((i + 0.5) / 256)) for i in range(256)]
    return np.array(values, np.int8).reshape(256, 1)


_NOISE_TABLE = gaussian_noise_table(SENSOR_NOISE_SIGMA)


def add_sensor_noise(image: np.ndarray, rng: np.random.Generator, table: np.ndarray) -> np.ndarray:
    uniform = rng.integers(0, 256, image.shape, dtype=np.uint8)
    return cv2.add(image, cv2.LUT(uniform, table), dtype=cv2.CV_8U)


def apply_gains(image: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Scale each channel by its gain (saturating), through a per-channel lookup table."""
    levels = np.arange(256, dtype=np.float64)[:, None] * np.asarray(gains)[None, :]
    table = np.clip(np.round(levels), 0, 255).astype(np.uint8).reshape(256, 1, 3)
    return cv2.LUT(image, table)


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buffer.tobytes()


@dataclass(frozen=True, eq=False)
class PlacedWorker:
    """A visible worker in a frame. ``box`` is the tight box of ``mask`` in frame pixels,
    edges ``[min_x, min_y, max_x + 1, max_y + 1]``: the ground-truth box."""

    worker_id: int
    cls: int
    box: Box
    mask: np.ndarray  # bool, the box's size
    pixels: np.ndarray
    feet: tuple[int, int]


@dataclass(frozen=True, eq=False)
class RenderedFrame:
    image: np.ndarray
    workers: tuple[PlacedWorker, ...]


def boxes_touch(a: Box, b: Box, gap: int = 0) -> bool:
    return (a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap)


def place_sprite(worker_id: int, sprite: Sprite, feet: tuple[int, int], helmet: bool) -> PlacedWorker:
    """Put ``sprite`` with its feet at ``feet`` (frame pixels)."""
    left, top = feet[0] - sprite.feet[0], feet[1] - sprite.feet[1]
    height, width = sprite.mask.shape
    return PlacedWorker(
        worker_id=worker_id,
        cls=0 if helmet else 1,
        box=(left, top, left + width, top + height),
        mask=sprite.mask,
        pixels=sprite.pixels,
        feet=feet,
    )


def composite(image: np.ndarray, workers: tuple[PlacedWorker, ...]) -> None:
    """Draw workers (and their shadows, outside their masks) onto ``image`` in place."""
    for worker in workers:
        height = worker.box[3] - worker.box[1]
        ground_shadow(image, worker.feet[0], worker.feet[1], 0.2 * height, 0.04 * height)
    for worker in workers:
        x1, y1, x2, y2 = worker.box
        region = image[y1:y2, x1:x2]
        region[worker.mask] = worker.pixels[worker.mask]


class SiteWorld:
    """The simulated site for one seed. Scenes and crews are built on first use and cached."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._scenes: dict[str, CameraScene] = {}
        self._crews: dict[str, Crew] = {}

    def scene(self, camera: str) -> CameraScene:
        if camera not in self._scenes:
            self._scenes[camera] = build_camera_scene(self.seed, camera)
        return self._scenes[camera]

    def crew(self, camera: str) -> Crew:
        if camera not in self._crews:
            self._crews[camera] = Crew(self.seed, self.scene(camera))
        return self._crews[camera]

    def layout(self, camera: str, t: int) -> tuple[PlacedWorker, ...]:
        """The workers visible at ``t`` (cheap: draws only the small sprites).

        Nearer workers are placed first; a worker is left out (out of view) when its box
        would come within ``WORKER_GAP`` of one already placed, lies behind a structure it
        overlaps, or comes near a planted false-positive spot.
        """
        scene = self.scene(camera)
        states = sorted(self.crew(camera).states_at(t), key=lambda s: (-s.feet[1], s.worker_id))
        keep_out = [(x1 - KEEP_OUT_MARGIN, y1 - KEEP_OUT_MARGIN, x2 + KEEP_OUT_MARGIN,
                     y2 + KEEP_OUT_MARGIN) for x1, y1, x2, y2 in scene.planted_spots]
        placed: list[PlacedWorker] = []
        for state in states:
            worker = self._draw(scene, state)
            x1, y1, x2, y2 = worker.box
            if x1 < 0 or y1 < 0 or x2 > FRAME_WIDTH or y2 > FRAME_HEIGHT:
                continue
            if any(boxes_touch(worker.box, other.box, WORKER_GAP) for other in placed):
                continue
            if any(boxes_touch(worker.box, spot) for spot in keep_out):
                continue
            if any(obj.occludes and obj.base_y > worker.feet[1] and boxes_touch(worker.box, obj.box)
                   for obj in scene.objects):
                continue
            placed.append(worker)
        return tuple(sorted(placed, key=lambda w: w.worker_id))

    @staticmethod
    def _draw(scene: CameraScene, state: WorkerState) -> PlacedWorker:
        feet = (round(state.feet[0]), round(state.feet[1]))
        height = round(scene.perspective.person_height(feet[1]))
        sprite = draw_worker(height, state.look, state.pose, helmet=state.helmet)
        return place_sprite(state.worker_id, sprite, feet, state.helmet)

    def render(self, camera: str, t: int) -> RenderedFrame:
        workers = self.layout(camera, t)
        image = self.scene(camera).background.copy()
        composite(image, workers)
        image = apply_gains(image, daylight_gains(self.seed, camera, t))
        noise_rng = stream_rng(self.seed, Stream.SENSOR_NOISE, camera_index(camera), t)
        return RenderedFrame(add_sensor_noise(image, noise_rng, _NOISE_TABLE), workers)

    def encode(self, camera: str, t: int) -> tuple[bytes, tuple[PlacedWorker, ...]]:
        frame = self.render(camera, t)
        return encode_jpeg(frame.image), frame.workers
