"""Construction workers drawn as small sprites with an exact pixel mask.

Every primitive is drawn twice, into the colour sprite and into a boolean mask, with
``cv2.LINE_8`` (no anti-aliasing), so the mask is exactly the set of pixels that belong to the
worker and its tight box is the worker's ground-truth box. Sizes are fractions of the
worker's height in pixels, so the same code draws 20 px CCTV figures and 300 px close-ups.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

Bgr = tuple[int, int, int]

# Colours are listed as RGB (as one reads them) and stored as BGR (as OpenCV draws them).
_HI_VIS_VESTS_RGB = [(214, 255, 40), (196, 245, 52), (255, 120, 20), (255, 96, 36), (240, 232, 40)]
HELMET_COLOURS_RGB = {
    "white": (238, 238, 232),
    "yellow": (250, 206, 30),
    "orange": (248, 122, 24),
    "red": (204, 34, 30),
    "blue": (34, 82, 196),
}
_HELMET_COLOUR_WEIGHTS = {"white": 0.35, "yellow": 0.25, "orange": 0.15, "red": 0.1, "blue": 0.15}
_SKIN_RGB = [(236, 192, 164), (222, 170, 136), (196, 134, 102), (160, 104, 74), (112, 72, 52)]
_HAIR_RGB = [(24, 20, 20), (52, 36, 28), (92, 64, 42), (128, 126, 122)]
_TROUSERS_RGB = [(40, 46, 82), (58, 58, 64), (118, 104, 80), (30, 30, 34), (62, 82, 120)]
_SLEEVES_RGB = [(108, 110, 116), (40, 50, 92), (36, 36, 38), (214, 214, 210), (126, 112, 86)]
_BOOTS_RGB = [(34, 28, 24), (70, 52, 36), (30, 30, 30)]
_REFLECTIVE_STRIPE = (205, 208, 210)

# Fixed-point bits for OpenCV drawing: sub-pixel geometry, still drawn without anti-aliasing.
_SHIFT = 3
_ONE = 1 << _SHIFT


def _bgr(rgb: tuple[int, int, int], brightness: float = 1.0) -> Bgr:
    r, g, b = (min(255, max(0, round(c * brightness))) for c in rgb)
    return (b, g, r)


@dataclass(frozen=True)
class WorkerLook:
    """What a worker wears; fixed for a worker, whether or not the helmet is on."""

    vest: Bgr
    sleeves: Bgr
    trousers: Bgr
    boots: Bgr
    skin: Bgr
    hair: Bgr
    helmet: Bgr
    helmet_colour: str
    build: float  # shoulder-width factor


@dataclass(frozen=True)
class Pose:
    stride_phase: float = 0.0  # radians; limbs swing with sin(stride_phase)
    stride: float = 0.0  # 0 standing still .. 1 full walking swing
    bend: float = 0.0  # 0 upright .. 1 bent over work
    facing: int = 1  # +1 faces right, -1 left
    working_arms: bool = False


@dataclass(frozen=True, eq=False)
class Sprite:
    """A drawn worker, cropped to its tight box; ``feet`` is the feet point inside the crop."""

    pixels: np.ndarray  # (h, w, 3) uint8 BGR, zero outside the mask
    mask: np.ndarray  # (h, w) bool, touches all four crop edges
    feet: tuple[int, int]  # (x, y) of the feet point relative to the crop's top-left


def random_look(rng: np.random.Generator) -> WorkerLook:
    def pick(palette: list[tuple[int, int, int]], spread: float = 0.08) -> Bgr:
        return _bgr(palette[rng.integers(len(palette))], rng.uniform(1 - spread, 1 + spread))

    names = list(_HELMET_COLOUR_WEIGHTS)
    helmet_colour = names[rng.choice(len(names), p=list(_HELMET_COLOUR_WEIGHTS.values()))]
    return WorkerLook(
        vest=pick(_HI_VIS_VESTS_RGB),
        sleeves=pick(_SLEEVES_RGB),
        trousers=pick(_TROUSERS_RGB),
        boots=pick(_BOOTS_RGB),
        skin=pick(_SKIN_RGB, 0.05),
        hair=pick(_HAIR_RGB, 0.05),
        helmet=_bgr(HELMET_COLOURS_RGB[helmet_colour], rng.uniform(0.92, 1.02)),
        helmet_colour=helmet_colour,
        build=float(rng.uniform(0.9, 1.15)),
    )


class _MaskedCanvas:
    """Draws each primitive into the colour canvas and the mask alike."""

    def __init__(self, height: int, width: int) -> None:
        self.pixels = np.zeros((height, width, 3), np.uint8)
        self.mask = np.zeros((height, width), np.uint8)

    @staticmethod
    def _fixed(point: tuple[float, float]) -> tuple[int, int]:
        return (round(point[0] * _ONE), round(point[1] * _ONE))

    def line(self, p0, p1, thickness: float, colour: Bgr) -> None:
        width = max(1, round(thickness))
        for target, value in ((self.pixels, colour), (self.mask, 1)):
            cv2.line(target, self._fixed(p0), self._fixed(p1), value, width, cv2.LINE_8, _SHIFT)

    def polygon(self, points, colour: Bgr) -> None:
        fixed = np.array([self._fixed(p) for p in points], np.int32)
        for target, value in ((self.pixels, colour), (self.mask, 1)):
            cv2.fillConvexPoly(target, fixed, value, cv2.LINE_8, _SHIFT)

    def disc(self, centre, radius: float, colour: Bgr) -> None:
        for target, value in ((self.pixels, colour), (self.mask, 1)):
            cv2.circle(target, self._fixed(centre), round(radius * _ONE), value, -1,
                       cv2.LINE_8, _SHIFT)

    def upper_half_ellipse(self, centre, axes: tuple[float, float], colour: Bgr) -> None:
        fixed_axes = (round(axes[0] * _ONE), round(axes[1] * _ONE))
        for target, value in ((self.pixels, colour), (self.mask, 1)):
            cv2.ellipse(target, self._fixed(centre), fixed_axes, 0, 180, 360, value, -1,
                        cv2.LINE_8, _SHIFT)


def draw_worker(height: int, look: WorkerLook, pose: Pose, *, helmet: bool) -> Sprite:
    """Draw a worker about ``height`` pixels tall, head (or helmet) to soles."""
    if height < 8:
        raise ValueError(f"a worker must be at least 8 px tall, got {height}")
    h = float(height)
    margin = 4 + math.ceil(0.06 * h)  # round line caps reach half a limb width past the ends
    canvas_w = 2 * math.ceil(0.8 * h) + 2 * margin + 1
    canvas = _MaskedCanvas(height + 2 * margin, canvas_w)
    cx, feet_y = canvas_w // 2, height + margin - 1
    face = pose.facing

    head_r = max(1.0, 0.068 * h)
    top = feet_y - h + 1
    bend_dx = face * pose.bend * 0.14 * h
    bend_dy = pose.bend * 0.06 * h
    head_cx = cx + bend_dx * 1.1
    head_cy = top + (1.3 if helmet else 1.0) * head_r + bend_dy
    shoulder_y = head_cy + head_r + 0.035 * h
    hip_y = feet_y - 0.47 * h
    shoulder_half = 0.125 * h * look.build
    hip_half = 0.105 * h * look.build
    shoulder_cx = cx + bend_dx

    limb_swing = pose.stride * math.sin(pose.stride_phase)
    arm_len, arm_w = 0.34 * h, max(1.0, 0.06 * h)

    def arm(side: int) -> tuple[tuple[float, float], tuple[float, float]]:
        start = (shoulder_cx + side * shoulder_half * 0.92, shoulder_y + 0.02 * h)
        if pose.working_arms:
            angle = face * (0.95 + 0.25 * math.sin(pose.stride_phase + side))
        else:
            angle = -side * face * 0.45 * limb_swing + side * 0.08
        return start, (start[0] + arm_len * math.sin(angle), start[1] + arm_len * math.cos(angle))

    back_side, front_side = -face, face
    canvas.line(*arm(back_side), arm_w, look.sleeves)

    boot_h = 0.045 * h
    leg_w = max(1.0, 0.085 * h)
    for side in (-1, 1):
        hip = (cx + side * 0.05 * h, hip_y)
        leg_len = feet_y - boot_h - hip_y
        angle = side * 0.38 * limb_swing + (0.0 if pose.stride else side * 0.05)
        ankle = (hip[0] + leg_len * math.sin(angle), feet_y - boot_h)
        canvas.line(hip, ankle, leg_w, look.trousers)
        canvas.line(ankle, (ankle[0] + face * 0.035 * h, feet_y), leg_w, look.boots)

    canvas.polygon(
        [(shoulder_cx - shoulder_half, shoulder_y), (shoulder_cx + shoulder_half, shoulder_y),
         (cx + hip_half, hip_y), (cx - hip_half, hip_y)],
        look.vest,
    )
    if h >= 36:  # reflective bands become visible only on larger figures
        for frac in (0.45, 0.75):
            y = shoulder_y + frac * (hip_y - shoulder_y)
            half = shoulder_half + frac * (hip_half - shoulder_half)
            mid = shoulder_cx + frac * (cx - shoulder_cx)
            canvas.line((mid - half + 1, y), (mid + half - 1, y), max(1.0, 0.025 * h),
                        _REFLECTIVE_STRIPE)

    neck_top = (head_cx, head_cy + head_r * 0.8)
    canvas.line(neck_top, (shoulder_cx, shoulder_y + 0.01 * h), max(1.0, 0.05 * h), look.skin)
    arm_start, hand = arm(front_side)
    canvas.line(arm_start, hand, arm_w, look.sleeves)
    if h >= 40:
        canvas.disc(hand, max(1.0, 0.028 * h), look.skin)

    canvas.disc((head_cx, head_cy), head_r, look.skin)
    if helmet:
        canvas.upper_half_ellipse((head_cx, head_cy - 0.25 * head_r),
                                  (1.12 * head_r, 1.05 * head_r), look.helmet)
        brim_y = head_cy - 0.2 * head_r
        canvas.line((head_cx - face * 1.35 * head_r, brim_y),
                    (head_cx + face * 1.6 * head_r, brim_y),
                    max(1.0, 0.3 * head_r), look.helmet)
    else:
        canvas.upper_half_ellipse((head_cx, head_cy - 0.1 * head_r),
                                  (1.05 * head_r, 0.95 * head_r), look.hair)

    return _crop_to_mask(canvas, (cx, feet_y))


def _crop_to_mask(canvas: _MaskedCanvas, feet: tuple[int, int]) -> Sprite:
    mask = canvas.mask.astype(bool)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    if y0 == 0 or x0 == 0 or y1 == mask.shape[0] or x1 == mask.shape[1]:
        raise RuntimeError("worker drawing reached the canvas edge; enlarge the margin")
    return Sprite(
        pixels=canvas.pixels[y0:y1, x0:x1].copy(),
        mask=mask[y0:y1, x0:x1].copy(),
        feet=(int(feet[0] - x0), int(feet[1] - y0)),
    )
