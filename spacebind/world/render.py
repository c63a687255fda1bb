"""Rendering instances into raw data: an RGB image, a mono waveform, a point cloud, a caption.

Size shows everywhere: object scale in images and point clouds, a lower pitch and longer
notes in sounds, a size word in captions. Intensity shows as brightness and loudness."""
from __future__ import annotations

import numpy as np

from spacebind.world.concepts import COLOURS, Instance

IMAGE_SIZE = 32
SAMPLE_RATE = 16000
AUDIO_SECONDS = 0.5
NUM_POINTS = 384
TEMPLATES = (
    "a {size} {intensity} {name}", "{intensity} {name}, {size}", "the {name} is {size} and {intensity}",
    "a {size} {name} that looks {intensity}", "{size} {name}", "an image of a {intensity} {size} {name}",
)


def shape_mask(shape: str, x: np.ndarray, y: np.ndarray, r: float) -> np.ndarray:
    """Pixels inside `shape` of radius `r`, from coordinates in the object's own frame."""
    ax, ay = np.abs(x), np.abs(y)
    if shape == "circle":
        return x**2 + y**2 <= r**2
    if shape == "square":
        return np.maximum(ax, ay) <= 0.8 * r
    if shape == "triangle":
        return (y <= 0.6 * r) & (y >= 1.9 * ax - r)
    if shape == "diamond":
        return ax + ay <= r
    if shape == "cross":
        return (np.minimum(ax, ay) <= 0.3 * r) & (np.maximum(ax, ay) <= r)
    if shape == "ring":
        d = np.sqrt(x**2 + y**2)
        return (d <= r) & (d >= 0.55 * r)
    raise ValueError(f"unknown shape {shape!r}")


def object_coords(cx: float, cy: float, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """The image grid's pixel centres in the frame of an object at (cx, cy) turned by `theta`."""
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float64) + 0.5
    dx, dy = xx - cx, yy - cy
    return np.cos(theta) * dx + np.sin(theta) * dy, -np.sin(theta) * dx + np.cos(theta) * dy


def render_image(inst: Instance) -> np.ndarray:
    """uint8 [32, 32, 3]: the concept's shape and colour on a noisy background."""
    rng = np.random.default_rng(inst.seed)
    n = IMAGE_SIZE
    background = 0.35 + 0.2 * rng.random(3)
    img = background + 0.08 * rng.standard_normal((n, n, 3))
    r = 3.5 + 9.0 * inst.size
    cx, cy = rng.uniform(r * 0.7, n - r * 0.7, size=2)
    theta = rng.uniform(-0.5, 0.5)
    x, y = object_coords(cx, cy, theta)
    colour = np.array(COLOURS[inst.concept.colour]) * (0.45 + 0.55 * inst.intensity) + 0.06 * rng.standard_normal(3)
    mask = shape_mask(inst.concept.shape, x, y, r)
    img[mask] = colour + 0.04 * rng.standard_normal((int(mask.sum()), 3))
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def _harmonics(timbre: str) -> list[tuple[int, float]]:
    if timbre == "sine":
        return [(1, 1.0), (2, 0.1)]
    if timbre == "square":
        return [(k, 1.0 / k) for k in (1, 3, 5, 7, 9)]
    if timbre == "saw":
        return [(k, 1.0 / k) for k in range(1, 9)]
    if timbre == "bell":
        return [(1, 1.0), (2.76, 0.6), (5.4, 0.4), (8.9, 0.25)]  # inharmonic partials
    raise ValueError(f"unknown timbre {timbre!r}")


def _envelope(rhythm: str, t: np.ndarray, size: float) -> np.ndarray:
    length = 0.05 + 0.06 * size  # bigger things ring longer
    if rhythm == "steady":
        onsets = np.arange(0.0, AUDIO_SECONDS, 0.125)
    elif rhythm == "double":
        onsets = np.array([0.0, 0.08, 0.25, 0.33])
    elif rhythm == "triple":
        onsets = np.array([0.0, 0.07, 0.14, 0.3, 0.37, 0.44])
    elif rhythm == "swell":
        return np.sin(np.pi * t / AUDIO_SECONDS) ** 2
    else:
        raise ValueError(f"unknown rhythm {rhythm!r}")
    env = np.zeros_like(t)
    for o in onsets:
        rel = t - o
        env += np.where(rel >= 0, np.exp(-np.clip(rel, 0, None) / length), 0.0)
    return np.clip(env, 0, 1)


def render_audio(inst: Instance) -> np.ndarray:
    """float32 [8000] at 16 kHz: pitch, timbre and rhythm of the concept, shifted by size."""
    rng = np.random.default_rng(inst.seed + 1)
    t = np.arange(int(SAMPLE_RATE * AUDIO_SECONDS)) / SAMPLE_RATE
    f0 = inst.concept.pitch * 2.0 ** (0.4 - 0.8 * inst.size) * 2.0 ** (rng.normal(0, 0.02))
    wave = sum(a * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) for k, a in _harmonics(inst.concept.timbre))
    wave = wave / np.abs(wave).max() * _envelope(inst.concept.rhythm, t, inst.size)
    wave = np.roll(wave, rng.integers(0, int(0.06 * SAMPLE_RATE)))
    wave = (0.15 + 0.6 * inst.intensity) * wave + 0.03 * rng.standard_normal(len(t))
    return np.clip(wave, -1, 1).astype(np.float32)


def _primitive(name: str, rng: np.random.Generator, n: int) -> np.ndarray:
    u, v = rng.random(n), rng.random(n)
    if name == "sphere":
        p = rng.standard_normal((n, 3))
        return p / np.linalg.norm(p, axis=1, keepdims=True)
    if name == "cube":
        p = rng.uniform(-1, 1, (n, 3))
        axis = rng.integers(0, 3, n)
        p[np.arange(n), axis] = np.sign(rng.uniform(-1, 1, n))
        return p
    if name == "cylinder":
        a = 2 * np.pi * u
        return np.stack([np.cos(a), np.sin(a), 2 * v - 1], axis=1)
    if name == "cone":
        a, h = 2 * np.pi * u, np.sqrt(v)
        return np.stack([h * np.cos(a), h * np.sin(a), 1 - 2 * h], axis=1)
    if name == "torus":
        a, b = 2 * np.pi * u, 2 * np.pi * v
        return np.stack([(1 + 0.35 * np.cos(b)) * np.cos(a), (1 + 0.35 * np.cos(b)) * np.sin(a), 0.35 * np.sin(b)], axis=1) / 1.35
    if name == "pyramid":
        h = np.sqrt(v)
        side = rng.integers(0, 4, n)
        s = (2 * u - 1) * h
        x = np.where(side < 2, s, np.where(side == 2, h, -h))
        y = np.where(side < 2, np.where(side == 0, h, -h), s)
        return np.stack([x, y, 1 - 2 * h], axis=1)
    raise ValueError(f"unknown primitive {name!r}")


def _deform(name: str, p: np.ndarray) -> np.ndarray:
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    if name == "none":
        return p
    if name == "stretch":
        return np.stack([0.6 * x, 0.6 * y, 1.6 * z], axis=1)
    if name == "twist":
        a = 1.2 * z
        return np.stack([x * np.cos(a) - y * np.sin(a), x * np.sin(a) + y * np.cos(a), z], axis=1)
    if name == "bend":
        return np.stack([x + 0.5 * z**2, y, z], axis=1)
    raise ValueError(f"unknown deformation {name!r}")


def render_points(inst: Instance) -> np.ndarray:
    """float32 [384, 3]: the concept's primitive and deformation, scaled by size (not normalised)."""
    rng = np.random.default_rng(inst.seed + 2)
    p = _deform(inst.concept.deformation, _primitive(inst.concept.primitive, rng, NUM_POINTS))
    a = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    p = (p @ rot.T) * (0.4 + 0.8 * inst.size) + 0.02 * rng.standard_normal(p.shape)
    return p.astype(np.float32)


def render_caption(inst: Instance) -> str:
    """A caption naming the concept (by name or a training synonym), its size and intensity."""
    rng = np.random.default_rng(inst.seed + 3)
    names = inst.concept.caption_names
    template = TEMPLATES[rng.integers(len(TEMPLATES))]
    return template.format(size=inst.size_word, intensity=inst.intensity_word, name=names[rng.integers(len(names))])
