"""The static part of each camera's view: ground, structures and clutter.

Stands in for the two fixed CCTV cameras of the user's site. The camera looks down at the
yard, so the ground is a textured plane warped by a homography (coarser near the bottom) and
everything is scaled by a linear perspective model: a worker whose feet are at row ``y`` is
``Perspective.person_height(y)`` pixels tall, and so is the unit used to size objects there.
Among the clutter are objects a detector mistakes for small people (cones, bollards with a
round cap, barrels, signs, a hi-vis jacket hanging on a hook); a few of them are the fixed
spots where the user's pre-annotations kept firing. A background is rendered once per
(seed, camera) and reused for every frame.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from hoban_pipelines.demo.seeding import Stream, stream_rng

FRAME_WIDTH, FRAME_HEIGHT = 1920, 1080
CAMERAS = ("cam1", "cam2")

Box = tuple[int, int, int, int]  # pixel edges: x1, y1, x2, y2 (exclusive)
Bgr = tuple[int, int, int]


def rgb(r: int, g: int, b: int) -> Bgr:
    return (b, g, r)


def _shade(colour: Bgr, factor: float) -> Bgr:
    return tuple(int(min(255, max(0, round(c * factor)))) for c in colour)  # type: ignore[return-value]


def camera_index(camera: str) -> int:
    """The integer key of a camera in random streams (1-based)."""
    try:
        return CAMERAS.index(camera) + 1
    except ValueError:
        raise ValueError(f"unknown camera {camera!r}; cameras are {CAMERAS}") from None


@dataclass(frozen=True)
class Perspective:
    """Person height in pixels as a linear function of the feet row."""

    far_y: float
    far_height: float
    near_y: float
    near_height: float

    def person_height(self, feet_y: float) -> float:
        slope = (self.near_height - self.far_height) / (self.near_y - self.far_y)
        return self.far_height + (feet_y - self.far_y) * slope


@dataclass(frozen=True)
class WalkArea:
    """The trapezoid of ground where workers' feet may be."""

    far_y: float
    near_y: float
    far_x: tuple[float, float]
    near_x: tuple[float, float]

    def x_range(self, y: float) -> tuple[float, float]:
        t = (y - self.far_y) / (self.near_y - self.far_y)
        return (self.far_x[0] + t * (self.near_x[0] - self.far_x[0]),
                self.far_x[1] + t * (self.near_x[1] - self.far_x[1]))

    def sample(self, rng: np.random.Generator) -> tuple[float, float]:
        y = float(rng.uniform(self.far_y, self.near_y))
        x0, x1 = self.x_range(y)
        return float(rng.uniform(x0, x1)), y


@dataclass(frozen=True)
class SceneObject:
    kind: str
    box: Box
    base_y: int  # row where it stands on the ground; a worker whose feet are above it is behind it
    occludes: bool


@dataclass(frozen=True, eq=False)
class CameraScene:
    camera: str
    background: np.ndarray  # (1080, 1920, 3) uint8 BGR, read-only
    perspective: Perspective
    walk_area: WalkArea
    objects: tuple[SceneObject, ...]
    # Boxes around static clutter where the user's pre-annotator kept firing.
    planted_spots: tuple[Box, ...]


# --------------------------------------------------------------------------- textures


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Zero-mean, unit-ish noise with features about ``cell`` pixels across."""
    small = rng.standard_normal((height // cell + 2, width // cell + 2)).astype(np.float32)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def _fractal_noise(rng: np.random.Generator, height: int, width: int,
                   cells: tuple[int, ...] = (256, 64, 16, 4)) -> np.ndarray:
    total = np.zeros((height, width), np.float32)
    for i, cell in enumerate(cells):
        total += _smooth_noise(rng, height, width, cell) * (0.6 ** i)
    return total


@dataclass(frozen=True)
class GroundStyle:
    base: Bgr
    tint: tuple[float, float, float]  # per-channel response to low-frequency variation
    variation: float
    grain: float
    stones_per_mpx: int
    stone_colours: tuple[Bgr, ...]


GROUND_STYLES = {
    "gravel": GroundStyle(rgb(128, 120, 108), (1.0, 1.0, 1.1), 14, 11, 9000,
                          (rgb(170, 164, 152), rgb(92, 86, 78), rgb(140, 124, 104))),
    "dirt": GroundStyle(rgb(124, 100, 76), (0.8, 1.0, 1.2), 16, 7, 2500,
                        (rgb(150, 128, 100), rgb(90, 70, 52))),
    "concrete": GroundStyle(rgb(150, 148, 142), (1.0, 1.0, 1.0), 9, 5, 600,
                            (rgb(120, 118, 114), rgb(176, 174, 168))),
    "asphalt": GroundStyle(rgb(74, 74, 78), (1.0, 1.0, 1.0), 7, 8, 3000,
                           (rgb(100, 100, 102), rgb(56, 56, 60))),
}


def _ground_plane(rng: np.random.Generator, size: int, style: GroundStyle) -> np.ndarray:
    """A square top-down ground texture (before perspective)."""
    low = _fractal_noise(rng, size, size, (512, 128, 32))
    grain = rng.standard_normal((size, size)).astype(np.float32) * style.grain
    plane = np.empty((size, size, 3), np.float32)
    for channel in range(3):
        plane[..., channel] = style.base[channel] + low * style.variation * style.tint[channel] + grain
    stones = int(style.stones_per_mpx * size * size / 1e6)
    ys = rng.integers(0, size - 3, stones)
    xs = rng.integers(0, size - 3, stones)
    colours = np.array(style.stone_colours, np.float32)[rng.integers(0, len(style.stone_colours), stones)]
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1), (2, 1)):
        plane[ys + dy, xs + dx] = colours * rng.uniform(0.85, 1.15, (stones, 1)).astype(np.float32)
    return plane


def _blend_region(plane: np.ndarray, region: np.ndarray, colour: Bgr, strength: float) -> None:
    """Pull ``plane`` toward ``colour`` where ``region`` (0..1 float) is set."""
    rows = np.flatnonzero(region.max(axis=1) > 0)
    cols = np.flatnonzero(region.max(axis=0) > 0)
    if not rows.size:
        return
    window = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    weight = (region[window] * strength)[..., None]
    patch = plane[window]
    patch += (np.array(colour, np.float32) - patch) * weight


def _decorate_plane(rng: np.random.Generator, plane: np.ndarray, *, slabs: int, dirt: float,
                    tracks: int, puddles: int) -> None:
    """Concrete slabs, dirt patches, tyre tracks and puddles; sizes scale with the plane."""
    size = plane.shape[0]
    scale = size / 2048
    if dirt:
        blobs = _smooth_noise(rng, size, size, int(160 * scale))
        _blend_region(plane, np.clip((blobs - 0.6) * 1.5, 0, 1), rgb(112, 88, 64), dirt)
    for _ in range(slabs):
        x0, y0 = (rng.uniform(0, size * 0.75, 2)).astype(int)
        w, h = (rng.uniform(0.15, 0.34, 2) * size).astype(int)
        region = np.zeros((size, size), np.float32)
        cv2.rectangle(region, (int(x0), int(y0)), (int(x0 + w), int(y0 + h)), 1.0, -1)
        _blend_region(plane, region, rgb(160, 158, 152), 0.85)
        for k in range(1, 4):  # expansion joints
            x = int(x0 + k * w / 4)
            cv2.line(plane, (x, int(y0)), (x, int(y0 + h)), rgb(96, 94, 90), max(1, round(3 * scale)))
    for _ in range(tracks):
        pts = np.cumsum(rng.normal(0, 1, (8, 2)) * [60 * scale, 40 * scale] + [0, size / 7], axis=0)
        pts[:, 0] += rng.uniform(0, size)
        for offset in (-70 * scale, 70 * scale):
            region = np.zeros((size, size), np.float32)
            cv2.polylines(region, [(pts + [offset, 0]).astype(np.int32)], False, 1.0,
                          max(2, round(34 * scale)))
            _blend_region(plane, cv2.GaussianBlur(region, (0, 0), 6 * scale), rgb(84, 74, 64), 0.45)
    for _ in range(puddles):
        centre = (int(rng.uniform(0.05, 0.95) * size), int(rng.uniform(0.05, 0.95) * size))
        axes = (int(rng.uniform(0.02, 0.075) * size), int(rng.uniform(0.012, 0.04) * size))
        region = np.zeros((size, size), np.float32)
        cv2.ellipse(region, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
        _blend_region(plane, cv2.GaussianBlur(region, (0, 0), 5 * scale), rgb(70, 78, 86), 0.7)


def _warp_ground(plane: np.ndarray, quad: np.ndarray, width: int, height: int) -> np.ndarray:
    """Project the square ground plane onto the image quad (far-left, far-right, near-right,
    near-left), which gives the texture its perspective."""
    size = plane.shape[0]
    square = np.array([[0, 0], [size, 0], [size, size], [0, size]], np.float32)
    homography = cv2.getPerspectiveTransform(square, quad.astype(np.float32))
    clipped = np.clip(plane, 0, 255).astype(np.uint8)
    return cv2.warpPerspective(clipped, homography, (width, height), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT)


# --------------------------------------------------------------------------- painters
# Each painter draws one object with its base (where it touches the ground) at (x, y) and
# scales it by ``unit``, the height in pixels of a person standing there. It returns the
# object's bounding box.


def _poly(img: np.ndarray, points, colour: Bgr) -> None:
    cv2.fillPoly(img, [np.round(np.asarray(points, np.float64)).astype(np.int32)], colour,
                 cv2.LINE_8)


def _box_of(points) -> Box:
    arr = np.asarray(points, np.float64)
    return (int(np.floor(arr[:, 0].min())), int(np.floor(arr[:, 1].min())),
            int(np.ceil(arr[:, 0].max())) + 1, int(np.ceil(arr[:, 1].max())) + 1)


def ground_shadow(img: np.ndarray, x: float, y: float, half_width: float, depth: float) -> None:
    x0, x1 = int(x - half_width), int(x + half_width)
    y0, y1 = int(y - depth), int(y + depth) + 1
    x0, y0 = max(x0, 0), max(y0, 0)
    patch = img[y0:y1, x0:x1]
    if patch.size:
        shadow = np.zeros(patch.shape[:2], np.uint8)
        cv2.ellipse(shadow, (int(x) - x0, int(y) - y0), (int(half_width), max(1, int(depth))),
                    0, 0, 360, 1, -1)
        patch[shadow.astype(bool)] = (patch[shadow.astype(bool)] * 0.68).astype(np.uint8)


def paint_container(img, rng, x, y, unit, colour: Bgr, length: float = 3.5) -> Box:
    length, tall, depth = length * unit, 1.45 * unit, 1.2 * unit
    dx, dy = 0.45 * depth, -0.45 * depth
    top = y - tall
    ground_shadow(img, x + length / 2, y + 2, length * 0.55, 0.12 * unit)
    front = [(x, top), (x + length, top), (x + length, y), (x, y)]
    side = [(x + length, y), (x + length, top), (x + length + dx, top + dy), (x + length + dx, y + dy)]
    roof = [(x, top), (x + length, top), (x + length + dx, top + dy), (x + dx, top + dy)]
    _poly(img, front, colour)
    _poly(img, side, _shade(colour, 0.72))
    _poly(img, roof, _shade(colour, 1.15))
    ridge = _shade(colour, 0.8)
    step = max(3.0, 0.1 * unit)
    for rx in np.arange(x + step, x + length - 1, step):
        cv2.line(img, (int(rx), int(top) + 2), (int(rx), int(y) - 2), ridge, 1, cv2.LINE_8)
    cv2.rectangle(img, (int(x), int(top)), (int(x + length), int(y)), _shade(colour, 0.6), 1)
    if rng.random() < 0.5:  # door bars on the visible end
        for k in (0.2, 0.4, 0.6, 0.8):
            bx = int(x + length + dx * k)
            cv2.line(img, (bx, int(top + dy * k) + 2), (bx, int(y + dy * k) - 2),
                     _shade(colour, 0.5), 1, cv2.LINE_8)
    return _box_of(front + side + roof)


def paint_site_office(img, rng, x, y, unit) -> Box:
    box = paint_container(img, rng, x, y, unit, rgb(222, 222, 214), length=4.2)
    top = y - 1.45 * unit
    for k in range(3):  # windows and a door
        wx = x + (0.4 + 1.2 * k) * unit
        cv2.rectangle(img, (int(wx), int(top + 0.35 * unit)), (int(wx + 0.6 * unit), int(top + 0.8 * unit)),
                      rgb(70, 86, 104), -1)
    cv2.rectangle(img, (int(x + 3.6 * unit), int(top + 0.3 * unit)), (int(x + 4.0 * unit), int(y)),
                  rgb(120, 120, 124), -1)
    return box


def paint_scaffold(img, rng, x, y, unit, bays: int, levels: int) -> Box:
    pipe = rgb(158, 160, 164)
    bay_w, level_h = 1.1 * unit, 1.15 * unit
    width = max(1, round(0.045 * unit))
    top = y - levels * level_h
    for level in range(1, levels + 1):  # wooden boards on each lift
        ly = y - level * level_h
        cv2.rectangle(img, (int(x), int(ly)), (int(x + bays * bay_w), int(ly + 0.08 * unit)),
                      rgb(150, 112, 70), -1)
    for b in range(bays + 1):
        px = int(x + b * bay_w)
        cv2.line(img, (px, int(y)), (px, int(top)), pipe, width, cv2.LINE_8)
    for level in range(levels + 1):
        ly = int(y - level * level_h)
        cv2.line(img, (int(x), ly), (int(x + bays * bay_w), ly), pipe, width, cv2.LINE_8)
    for b in range(bays):
        for level in range(levels):
            if (b + level) % 2 == 0:
                cv2.line(img, (int(x + b * bay_w), int(y - level * level_h)),
                         (int(x + (b + 1) * bay_w), int(y - (level + 1) * level_h)), pipe, width,
                         cv2.LINE_8)
    return (int(x) - width, int(top) - width, int(x + bays * bay_w) + width + 1, int(y) + width + 1)


def paint_fence(img, rng, x0, x1, y, unit, style: str) -> Box:
    panel_w, tall = 1.3 * unit, 1.15 * unit
    post = rgb(90, 92, 96)
    mesh = rgb(150, 152, 150)
    for px in np.arange(x0, x1, panel_w):
        right = min(px + panel_w, x1)
        if style == "hoarding":
            colour = rgb(236, 236, 230) if int((px - x0) / panel_w) % 2 else rgb(52, 92, 160)
            cv2.rectangle(img, (int(px), int(y - tall)), (int(right), int(y)), colour, -1)
        else:
            step = max(3.0, 0.09 * unit)
            for mx in np.arange(px, right, step):
                cv2.line(img, (int(mx), int(y - tall)), (int(mx), int(y)), mesh, 1, cv2.LINE_8)
            for my in np.arange(y - tall, y, step):
                cv2.line(img, (int(px), int(my)), (int(right), int(my)), mesh, 1, cv2.LINE_8)
        cv2.line(img, (int(px), int(y - tall)), (int(px), int(y)), post, max(1, round(0.05 * unit)))
        cv2.rectangle(img, (int(px) - 2, int(y) - 1), (int(px) + 3, int(y) + 2), rgb(60, 60, 62), -1)
    return (int(x0) - 2, int(y - tall), int(x1) + 3, int(y) + 3)


def paint_rebar_pile(img, rng, x, y, unit) -> Box:
    length, tall = 4.5 * unit, 0.35 * unit
    ground_shadow(img, x + length / 2, y, length * 0.52, 0.08 * unit)
    bars = int(40 + 30 * rng.random())
    for _ in range(bars):
        by = y - rng.uniform(0, tall)
        bx = x + rng.uniform(-0.1, 0.1) * unit
        slope = rng.uniform(-0.04, 0.04) * unit
        colour = _shade(rgb(132, 74, 44), rng.uniform(0.7, 1.25))
        cv2.line(img, (int(bx), int(by)), (int(bx + length), int(by + slope)), colour,
                 max(1, round(0.03 * unit)), cv2.LINE_8)
    return (int(x - 0.1 * unit), int(y - tall - 0.1 * unit), int(x + length + 0.1 * unit) + 1,
            int(y + 0.1 * unit) + 1)


def paint_rebar_mat(img, rng, x, y, unit) -> Box:
    """A mesh of rebar lying flat on the slab, seen in perspective as a parallelogram."""
    width, depth = 5.0 * unit, 1.6 * unit
    colour = rgb(120, 72, 46)
    skew = 0.4 * depth
    step = max(3.0, 0.18 * unit)
    for k in np.arange(0.0, 1.0 + 1e-9, step / depth):
        row_y = y - k * depth
        cv2.line(img, (int(x + k * skew), int(row_y)), (int(x + k * skew + width), int(row_y)), colour, 1)
    for bx in np.arange(0.0, width + 1e-9, step):
        cv2.line(img, (int(x + bx), int(y)), (int(x + bx + skew), int(y - depth)), colour, 1)
    return (int(x), int(y - depth), int(x + width + skew) + 1, int(y) + 1)


def paint_stack(img, rng, x, y, unit, kind: str) -> Box:
    """Pallets of bricks, formwork panels or a pile of pipes."""
    width, tall = {"bricks": (1.0, 0.7), "formwork": (1.8, 0.55), "pipes": (2.4, 0.3)}[kind]
    width, tall = width * unit, tall * unit
    ground_shadow(img, x + width / 2, y, width * 0.6, 0.08 * unit)
    if kind == "pipes":
        radius = max(1.5, 0.05 * unit)
        for row in range(int(tall / (2 * radius))):
            ry = y - radius - row * 2 * radius
            cv2.rectangle(img, (int(x), int(ry - radius)), (int(x + width), int(ry + radius)),
                          rgb(214, 214, 206), -1)
            cv2.line(img, (int(x), int(ry + radius)), (int(x + width), int(ry + radius)),
                     rgb(150, 150, 146), 1)
    else:
        face = rgb(170, 84, 60) if kind == "bricks" else rgb(196, 160, 92)
        cv2.rectangle(img, (int(x), int(y - tall)), (int(x + width), int(y)), face, -1)
        cv2.rectangle(img, (int(x), int(y - 0.12 * unit)), (int(x + width), int(y)), rgb(146, 116, 78), -1)
        step = max(2.0, 0.08 * unit)
        for ly in np.arange(y - tall + step, y - 0.12 * unit, step):
            cv2.line(img, (int(x), int(ly)), (int(x + width), int(ly)), _shade(face, 0.75), 1)
    return (int(x), int(y - tall), int(x + width) + 1, int(y) + 1)


def paint_cone(img, rng, x, y, unit) -> Box:
    tall, half = 0.42 * unit, 0.13 * unit
    base_half = 0.19 * unit
    _poly(img, [(x - base_half, y - 0.05 * unit), (x + base_half, y - 0.05 * unit),
                (x + base_half, y), (x - base_half, y)], rgb(36, 36, 36))
    body = [(x - 0.02 * unit, y - tall), (x + 0.02 * unit, y - tall), (x + half, y - 0.05 * unit),
            (x - half, y - 0.05 * unit)]
    _poly(img, body, rgb(246, 96, 20))
    band_y0, band_y1 = y - 0.3 * unit, y - 0.2 * unit
    cv2.rectangle(img, (int(x - 0.09 * unit), int(band_y0)), (int(x + 0.09 * unit), int(band_y1)),
                  rgb(236, 236, 236), -1)
    return _box_of(body + [(x - base_half, y), (x + base_half, y)])


def paint_bollard(img, rng, x, y, unit, colour: Bgr) -> Box:
    tall, half = 0.55 * unit, max(1.0, 0.06 * unit)
    cap = max(1.5, 0.09 * unit)
    cv2.rectangle(img, (int(x - half), int(y - tall)), (int(x + half), int(y)), colour, -1)
    cv2.rectangle(img, (int(x - half), int(y - 0.35 * unit)), (int(x + half), int(y - 0.3 * unit)),
                  rgb(230, 230, 230), -1)
    cv2.circle(img, (int(x), int(y - tall)), int(round(cap)), _shade(colour, 1.1), -1, cv2.LINE_8)
    return (int(x - cap), int(y - tall - cap), int(x + cap) + 1, int(y) + 1)


def paint_barrel(img, rng, x, y, unit) -> Box:
    tall, half = 0.5 * unit, 0.17 * unit
    cv2.rectangle(img, (int(x - half), int(y - tall)), (int(x + half), int(y)), rgb(240, 100, 26), -1)
    for frac in (0.25, 0.6):
        by = y - frac * tall - 0.05 * unit
        cv2.rectangle(img, (int(x - half), int(by)), (int(x + half), int(by + 0.07 * unit)),
                      rgb(240, 240, 236), -1)
    cv2.ellipse(img, (int(x), int(y - tall)), (int(half), max(1, int(0.06 * unit))), 0, 0, 360,
                rgb(200, 84, 24), -1, cv2.LINE_8)
    return (int(x - half), int(y - tall - 0.06 * unit), int(x + half) + 1, int(y) + 1)


def paint_sign(img, rng, x, y, unit) -> Box:
    tall, half_bottom, half_top = 0.6 * unit, 0.2 * unit, 0.14 * unit
    board = [(x - half_top, y - tall), (x + half_top, y - tall), (x + half_bottom, y), (x - half_bottom, y)]
    _poly(img, board, rgb(246, 212, 40))
    cv2.circle(img, (int(x), int(y - 0.38 * unit)), max(1, int(0.08 * unit)), rgb(200, 30, 30), -1)
    cv2.line(img, (int(x - half_top), int(y - 0.15 * unit)), (int(x + half_top), int(y - 0.15 * unit)),
             rgb(40, 40, 40), max(1, round(0.03 * unit)))
    return _box_of(board)


def paint_hanging_jacket(img, rng, x, y, unit, vest: Bgr, hook_height: float) -> Box:
    """A hi-vis jacket hung on a hook ``hook_height`` units above the ground at (x, y)."""
    half, tall = 0.14 * unit, 0.32 * unit
    y_hook = y - hook_height * unit
    top = y_hook + 0.04 * unit
    body = [(x - half, top), (x + half, top), (x + half * 0.9, top + tall), (x - half * 0.9, top + tall)]
    for side in (-1, 1):
        cv2.line(img, (int(x + side * half), int(top + 0.02 * unit)),
                 (int(x + side * (half + 0.03 * unit)), int(top + 0.3 * unit)), _shade(vest, 0.85),
                 max(1, round(0.05 * unit)), cv2.LINE_8)
    _poly(img, body, vest)
    cv2.line(img, (int(x - half), int(top + 0.2 * unit)), (int(x + half), int(top + 0.2 * unit)),
             rgb(205, 208, 210), max(1, round(0.025 * unit)), cv2.LINE_8)
    cv2.line(img, (int(x), int(y_hook)), (int(x), int(top)), rgb(60, 60, 60), 1)
    sleeves = [(x - half - 0.03 * unit, top + 0.3 * unit), (x + half + 0.03 * unit, top + 0.3 * unit)]
    return _box_of(body + sleeves + [(x, y_hook)])


def paint_coat_post(img, rng, x, y, unit, vest: Bgr, helmet: Bgr) -> Box:
    """A post with a jacket hung on it and a hard hat on top: a person at a glance."""
    tall, half = 0.95 * unit, max(1.0, 0.03 * unit)
    cv2.rectangle(img, (int(x - half), int(y - tall)), (int(x + half), int(y)), rgb(96, 80, 62), -1)
    cv2.rectangle(img, (int(x - 0.1 * unit), int(y - 0.03 * unit)), (int(x + 0.1 * unit), int(y)),
                  rgb(70, 70, 72), -1)
    jacket = paint_hanging_jacket(img, rng, x, y, unit, vest, 0.8)
    radius = max(1.5, 0.075 * unit)
    cv2.ellipse(img, (int(x), int(y - tall)), (int(round(radius * 1.1)), int(round(radius))), 0, 180, 360,
                helmet, -1, cv2.LINE_8)
    hat_top = int(y - tall - radius) - 1
    return (min(jacket[0], int(x - radius * 1.1) - 1), min(jacket[1], hat_top),
            max(jacket[2], int(x + radius * 1.1) + 2), int(y) + 1)


def _paint_sky_and_trees(img, rng, y_bottom: int, x0: int = 0, x1: int = FRAME_WIDTH) -> None:
    ramp = np.linspace(0, 1, y_bottom, dtype=np.float32)[:, None, None]
    top_colour, low_colour = np.array(rgb(176, 192, 208), np.float32), np.array(rgb(212, 214, 212), np.float32)
    img[:y_bottom, x0:x1] = (top_colour * (1 - ramp) + low_colour * ramp).astype(np.uint8)
    for tx in np.arange(x0, x1, 26):
        radius = int(rng.integers(18, 36))
        colour = _shade(rgb(70, 96, 62), rng.uniform(0.7, 1.2))
        cv2.circle(img, (int(tx + rng.integers(-8, 8)), int(y_bottom - rng.integers(0, 20))), radius, colour, -1)


def _paint_facade(img, rng, x0: int, x1: int, y_top: int, y_bottom: int, floors: int,
                  under_construction: bool) -> None:
    storey = (y_bottom - y_top) / floors
    if under_construction:
        cv2.rectangle(img, (x0, y_top), (x1, y_bottom), rgb(58, 58, 62), -1)
        for f in range(floors + 1):
            fy = int(y_top + f * storey)
            cv2.rectangle(img, (x0, fy - 5), (x1, fy + 5), rgb(178, 176, 170), -1)
        for cx in range(x0, x1, 110):
            cv2.rectangle(img, (cx, y_top), (cx + 16, y_bottom), rgb(168, 166, 160), -1)
        for rx in range(x0 + 8, x1, 12):  # starter bars sticking out of the top slab
            cv2.line(img, (rx, y_top), (rx + 2, y_top - 14), rgb(120, 70, 44), 1)
        return
    cv2.rectangle(img, (x0, y_top), (x1, y_bottom), rgb(184, 180, 170), -1)
    for f in range(floors):
        fy = y_top + f * storey
        for wx in range(x0 + 20, x1 - 50, 74):
            cv2.rectangle(img, (wx, int(fy + storey * 0.25)), (wx + 48, int(fy + storey * 0.75)),
                          _shade(rgb(70, 84, 98), rng.uniform(0.8, 1.3)), -1)
            cv2.rectangle(img, (wx, int(fy + storey * 0.25)), (wx + 48, int(fy + storey * 0.75)),
                          rgb(214, 214, 210), 1)
        cv2.line(img, (x0, int(fy)), (x1, int(fy)), rgb(150, 146, 138), 3)
    cv2.rectangle(img, (x0, y_bottom - 10), (x1, y_bottom), rgb(120, 116, 108), -1)


def _paint_crane_mast(img, x: int, y_top: int, y_bottom: int, width: int) -> None:
    yellow = rgb(236, 190, 30)
    for edge in (x, x + width):
        cv2.line(img, (edge, y_top), (edge, y_bottom), yellow, 3)
    step = width
    for y in range(y_top, y_bottom - step, step):
        cv2.line(img, (x, y), (x + width, y + step), yellow, 2)
        cv2.line(img, (x, y + step), (x + width, y + step), yellow, 2)
    cv2.rectangle(img, (x - 30, y_bottom - 10), (x + width + 30, y_bottom + 6), rgb(120, 120, 120), -1)


# --------------------------------------------------------------------------- cameras


@dataclass(frozen=True)
class _Placement:
    """One object of a camera's layout: ``paint(img, rng, x, y, unit)`` with its base at (x, y)."""

    kind: str
    x: float
    y: float
    paint: Callable[..., Box]
    occludes: bool = True
    planted: bool = False


def _cam1_layout(rng: np.random.Generator) -> tuple[list[_Placement], Callable[[np.ndarray], None]]:
    def backdrop(img: np.ndarray) -> None:
        _paint_sky_and_trees(img, rng, 190, 1100, FRAME_WIDTH)
        _paint_facade(img, rng, 0, 1120, 0, 262, floors=4, under_construction=False)

    yellow, grey = rgb(232, 196, 36), rgb(210, 210, 206)
    vest = rgb(214, 255, 40)
    layout = [
        _Placement("fence", 1120, 268, lambda im, r, x, y, u: paint_fence(im, r, x, 1925, y, u, "hoarding"),
                   occludes=False),
        _Placement("scaffold", 90, 262, lambda im, r, x, y, u: paint_scaffold(im, r, x, y, u, 11, 3),
                   occludes=False),
        _Placement("bricks", 820, 430, lambda im, r, x, y, u: paint_stack(im, r, x, y, u, "bricks")),
        _Placement("bollard", 1250, 472, lambda im, r, x, y, u: paint_bollard(im, r, x, y, u, yellow),
                   planted=True),
        _Placement("bollard", 1330, 474, lambda im, r, x, y, u: paint_bollard(im, r, x, y, u, yellow)),
        _Placement("sign", 960, 520, paint_sign),
        _Placement("coat_post", 1700, 550,
                   lambda im, r, x, y, u: paint_coat_post(im, r, x, y, u, vest, rgb(238, 238, 232)),
                   planted=True),
        _Placement("bricks", 300, 520, lambda im, r, x, y, u: paint_stack(im, r, x, y, u, "bricks")),
        _Placement("container", 1420, 590,
                   lambda im, r, x, y, u: paint_container(im, r, x, y, u, rgb(150, 60, 40))),
        _Placement("scaffold", 560, 470, lambda im, r, x, y, u: paint_scaffold(im, r, x, y, u, 2, 3),
                   occludes=False),
        _Placement("barrel", 1820, 520, paint_barrel),
        _Placement("formwork", 380, 640, lambda im, r, x, y, u: paint_stack(im, r, x, y, u, "formwork")),
        _Placement("container", 110, 700,
                   lambda im, r, x, y, u: paint_container(im, r, x, y, u, rgb(60, 110, 70), length=3.0)),
        _Placement("bricks", 1040, 760, lambda im, r, x, y, u: paint_stack(im, r, x, y, u, "bricks")),
        _Placement("sign", 1500, 900, paint_sign),
        _Placement("fence", 40, 1000, lambda im, r, x, y, u: paint_fence(im, r, x, 420, y, u, "mesh"),
                   occludes=False),
        _Placement("cone", 760, 640, paint_cone, planted=True),
        _Placement("cone", 850, 652, paint_cone),
        _Placement("cone", 940, 664, paint_cone),
        _Placement("barrel", 200, 860, paint_barrel),
        _Placement("barrel", 246, 872, paint_barrel),
        _Placement("pipes", 540, 880, lambda im, r, x, y, u: paint_stack(im, r, x, y, u, "pipes")),
        _Placement("rebar", 1150, 985, paint_rebar_pile),
        _Placement("bollard", 1700, 1000, lambda im, r, x, y, u: paint_bollard(im, r, x, y, u, grey)),
    ]
    return layout, backdrop


def _cam2_layout(rng: np.random.Generator) -> tuple[list[_Placement], Callable[[np.ndarray], None]]:
    def backdrop(img: np.ndarray) -> None:
        _paint_sky_and_trees(img, rng, 230, 0, 900)
        _paint_facade(img, rng, 900, FRAME_WIDTH, 40, 250, floors=3, under_construction=True)
        _paint_crane_mast(img, 620, 0, 262, 26)

    yellow = rgb(236, 200, 40)
    vest = rgb(255, 120, 20)
    layout = [
        _Placement("fence", 0, 262, lambda im, r, x, y, u: paint_fence(im, r, x, 905, y, u, "mesh"),
                   occludes=False),
        _Placement("bollard", 520, 420, lambda im, r, x, y, u: paint_bollard(im, r, x, y, u, yellow),
                   planted=True),
        _Placement("bollard", 640, 422, lambda im, r, x, y, u: paint_bollard(im, r, x, y, u, yellow)),
        _Placement("bollard", 760, 424, lambda im, r, x, y, u: paint_bollard(im, r, x, y, u, yellow)),
        _Placement("barrel", 1180, 452, paint_barrel, planted=True),
        _Placement("barrel", 1214, 458, paint_barrel),
        _Placement("scaffold", 1600, 540, lambda im, r, x, y, u: paint_scaffold(im, r, x, y, u, 2, 4),
                   occludes=False),
        _Placement("hanging_jacket", 1640, 541,  # on the scaffold's second lift
                   lambda im, r, x, y, u: paint_hanging_jacket(im, r, x, y, u, vest, 2.3),
                   occludes=False),
        _Placement("site_office", 60, 580, paint_site_office),
        _Placement("sign", 600, 610, paint_sign),
        _Placement("rebar_mat", 700, 800, paint_rebar_mat, occludes=False),
        _Placement("sign", 1500, 380, paint_sign),
        _Placement("cone", 860, 560, paint_cone),
        _Placement("cone", 905, 566, paint_cone),
        _Placement("barrel", 1820, 600, paint_barrel),
        _Placement("container", 1640, 760,
                   lambda im, r, x, y, u: paint_container(im, r, x, y, u, rgb(40, 84, 150), length=3.0)),
        _Placement("pipes", 980, 1000, lambda im, r, x, y, u: paint_stack(im, r, x, y, u, "pipes")),
        _Placement("formwork", 1480, 820, lambda im, r, x, y, u: paint_stack(im, r, x, y, u, "formwork")),
        _Placement("cone", 1300, 950, paint_cone),
        _Placement("cone", 1420, 958, paint_cone),
        _Placement("rebar", 280, 985, paint_rebar_pile),
    ]
    return layout, backdrop


@dataclass(frozen=True)
class _CameraSetup:
    layout: Callable[[np.random.Generator], tuple[list[_Placement], Callable[[np.ndarray], None]]]
    ground: str  # a GROUND_STYLES key
    slabs: int
    dirt: float
    tracks: int
    puddles: int
    debris: int
    ground_quad: tuple[tuple[float, float], ...]  # far-left, far-right, near-right, near-left
    perspective: Perspective
    walk_area: WalkArea


_CAMERA_SETUP = {
    "cam1": _CameraSetup(
        layout=_cam1_layout, ground="gravel", slabs=1, dirt=0.6, tracks=2, puddles=2, debris=320,
        ground_quad=((-700, 200), (2620, 200), (2080, 1200), (-160, 1200)),
        perspective=Perspective(far_y=300, far_height=20, near_y=1070, near_height=80),
        walk_area=WalkArea(far_y=300, near_y=1062, far_x=(80, 1840), near_x=(60, 1860)),
    ),
    "cam2": _CameraSetup(
        layout=_cam2_layout, ground="concrete", slabs=3, dirt=0.3, tracks=1, puddles=3, debris=200,
        ground_quad=((-600, 230), (2500, 230), (2100, 1200), (-200, 1200)),
        perspective=Perspective(far_y=290, far_height=22, near_y=1070, near_height=78),
        walk_area=WalkArea(far_y=290, near_y=1062, far_x=(80, 1840), near_x=(60, 1860)),
    ),
}

_PLANT_PADDING = (2, 3, 2, 1)  # left, top, right, bottom: the pre-annotator's loose fit
# The user removed "fixed-position small" boxes with w < 0.03 and h < 0.05 (normalised);
# planted spots stay that small even after the +-2 px jitter of each corner.
PLANT_JITTER = 2.0
MAX_PLANTED_WIDTH = 0.03 * FRAME_WIDTH - 2 * PLANT_JITTER - 0.5
MAX_PLANTED_HEIGHT = 0.05 * FRAME_HEIGHT - 2 * PLANT_JITTER - 0.5


def build_camera_scene(seed: int, camera: str) -> CameraScene:
    """Render the static background of ``camera`` for ``seed`` (about a second)."""
    rng = stream_rng(seed, Stream.SCENE, camera_index(camera))
    setup = _CAMERA_SETUP[camera]
    plane = _ground_plane(rng, 2048, GROUND_STYLES[setup.ground])
    _decorate_plane(rng, plane, slabs=setup.slabs, dirt=setup.dirt, tracks=setup.tracks,
                    puddles=setup.puddles)
    image = _warp_ground(plane, np.array(setup.ground_quad, np.float32), FRAME_WIDTH, FRAME_HEIGHT)
    perspective = setup.perspective
    _scatter_debris(image, rng, perspective, setup.debris)

    layout, backdrop = setup.layout(rng)
    backdrop(image)
    objects, planted = [], []
    for item in sorted(layout, key=lambda p: p.y):  # far objects first
        unit = perspective.person_height(item.y)
        box = item.paint(image, rng, item.x, item.y, unit)
        objects.append(SceneObject(item.kind, box, int(item.y), item.occludes))
        if item.planted:
            left, top, right, bottom = _PLANT_PADDING
            spot = (box[0] - left, box[1] - top, box[2] + right, box[3] + bottom)
            if spot[2] - spot[0] > MAX_PLANTED_WIDTH or spot[3] - spot[1] > MAX_PLANTED_HEIGHT:
                raise RuntimeError(f"{camera}: planted spot {spot} is too large for the layout")
            planted.append(spot)
    image.setflags(write=False)
    return CameraScene(
        camera=camera,
        background=image,
        perspective=perspective,
        walk_area=setup.walk_area,
        objects=tuple(objects),
        planted_spots=tuple(planted),
    )


def _scatter_debris(img: np.ndarray, rng: np.random.Generator, perspective: Perspective,
                    count: int) -> None:
    """Planks, stones and offcuts lying flat on the ground."""
    height = img.shape[0]
    for _ in range(count):
        x, y = float(rng.uniform(0, img.shape[1])), float(rng.uniform(perspective.far_y - 40, height))
        unit = perspective.person_height(y)
        if rng.random() < 0.4:
            length, angle = rng.uniform(0.3, 1.2) * unit, rng.uniform(0, np.pi)
            end = (int(x + length * np.cos(angle)), int(y + 0.4 * length * np.sin(angle)))
            cv2.line(img, (int(x), int(y)), end, _shade(rgb(160, 124, 80), rng.uniform(0.7, 1.2)),
                     max(1, round(0.04 * unit)), cv2.LINE_8)
        else:
            axes = (max(1, int(rng.uniform(0.02, 0.07) * unit)), max(1, int(rng.uniform(0.01, 0.04) * unit)))
            cv2.ellipse(img, (int(x), int(y)), axes, float(rng.uniform(0, 180)), 0, 360,
                        _shade(rgb(120, 116, 110), rng.uniform(0.6, 1.4)), -1, cv2.LINE_8)


# --------------------------------------------------------------------------- generic backdrops


def base_backdrop(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A varied site background for the generic helmet dataset: some ground, sometimes a wall
    or sky band, and clutter at random scales (person-like clutter included)."""
    style = GROUND_STYLES[list(GROUND_STYLES)[rng.integers(len(GROUND_STYLES))]]
    plane = _ground_plane(rng, 512, style)
    _decorate_plane(rng, plane, slabs=int(rng.integers(0, 2)), dirt=float(rng.uniform(0, 0.6)),
                    tracks=int(rng.integers(0, 2)), puddles=int(rng.integers(0, 2)))
    spread = rng.uniform(0.1, 0.6)
    horizon = -height * rng.uniform(0.1, 0.5)
    quad = np.array([[-width * spread, horizon], [width * (1 + spread), horizon],
                     [width * 1.05, height * 1.05], [-width * 0.05, height * 1.05]], np.float32)
    image = _warp_ground(plane, quad, width, height)
    if rng.random() < 0.5:
        band = int(height * rng.uniform(0.1, 0.3))
        if rng.random() < 0.5:
            _paint_facade(image, rng, 0, width, 0, band, floors=int(rng.integers(1, 4)),
                          under_construction=bool(rng.random() < 0.5))
        else:
            _paint_sky_and_trees(image, rng, band, 0, width)
    painters = [paint_cone, paint_barrel, paint_sign, paint_rebar_pile,
                lambda im, r, x, y, u: paint_bollard(im, r, x, y, u, rgb(232, 196, 36)),
                lambda im, r, x, y, u: paint_stack(im, r, x, y, u, "bricks"),
                lambda im, r, x, y, u: paint_container(im, r, x, y, u, rgb(52, 96, 150)),
                lambda im, r, x, y, u: paint_coat_post(im, r, x, y, u, rgb(214, 255, 40),
                                                       rgb(250, 206, 30))]
    for _ in range(int(rng.integers(2, 7))):
        unit = float(rng.uniform(0.15, 0.6) * height)
        x, y = float(rng.uniform(-0.1, 0.9) * width), float(rng.uniform(0.3, 1.0) * height)
        painters[rng.integers(len(painters))](image, rng, x, y, unit)
    return image
