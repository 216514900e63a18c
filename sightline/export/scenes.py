"""Procedural street-camera scenes with exact boxes: the demo detector's data.

A scene is a road seen from a pole-mounted camera: sky and buildings above a horizon,
asphalt with lane markings, kerbs and verges below, and 0-10 road users (cars, trucks,
pedestrians), each a distinct shape with its own colour family. Nearer objects are drawn
later and may partly hide farther ones, but never hide most of one.

`Conditions` controls what the camera sees (light, blur, noise, rain, resolution), so the
same seed can be rendered by day and by night for the drift demo::

    scene = generate_scene(7)                                   # 640x480 daylight
    dark = generate_scene(7, Conditions(brightness="night"))    # same layout, at night

Everything is drawn with OpenCV primitives from a `numpy.random.Generator` seeded by the
seed, so a seed always gives the same frame (a few milliseconds each).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Union

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sightline.modelspec import CLASS_NAMES

GENERATOR_VERSION = "1"
MAX_OBJECTS = 10

CAR, TRUCK, PEDESTRIAN = (CLASS_NAMES.index(n) for n in ("car", "truck", "pedestrian"))

# Sizes in pixels of a 640-pixel-wide frame (they scale with the frame's longer side), so
# that at the 256-pixel model input no object is smaller than about 24 px on its long side.
_REFERENCE_SIDE = 640.0
_CAR_WIDTH = (90.0, 170.0)
_TRUCK_WIDTH = (140.0, 250.0)
_PEDESTRIAN_HEIGHT = (90.0, 165.0)
# At most this fraction of an object may be covered by nearer ones.
_MAX_HIDDEN = 0.35

_LIGHT = {"day": 1.0, "dusk": 0.55, "night": 0.25}
# BGR tints: dusk is warm, night is blue.
_TINT = {"day": (1.0, 1.0, 1.0), "dusk": (0.85, 0.95, 1.1), "night": (1.15, 0.95, 0.8)}

_CAR_COLOURS = [(40, 40, 200), (170, 60, 20), (90, 30, 30), (190, 190, 190), (60, 140, 40),
                (30, 30, 30), (235, 235, 235), (40, 120, 220), (120, 40, 120)]
_TRUCK_BOX_COLOURS = [(245, 245, 245), (30, 200, 240), (20, 120, 240), (200, 200, 215),
                      (60, 160, 90), (215, 220, 225)]
_TRUCK_CAB_COLOURS = [(30, 30, 170), (150, 80, 20), (40, 40, 40), (30, 110, 30), (200, 200, 200)]
_SHIRT_COLOURS = [(30, 30, 220), (200, 120, 30), (40, 200, 230), (220, 220, 220), (150, 40, 160),
                  (40, 160, 60), (20, 20, 20), (60, 90, 240)]
_TROUSER_COLOURS = [(60, 40, 20), (30, 30, 30), (110, 80, 50), (90, 90, 90), (40, 60, 110)]
_SKIN_COLOURS = [(140, 170, 220), (90, 130, 190), (60, 90, 140), (170, 200, 240)]


class Conditions(BaseModel):
    """How the camera sees the scene; the default is a clean 640x480 daylight frame.

    `brightness` is "day", "dusk", "night" or a light factor (1.0 is day); `motion_blur`
    is a horizontal blur kernel in pixels (0 or 1: none); `noise` is the sigma of
    Gaussian sensor noise in 0-255 grey levels; `rain` is the density of rain streaks
    (streaks per 1000 pixels of frame; 1 is a shower, 2 and more a downpour with haze).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    brightness: Union[Literal["day", "dusk", "night"], float] = "day"
    motion_blur: int = Field(0, ge=0, le=64)
    noise: float = Field(0.0, ge=0.0, le=100.0)
    rain: float = Field(0.0, ge=0.0, le=5.0)
    width: int = Field(640, ge=64, le=4096)
    height: int = Field(480, ge=64, le=4096)

    def light(self) -> float:
        """The multiplicative light factor, 1.0 for daylight."""
        if isinstance(self.brightness, str):
            return _LIGHT[self.brightness]
        return float(self.brightness)


@dataclass(frozen=True)
class Scene:
    """One rendered frame and its ground truth.

    `image` is uint8 BGR HxWx3 (OpenCV convention); `boxes` float32 Nx4 (x1, y1, x2, y2)
    in image pixels; `classes` int64 N indexing `CLASS_NAMES`.
    """

    image: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    seed: int
    conditions: Conditions


def generate_scene(seed: int, conditions: Conditions = Conditions()) -> Scene:  # noqa: B008 - frozen
    """Render the street scene for `seed` as seen under `conditions`.

    The layout (background, objects, their positions) depends only on the seed and the
    resolution; light, blur, noise and rain are applied on top, so the same seed under
    other conditions shows the same objects.
    """
    rng = np.random.default_rng(seed)
    w, h = conditions.width, conditions.height
    image, horizon = _background(rng, w, h)
    _street_furniture(image, rng, horizon)
    boxes, classes = _place_objects(rng, w, h, horizon)
    for i in np.argsort(boxes[:, 3], kind="stable"):  # far (high up) first
        if classes[i] != PEDESTRIAN:
            _shadow(image, boxes[i])
        _DRAW[int(classes[i])](image, boxes[i], rng)
    image = _apply_conditions(image, conditions, np.random.default_rng([seed, 1]))
    return Scene(image=image, boxes=boxes, classes=classes, seed=seed, conditions=conditions)


def _background(rng: np.random.Generator, w: int, h: int) -> tuple[np.ndarray, int]:
    image = np.empty((h, w, 3), np.uint8)
    horizon = int(h * rng.uniform(0.25, 0.42))
    top = np.array([rng.uniform(170, 250), rng.uniform(140, 210), rng.uniform(90, 170)])
    bottom = top * rng.uniform(0.8, 1.0) + 20
    ramp = np.linspace(0.0, 1.0, max(horizon, 1))[:, None]
    image[:horizon] = np.clip(top * (1 - ramp) + bottom * ramp, 0, 255)[:, None, :].astype(np.uint8)
    _buildings(image, rng, horizon)
    grey = rng.uniform(70, 130)
    road = np.array([grey, grey, grey]) + rng.uniform(-8, 8, 3)
    image[horizon:] = road.astype(np.uint8)
    _verges(image, rng, horizon)
    _lane_markings(image, rng, horizon)
    # Low-frequency shading and fine grain give the asphalt and walls some texture.
    shade = cv2.resize(rng.uniform(0.8, 1.15, (6, 8)).astype(np.float32), (w, h),
                       interpolation=cv2.INTER_CUBIC)
    grain = rng.standard_normal((h // 2, w // 2), dtype=np.float32) * np.float32(rng.uniform(3, 9))
    grain = cv2.resize(grain, (w, h), interpolation=cv2.INTER_NEAREST)
    shaded = cv2.multiply(image, cv2.merge([shade, shade, shade]), dtype=cv2.CV_32F)
    return cv2.add(shaded, cv2.merge([grain, grain, grain]), dtype=cv2.CV_8U), horizon


def _buildings(image: np.ndarray, rng: np.random.Generator, horizon: int) -> None:
    w = image.shape[1]
    x = int(rng.uniform(-40, 0))
    while x < w:
        bw = int(rng.uniform(0.08, 0.22) * w)
        top = int(horizon * rng.uniform(0.05, 0.7))
        colour = tuple(int(c) for c in rng.uniform(60, 200, 3))
        cv2.rectangle(image, (x, top), (x + bw, horizon), colour, -1)
        window = tuple(int(c * 0.6) for c in colour)
        step = max(int(rng.uniform(8, 16)), 4)
        for wy in range(top + 4, horizon - step, step):
            for wx in range(x + 4, x + bw - step, step):
                cv2.rectangle(image, (wx, wy), (wx + step // 2, wy + step // 2), window, -1)
        x += bw + int(rng.uniform(0, 0.05) * w)


def _verges(image: np.ndarray, rng: np.random.Generator, horizon: int) -> None:
    h, w = image.shape[:2]
    kind = rng.integers(3)
    if kind == 0:  # pavement strip along the horizon
        band = int((h - horizon) * rng.uniform(0.06, 0.14))
        colour = tuple(int(c) for c in rng.uniform(140, 190, 3))
        cv2.rectangle(image, (0, horizon), (w, horizon + band), colour, -1)
        cv2.line(image, (0, horizon + band), (w, horizon + band), (210, 210, 210), 2)
    elif kind == 1:  # grass on both sides of a road that narrows towards the horizon
        colour = (int(rng.uniform(30, 70)), int(rng.uniform(110, 160)), int(rng.uniform(40, 90)))
        left = np.array([[0, horizon], [int(w * rng.uniform(0.3, 0.45)), horizon],
                         [int(w * rng.uniform(0.0, 0.15)), h], [0, h]], np.int32)
        right = np.array([[w, horizon], [int(w * rng.uniform(0.55, 0.7)), horizon],
                          [int(w * rng.uniform(0.85, 1.0)), h], [w, h]], np.int32)
        cv2.fillPoly(image, [left, right], colour)
    # kind 2: asphalt all the way.


def _lane_markings(image: np.ndarray, rng: np.random.Generator, horizon: int) -> None:
    h, w = image.shape[:2]
    colour = (235, 235, 235) if rng.random() < 0.7 else (40, 200, 230)
    for _ in range(int(rng.integers(1, 4))):
        y = int(rng.uniform(horizon + 0.15 * (h - horizon), h - 4))
        dash, gap = int(rng.uniform(20, 50)), int(rng.uniform(15, 40))
        thick = max(2, int((y - horizon) / (h - horizon + 1) * 8))
        for x in range(int(rng.uniform(-dash, 0)), w, dash + gap):
            cv2.rectangle(image, (x, y), (x + dash, y + thick), colour, -1)


def _street_furniture(image: np.ndarray, rng: np.random.Generator, horizon: int) -> None:
    """Things that are not road users: lamp posts, trees, signs, bollards, blotches."""
    h, w = image.shape[:2]
    k = max(w, h) / _REFERENCE_SIDE
    for _ in range(int(rng.integers(0, 7))):
        kind = int(rng.integers(4))
        x = rng.uniform(0, w)
        base = horizon + rng.uniform(0.0, 0.5) * (h - horizon)
        size = rng.uniform(0.7, 1.3) * k
        if kind == 0:  # lamp post
            top = base - 150 * size
            cv2.line(image, _pt(x, base), _pt(x, top), (70, 70, 75), max(2, int(5 * size)))
            cv2.line(image, _pt(x, top), _pt(x + 25 * size, top), (70, 70, 75), max(2, int(4 * size)))
        elif kind == 1:  # tree
            cv2.line(image, _pt(x, base), _pt(x, base - 60 * size), (30, 60, 90), max(3, int(9 * size)))
            green = (int(rng.uniform(20, 60)), int(rng.uniform(90, 160)), int(rng.uniform(30, 80)))
            cv2.circle(image, _pt(x, base - 85 * size), int(38 * size), green, -1)
        elif kind == 2:  # sign on a pole
            cv2.line(image, _pt(x, base), _pt(x, base - 70 * size), (150, 150, 150), max(2, int(3 * size)))
            colour = ((40, 40, 220), (200, 120, 20), (40, 200, 240))[int(rng.integers(3))]
            cv2.circle(image, _pt(x, base - 75 * size), int(12 * size), colour, -1)
        else:  # patch, puddle or oil stain on the road
            shade = tuple(int(c) for c in rng.uniform(40, 140, 3))
            cv2.ellipse(image, _pt(x, base), (int(rng.uniform(15, 60) * size), int(rng.uniform(4, 15) * size)),
                        0, 0, 360, shade, -1)


def _shadow(image: np.ndarray, box: np.ndarray) -> None:
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    region = image[max(int(y2 - 0.08 * h), 0):min(int(y2 + 0.04 * h) + 1, image.shape[0]),
                   max(int(x1 + 0.02 * w), 0):max(int(x2 - 0.02 * w), 0)]
    region[:] = (region * 0.55).astype(np.uint8)


def _place_objects(rng: np.random.Generator, w: int, h: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    k = max(w, h) / _REFERENCE_SIDE
    wanted = int(rng.integers(0, MAX_OBJECTS + 1))
    boxes: list[tuple[float, float, float, float]] = []
    classes: list[int] = []
    for _ in range(wanted):
        for _attempt in range(20):
            cls = int(rng.choice(3, p=(0.45, 0.2, 0.35)))
            ground = rng.uniform(0.0, 1.0)  # 0 at the horizon, 1 at the frame bottom
            depth = 0.8 + 0.45 * ground  # nearer objects look bigger
            if cls == CAR:
                bw = rng.uniform(*_CAR_WIDTH) * depth * k
                bh = bw * rng.uniform(0.5, 0.62)
            elif cls == TRUCK:
                bw = rng.uniform(*_TRUCK_WIDTH) * depth * k
                bh = bw * rng.uniform(0.5, 0.65)
            else:
                bh = rng.uniform(*_PEDESTRIAN_HEIGHT) * depth * k
                bw = bh * rng.uniform(0.32, 0.42)
            bw, bh = min(bw, 0.6 * w), min(bh, 0.8 * h)
            bottom = horizon + 0.1 * bh + ground * (h - horizon - 0.1 * bh)
            x1 = rng.uniform(-0.15 * bw, w - 0.85 * bw)  # may run slightly off the frame
            box = (x1, bottom - bh, x1 + bw, bottom)
            clipped = (max(box[0], 0.0), max(box[1], 0.0), min(box[2], float(w)), min(box[3], float(h)))
            if clipped[2] - clipped[0] < 0.6 * bw or clipped[3] - clipped[1] < 0.6 * bh:
                continue
            if _overlaps_too_much(clipped, boxes):
                continue
            boxes.append(clipped)
            classes.append(cls)
            break
    return np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int64)


def _overlaps_too_much(box: tuple[float, ...], others: list[tuple[float, float, float, float]]) -> bool:
    area = (box[2] - box[0]) * (box[3] - box[1])
    for o in others:
        iw = min(box[2], o[2]) - max(box[0], o[0])
        ih = min(box[3], o[3]) - max(box[1], o[1])
        if iw <= 0 or ih <= 0:
            continue
        other_area = (o[2] - o[0]) * (o[3] - o[1])
        if iw * ih > _MAX_HIDDEN * min(area, other_area):
            return True
    return False


def _colour(rng: np.random.Generator, palette: list[tuple[int, int, int]], jitter: float = 18) -> tuple[int, int, int]:
    base = np.array(palette[int(rng.integers(len(palette)))], np.float64)
    return tuple(int(c) for c in np.clip(base + rng.uniform(-jitter, jitter, 3), 0, 255))


def _pt(x: float, y: float) -> tuple[int, int]:
    return int(round(x)), int(round(y))


def _draw_car(image: np.ndarray, box: np.ndarray, rng: np.random.Generator) -> None:
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    body = _colour(rng, _CAR_COLOURS)
    dark = tuple(int(c * 0.7) for c in body)
    wheel_r = 0.17 * h
    sill = y2 - wheel_r
    cv2.rectangle(image, _pt(x1, y1 + 0.42 * h), _pt(x2, sill), body, -1)
    cabin = np.array([_pt(x1 + 0.18 * w, y1 + 0.44 * h), _pt(x1 + 0.3 * w, y1),
                      _pt(x2 - 0.28 * w, y1), _pt(x2 - 0.12 * w, y1 + 0.44 * h)], np.int32)
    cv2.fillConvexPoly(image, cabin, body)
    glass = (int(rng.uniform(150, 200)), int(rng.uniform(120, 160)), int(rng.uniform(80, 110)))
    mid = (x1 + x2) / 2
    for a, b in ((x1 + 0.24 * w, mid - 0.02 * w), (mid + 0.02 * w, x2 - 0.18 * w)):
        cv2.rectangle(image, _pt(a, y1 + 0.1 * h), _pt(b, y1 + 0.4 * h), glass, -1)
    cv2.line(image, _pt(x1 + 0.02 * w, y1 + 0.6 * h), _pt(x2 - 0.02 * w, y1 + 0.6 * h), dark, max(1, int(0.03 * h)))
    for cx in (x1 + 0.2 * w, x2 - 0.2 * w):
        cv2.circle(image, _pt(cx, y2 - wheel_r), int(wheel_r), (20, 20, 20), -1)
        cv2.circle(image, _pt(cx, y2 - wheel_r), max(1, int(wheel_r * 0.45)), (150, 150, 150), -1)
    lamp = (60, 200, 250)
    front = x2 - 0.05 * w if rng.random() < 0.5 else x1 + 0.01 * w
    cv2.rectangle(image, _pt(front, y1 + 0.48 * h), _pt(front + 0.04 * w, y1 + 0.58 * h), lamp, -1)


def _draw_truck(image: np.ndarray, box: np.ndarray, rng: np.random.Generator) -> None:
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    cargo, cab = _colour(rng, _TRUCK_BOX_COLOURS, 12), _colour(rng, _TRUCK_CAB_COLOURS)
    wheel_r = 0.13 * h
    chassis = y2 - wheel_r
    cab_w = rng.uniform(0.22, 0.3) * w
    facing_right = rng.random() < 0.5
    if facing_right:
        box_x, cab_x = (x1, x2 - cab_w - 0.02 * w), (x2 - cab_w, x2)
    else:
        box_x, cab_x = (x1 + cab_w + 0.02 * w, x2), (x1, x1 + cab_w)
    cv2.rectangle(image, _pt(box_x[0], y1), _pt(box_x[1], chassis - 0.06 * h), cargo, -1)
    edge = tuple(int(c * 0.75) for c in cargo)
    cv2.rectangle(image, _pt(box_x[0], y1), _pt(box_x[1], chassis - 0.06 * h), edge, max(1, int(0.02 * h)))
    cv2.rectangle(image, _pt(x1, chassis - 0.08 * h), _pt(x2, chassis), (40, 40, 40), -1)
    cab_top = y1 + 0.3 * h
    cv2.rectangle(image, _pt(cab_x[0], cab_top), _pt(cab_x[1], chassis), cab, -1)
    glass = (int(rng.uniform(150, 200)), int(rng.uniform(120, 160)), int(rng.uniform(80, 110)))
    gx = (cab_x[0] + 0.45 * cab_w, cab_x[1] - 0.1 * cab_w) if facing_right else (cab_x[0] + 0.1 * cab_w, cab_x[1] - 0.45 * cab_w)
    cv2.rectangle(image, _pt(gx[0], cab_top + 0.08 * h), _pt(gx[1], cab_top + 0.28 * h), glass, -1)
    wheels = (x1 + 0.12 * w, x1 + 0.27 * w, x2 - 0.14 * w) if facing_right else (x1 + 0.14 * w, x2 - 0.27 * w, x2 - 0.12 * w)
    for cx in wheels:
        cv2.circle(image, _pt(cx, y2 - wheel_r), int(wheel_r), (20, 20, 20), -1)
        cv2.circle(image, _pt(cx, y2 - wheel_r), max(1, int(wheel_r * 0.4)), (140, 140, 140), -1)


def _draw_pedestrian(image: np.ndarray, box: np.ndarray, rng: np.random.Generator) -> None:
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    cx = (x1 + x2) / 2
    skin, shirt, trousers = _colour(rng, _SKIN_COLOURS, 10), _colour(rng, _SHIRT_COLOURS), _colour(rng, _TROUSER_COLOURS)
    head_r = 0.075 * h
    cv2.circle(image, _pt(cx, y1 + head_r), int(round(head_r)), skin, -1)
    shoulders, hips = y1 + 0.17 * h, y1 + 0.55 * h
    torso_w = 0.62 * w
    cv2.rectangle(image, _pt(cx - torso_w / 2, shoulders), _pt(cx + torso_w / 2, hips), shirt, -1)
    arm = max(2, int(0.12 * w))
    swing = rng.uniform(-0.05, 0.05) * h
    cv2.line(image, _pt(cx - torso_w / 2, shoulders + arm), _pt(x1 + arm / 2, hips - 0.04 * h + swing), shirt, arm)
    cv2.line(image, _pt(cx + torso_w / 2, shoulders + arm), _pt(x2 - arm / 2, hips - 0.04 * h - swing), shirt, arm)
    leg = max(2, int(0.22 * w))
    stride = rng.uniform(0.0, 0.25) * w
    cv2.line(image, _pt(cx - leg / 2, hips), _pt(cx - leg / 2 - stride, y2 - leg / 2), trousers, leg)
    cv2.line(image, _pt(cx + leg / 2, hips), _pt(cx + leg / 2 + stride, y2 - leg / 2), trousers, leg)
    cv2.rectangle(image, _pt(cx - torso_w / 2, hips - 0.02 * h), _pt(cx + torso_w / 2, hips + 0.08 * h), trousers, -1)


_DRAW = {CAR: _draw_car, TRUCK: _draw_truck, PEDESTRIAN: _draw_pedestrian}


def _apply_conditions(image: np.ndarray, conditions: Conditions, rng: np.random.Generator) -> np.ndarray:
    light = conditions.light()
    tint = _TINT[conditions.brightness] if isinstance(conditions.brightness, str) else (1.0, 1.0, 1.0)
    out = image
    if conditions.rain > 0:
        out = _rain(out, conditions.rain, rng)
    if conditions.motion_blur > 1:
        kernel = np.full((1, conditions.motion_blur), 1.0 / conditions.motion_blur, np.float32)
        out = cv2.filter2D(out, -1, kernel, borderType=cv2.BORDER_REFLECT)
    if light != 1.0 or tint != (1.0, 1.0, 1.0):
        lut = np.stack([np.clip(np.arange(256) * light * t, 0, 255) for t in tint], axis=1).astype(np.uint8)
        out = cv2.merge([cv2.LUT(out[:, :, c], lut[:, c]) for c in range(3)])
    if conditions.noise > 0:
        noise = rng.normal(0.0, conditions.noise, out.shape).astype(np.float32)
        out = np.clip(out.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out)


def _rain(image: np.ndarray, density: float, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape[:2]
    overlay = image.copy()
    count = int(density * w * h / 1000)
    xs, ys = rng.uniform(0, w, count), rng.uniform(0, h, count)
    lengths = rng.uniform(8, 25, count) * max(w, h) / _REFERENCE_SIDE
    slant = rng.uniform(-0.3, 0.1)
    for x, y, length in zip(xs, ys, lengths):
        cv2.line(overlay, _pt(x, y), _pt(x + slant * length, y + length), (200, 200, 200), 1)
    streaked = cv2.addWeighted(overlay, 0.6, image, 0.4, 0)
    haze = 0.25 * min(density / 2.0, 1.0)  # rain also washes out contrast
    return cv2.addWeighted(streaked, 1.0 - haze, np.full_like(image, 170), haze, 0)
