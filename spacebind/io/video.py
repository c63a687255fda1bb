"""Video inputs: frames with a frame rate, read from containers, animated images or arrays.

Loaded form: `Video(frames uint8 [T, H, W, 3] RGB, fps)`. Files:
- `.mp4`, `.webm`, `.avi`, `.mkv`, `.mov`: decoded with PyAV (the PyPI package `av`, imported
  only when such a file is read).
- `.gif`, `.png` (APNG), `.webp`: animated images decoded with Pillow; fps from the first frame's
  duration (10 fps when the file gives none).
- `.npy` `[T, H, W, 3]` (10 fps) or `.npz` with `frames` and optionally `fps`.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spacebind.errors import InputError

DEFAULT_FPS = 10.0
CONTAINERS = (".mp4", ".webm", ".avi", ".mkv", ".mov")
ANIMATED = (".gif", ".png", ".apng", ".webp")


@dataclass(frozen=True)
class Video:
    """Decoded RGB frames and their rate; frame i shows at time i / fps."""

    frames: np.ndarray  # uint8 [T, H, W, 3]
    fps: float

    @property
    def duration(self) -> float:
        """Seconds covered: frames / fps (as decord and ImageBind's clip sampler count it)."""
        return len(self.frames) / self.fps


def video_array(frames: Any, fps: float, name: str) -> Video:
    """Validate frames `[T, H, W, 3]` (or `[T, H, W]` gray; uint8, or floats in [0, 1] / [0, 255])."""
    a = frames.detach().cpu().numpy() if hasattr(frames, "detach") else np.asarray(frames)
    if a.ndim == 3:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 4 or a.shape[-1] not in (3, 4) or min(a.shape[:3]) < 1:
        raise InputError(f"{name}: video of shape {a.shape}; expected frames [T, H, W, 3] with T, H, W ≥ 1")
    if a.dtype != np.uint8:
        a = a.astype(np.float32)
        if not np.isfinite(a).all():
            raise InputError(f"{name}: contains NaN or infinite values")
        if a.min(initial=0.0) >= 0.0 and a.max(initial=0.0) <= 1.0 + 1e-6:
            a = a * 255.0
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    if not np.isfinite(fps) or fps <= 0:
        raise InputError(f"{name}: frame rate {fps}; expected a positive number")
    return Video(np.ascontiguousarray(a[..., :3]), float(fps))


def read_video(path: Path, name: str) -> Video:
    """Decode a video file (see the module docstring for the formats)."""
    suffix = path.suffix.lower()
    if suffix in CONTAINERS:
        return _read_container(path, name)
    if suffix in ANIMATED:
        return _read_animated(path, name)
    if suffix in (".npy", ".npz"):
        return _read_array(path, name)
    raise InputError(f"{name}: unsupported video extension {suffix!r}; expected one of "
                     f"{', '.join(CONTAINERS + ANIMATED)}, .npy, .npz")


def _read_array(path: Path, name: str) -> Video:
    try:
        if path.suffix.lower() == ".npy":
            return video_array(np.load(path, allow_pickle=False), DEFAULT_FPS, name)
        with np.load(path, allow_pickle=False) as data:
            if "frames" not in data:
                raise InputError(f"{name}: .npz has no 'frames' array (found {sorted(data.files)})")
            fps = float(data["fps"]) if "fps" in data else DEFAULT_FPS
            return video_array(data["frames"], fps, name)
    except InputError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{name}: not a readable video array ({exc})") from None


def _read_animated(path: Path, name: str) -> Video:
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            duration_ms = float(img.info.get("duration") or 0)
            frames = [np.asarray(f.convert("RGB"), dtype=np.uint8) for f in ImageSequence.Iterator(img)]
    except (UnidentifiedImageError, OSError, SyntaxError, EOFError) as exc:
        raise InputError(f"{name}: not a readable animated image ({exc})") from None
    fps = 1000.0 / duration_ms if duration_ms > 0 else DEFAULT_FPS
    return video_array(np.stack(frames), fps, name)


def _read_container(path: Path, name: str) -> Video:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{name}: the file has no video stream")
            stream = container.streams.video[0]
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
            rate = stream.average_rate or stream.guessed_rate
    except av.FFmpegError as exc:
        raise InputError(f"{name}: not a readable video file ({exc})") from None
    if not frames:
        raise InputError(f"{name}: the video stream has no decodable frames (truncated?)")
    return video_array(np.stack(frames), float(rate) if rate else DEFAULT_FPS, name)


def uniform_frames(video: Video, count: int) -> np.ndarray:
    """`count` frames at evenly spaced indices from first to last (pytorchvideo's
    `uniform_temporal_subsample`: linspace(0, T − 1, count) truncated to integers)."""
    idx = np.linspace(0, len(video.frames) - 1, count).astype(np.int64)
    return video.frames[idx]
