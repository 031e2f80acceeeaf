"""Short fixed-camera videos of a restricted zone, with labelled segments, for the ROI classifier.

Each video watches two zones (its ROIs) from a fixed camera; its JSON spec labels stretches of
frames the way the team's annotators do: ``true`` (a worker inside the zone), ``false`` (the
zone is clear; a cart or debris still moves through it) and ``unknown`` (night or fog: nothing
can be told). Simulation videos are clean renders; real ones have another background, colour
cast and more sensor noise, so the classifier is tested across the domain gap the team's split
rule (train on simulation, test on real) is meant to measure.

Written as MJPG in .avi (headless OpenCV writes it everywhere). The same seed gives the same
frames; the videos are a few MB in all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from hoban_pipelines.demo.render import add_sensor_noise, gaussian_noise_table
from hoban_pipelines.demo.workers import Pose, draw_worker, random_look

FRAME_SIZE = (320, 240)  # w, h
FPS = 10
ROIS = [[24, 56, 112, 136], [184, 56, 112, 136]]  # x, y, w, h
LABEL_MAP = {"0": "false", "1": "true", "2": "unknown"}
LABEL_ID = {name: int(key) for key, name in LABEL_MAP.items()}
# a video's stretches in order, as shares of its frames: enough true frames for 60 crops per ROI
SEGMENT_PLAN = (("false", 0.12), ("true", 0.33), ("unknown", 0.12), ("true", 0.31), ("false", 0.12))
GAP_FRAMES = 4  # unlabelled frames between stretches, as annotators leave them
# sensor noise: a real camera's is stronger; night or fog drowns the zone in it
NOISE = {"simulation": gaussian_noise_table(2.0), "real": gaussian_noise_table(4.0), "unknown": gaussian_noise_table(14.0)}


@dataclass(frozen=True)
class RoiVideoPlan:
    group: str  # simulation | real
    name: str
    frames: int


PLANS = {
    "demo": (RoiVideoPlan("simulation", "sim_gate_a", 520), RoiVideoPlan("simulation", "sim_gate_b", 520),
             RoiVideoPlan("real", "real_gate_a", 300), RoiVideoPlan("real", "real_gate_b", 300)),
    "small": (RoiVideoPlan("simulation", "sim_gate_a", 150), RoiVideoPlan("real", "real_gate_a", 120)),
}


def segments_of(frames: int) -> list[dict[str, int]]:
    """The plan's stretches for a video of ``frames`` frames, ``end_frame`` inclusive."""
    segments, start = [], 0
    for index, (label, share) in enumerate(SEGMENT_PLAN):
        end = frames - 1 if index == len(SEGMENT_PLAN) - 1 else start + round(share * frames) - 1
        segments.append({"start_frame": start, "end_frame": end - (GAP_FRAMES if index < len(SEGMENT_PLAN) - 1 else 0),
                         "label": LABEL_ID[label]})
        start = end + 1
    return segments


def _background(rng: np.random.Generator, real: bool) -> np.ndarray:
    width, height = FRAME_SIZE
    texture = cv2.GaussianBlur(rng.integers(0, 255, (height, width), dtype=np.uint8), (0, 0), 6)
    ground = np.linspace(0.7, 1.1, height)[:, None] * (120 if real else 140)
    grey = np.clip(ground + (texture.astype(np.float32) - 128) * 0.5, 0, 255)
    tint = np.array([1.08, 1.0, 0.86] if real else [0.95, 1.0, 1.05], np.float32)  # BGR cast: warm for real
    image = np.clip(grey[..., None] * tint, 0, 255).astype(np.uint8)
    for x, y, w, h in ROIS:  # the zone: a concrete pad with a painted border, as on site
        image[y:y + h, x:x + w] = np.clip(np.array([150, 152, 150]) * tint, 0, 255).astype(np.uint8)
        cv2.rectangle(image, (x - 3, y - 3), (x + w + 2, y + h + 2), (40, 200, 230), 2)
    return image


def _place(image: np.ndarray, sprite, left: int, top: int) -> None:
    region = image[top:top + sprite.mask.shape[0], left:left + sprite.mask.shape[1]]
    region[sprite.mask] = sprite.pixels[sprite.mask]


def _frame(background: np.ndarray, label: str, t: int, rng: np.random.Generator, looks, real: bool) -> np.ndarray:
    image = background.copy()
    for index, (x, y, w, h) in enumerate(ROIS):
        if label == "true":  # one or two workers walking about the zone
            for k in range(1 + (t // 23 + index) % 2):
                height = int(h * (0.45 + 0.2 * np.sin(t / 13 + index + 2 * k)))
                sprite = draw_worker(height, looks[(index + k) % len(looks)],
                                     Pose(stride_phase=t * 0.6, stride=0.8, facing=1 if (t // 30 + k) % 2 else -1),
                                     helmet=(t // 40 + index + k) % 3 != 0)
                sh, sw = sprite.mask.shape
                u = 0.5 + 0.5 * np.sin(t / (9.0 + 3 * k) + 1.7 * index + 2.1 * k)
                v = 0.5 + 0.5 * np.sin(t / (7.0 + 2 * k) + 0.9 * index + 1.3 * k)
                _place(image, sprite, x + int(u * (w - sw)), y + int(v * (h - sh)))
        elif label == "false":  # a cart crossing, and a crane's shadow sweeping the pad
            u = 0.5 + 0.5 * np.sin(t / 8.0 + 1.7 * index)
            v = 0.5 + 0.5 * np.sin(t / 11.0 + 0.4 * index)
            left, top = x + int(u * (w - 34)), y + int(v * (h - 30))
            cv2.rectangle(image, (left, top), (left + 34, top + 22), (70, 90, 110), -1)
            cv2.circle(image, (left + 7, top + 25), 4, (20, 20, 20), -1)
            cv2.circle(image, (left + 27, top + 25), 4, (20, 20, 20), -1)
            band = x + (t * 11 + 40 * index) % (w + 60) - 30
            pad = image[y:y + h, x:x + w]
            columns = slice(max(0, band - x), max(0, min(w, band - x + 28)))
            pad[:, columns] = cv2.convertScaleAbs(pad[:, columns], alpha=0.6)
    if label == "unknown":  # night or fog over the whole view
        image = cv2.convertScaleAbs(image, alpha=0.25, beta=30)
    return add_sensor_noise(image, rng, NOISE["unknown" if label == "unknown" else "real" if real else "simulation"])


def write_roi_video(folder: Path, plan: RoiVideoPlan, seed: int) -> dict:
    """One video and its JSON spec under ``folder/<group>/``; its summary."""
    rng = np.random.default_rng([seed, len(plan.name), sum(map(ord, plan.name))])
    real = plan.group == "real"
    background = _background(rng, real)
    looks = [random_look(rng), random_look(rng)]
    segments = segments_of(plan.frames)
    label_at = {}
    for segment in segments:
        for frame in range(segment["start_frame"], segment["end_frame"] + 1):
            label_at[frame] = LABEL_MAP[str(segment["label"])]
    out = Path(folder) / plan.group
    out.mkdir(parents=True, exist_ok=True)
    video = out / f"{plan.name}.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), FPS, FRAME_SIZE)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write MJPG video {video}")
    previous = "false"
    for t in range(plan.frames):
        label = label_at.get(t, previous)  # gaps look like the stretch before them
        previous = label
        writer.write(_frame(background, label, t, rng, looks, real))
    writer.release()
    spec = {"video_path": video.name, "roi": ROIS, "label_map": LABEL_MAP, "segments": segments}
    (out / f"{plan.name}.json").write_text(json.dumps(spec, indent=2))
    return {"video": f"{plan.group}/{video.name}", "frames": plan.frames, "group": plan.group}


def write_roi_videos(folder: Path, seed: int, profile: str) -> list[dict]:
    """The profile's videos (``demo``: 2 simulation + 2 real; ``small``: one each)."""
    return [write_roi_video(folder, plan, seed) for plan in PLANS[profile]]
