"""The world's optional sensor modalities: video, thermal and events.

Each draws from its own random stream (`inst.seed + 4`, `+ 5`, `+ 6`), so adding them leaves the
image, audio, point and caption renders of every instance unchanged.

- video: the concept's shape and colour gliding across the frame while it turns and pulses
  (8 frames at 8 fps, 32×32); size shows as scale, intensity as brightness, like the image.
- thermal: a single-channel heat signature: the concept's shape at a temperature set by its
  colour (warm colours hotter), with a heat pattern set by its rhythm (even, hot core, banded,
  hot rim), blurred, on a cool noisy background; size shows as scale, intensity as warmth.
- events: what an event camera sees of the video: per pixel, an event of polarity ±1 each time
  the log intensity moves by the contrast threshold from its level at the last event, timed by
  linear interpolation between frames, plus a little background activity.
"""
from __future__ import annotations

import numpy as np

from spacebind.io.events import Events
from spacebind.io.video import Video
from spacebind.world.concepts import COLOURS, Instance
from spacebind.world.render import IMAGE_SIZE, object_coords, shape_mask

FRAMES, FPS = 8, 8.0
CONTRAST = 0.15  # log-intensity change that fires an event
NOISE_RATE = 0.002  # background events per pixel and frame interval
HEAT = {"red": 0.95, "orange": 0.85, "yellow": 0.75, "purple": 0.6, "green": 0.5, "blue": 0.4}
HEAT_PATTERNS = {"steady": "even", "double": "core", "triple": "bands", "swell": "rim"}


def render_video(inst: Instance) -> Video:
    """8 RGB frames (uint8 [8, 32, 32, 3], 8 fps) of the concept's shape moving and changing."""
    rng = np.random.default_rng(inst.seed + 4)
    n = IMAGE_SIZE
    background = 0.35 + 0.2 * rng.random(3)
    texture = 0.05 * rng.standard_normal((n, n, 3))  # a static scene: only the object moves
    r0 = 3.5 + 9.0 * inst.size
    lo, hi = r0 * 0.8, n - r0 * 0.8
    start, end = rng.uniform(lo, hi, size=2), rng.uniform(lo, hi, size=2)
    theta0, spin = rng.uniform(-0.5, 0.5), rng.uniform(-0.6, 0.6)
    pulse = rng.uniform(0.05, 0.15)
    colour = np.array(COLOURS[inst.concept.colour]) * (0.45 + 0.55 * inst.intensity) + 0.06 * rng.standard_normal(3)
    frames = []
    for k in range(FRAMES):
        a = k / (FRAMES - 1)
        cx, cy = (1 - a) * start + a * end
        x, y = object_coords(cx, cy, theta0 + spin * a)
        img = background + texture + 0.01 * rng.standard_normal((n, n, 3))
        img[shape_mask(inst.concept.shape, x, y, r0 * (1 + pulse * np.sin(2 * np.pi * a)))] = colour
        frames.append((np.clip(img, 0, 1) * 255).round().astype(np.uint8))
    return Video(np.stack(frames), FPS)


def _heat_pattern(pattern: str, x: np.ndarray, y: np.ndarray, r: float) -> np.ndarray:
    d = np.sqrt(x**2 + y**2) / r
    if pattern == "even":
        return np.ones_like(d)
    if pattern == "core":
        return np.clip(1.2 - d, 0.2, 1.0)
    if pattern == "bands":
        return 0.6 + 0.4 * np.cos(3 * np.pi * y / r)
    if pattern == "rim":
        return np.clip(0.3 + d, 0.3, 1.0)
    raise ValueError(f"unknown heat pattern {pattern!r}")


def _blur(a: np.ndarray) -> np.ndarray:
    """A 3×3 binomial blur with edge padding (heat diffuses)."""
    p = np.pad(a, 1, mode="edge")
    rows = 0.25 * p[:-2] + 0.5 * p[1:-1] + 0.25 * p[2:]
    return 0.25 * rows[:, :-2] + 0.5 * rows[:, 1:-1] + 0.25 * rows[:, 2:]


def render_thermal(inst: Instance) -> np.ndarray:
    """float32 [32, 32] in [0, 1]: the concept's heat signature on a cool background."""
    rng = np.random.default_rng(inst.seed + 5)
    n = IMAGE_SIZE
    ambient = 0.15 + 0.1 * rng.random()
    r = 3.5 + 9.0 * inst.size
    cx, cy = rng.uniform(r * 0.7, n - r * 0.7, size=2)
    x, y = object_coords(cx, cy, rng.uniform(-0.5, 0.5))
    mask = shape_mask(inst.concept.shape, x, y, r)
    heat = HEAT[inst.concept.colour] * (0.8 + 0.2 * inst.intensity) + 0.03 * rng.standard_normal()
    temp = np.where(mask, ambient + (heat - ambient) * _heat_pattern(HEAT_PATTERNS[inst.concept.rhythm], x, y, r), ambient)
    temp = _blur(temp) + 0.02 * rng.standard_normal((n, n))
    return np.clip(temp, 0, 1).astype(np.float32)


def events_from_frames(video: Video, rng: np.random.Generator) -> Events:
    """Thresholded log-intensity changes between consecutive frames, as an event camera fires."""
    gray = video.frames.astype(np.float64).mean(axis=-1) / 255.0
    logs = np.log(gray + 0.05)
    ref = logs[0].copy()
    xs, ys, ts, ps = [], [], [], []
    dt = 1.0 / video.fps
    for k in range(1, len(logs)):
        diff = logs[k] - ref
        count = np.floor(np.abs(diff) / CONTRAST).astype(np.int64)
        yy, xx = np.nonzero(count)
        c, d = count[yy, xx], diff[yy, xx]
        owner = np.repeat(np.arange(len(c)), c)
        j = np.arange(len(owner)) - np.repeat(np.cumsum(c) - c, c) + 1  # crossing number within its pixel
        # the j-th crossing happens when the interpolated log intensity reaches ref ± j·C
        ts.append((k - 1 + j * CONTRAST / np.abs(d[owner])) * dt)
        xs.append(xx[owner])
        ys.append(yy[owner])
        ps.append(d[owner] > 0)
        ref[yy, xx] += np.sign(d) * c * CONTRAST
        noise = int(rng.poisson(NOISE_RATE * gray[0].size))
        xs.append(rng.integers(0, gray.shape[2], noise))
        ys.append(rng.integers(0, gray.shape[1], noise))
        ts.append((k - 1 + rng.random(noise)) * dt)
        ps.append(rng.random(noise) < 0.5)
    t = np.concatenate(ts)
    order = np.argsort(t, kind="stable")
    return Events(np.concatenate(xs).astype(np.int64)[order], np.concatenate(ys).astype(np.int64)[order], t[order],
                  np.concatenate(ps).astype(bool)[order], gray.shape[1], gray.shape[2])


def render_events(inst: Instance) -> Events:
    """The events of the instance's video (timestamps in seconds)."""
    return events_from_frames(render_video(inst), np.random.default_rng(inst.seed + 6))
