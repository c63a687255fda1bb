"""Video inputs: frames with a frame rate, read from containers, animated images or arrays.

Loaded form: `Video(frames uint8 [T, H, W, 3] RGB, fps)`. Files:
- `.mp4`, `.webm`, `.avi`, `.mkv`, `.mov`: read with PyAV (the PyPI package `av`, imported only
  when such a file is read). Loading reads the packet timestamps (no decoding) and decodes the
  first frame; `frames` is then a `ContainerFrames` that decodes only the frames indexed, seeking
  to the keyframe before each: frame i is the i-th frame in presentation order, as a full decode
  yields them.
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
from spacebind.extras import require

DEFAULT_FPS = 10.0
CONTAINERS = (".mp4", ".webm", ".avi", ".mkv", ".mov")
ANIMATED = (".gif", ".png", ".apng", ".webp")
SEEKABLE = ("mp4", "mov", "matroska", "webm")  # demuxers whose packets carry presentation timestamps


@dataclass(frozen=True)
class Video:
    """Decoded RGB frames and their rate; frame i shows at time i / fps."""

    frames: np.ndarray | ContainerFrames  # uint8 [T, H, W, 3]
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


class ContainerFrames:
    """The frames of a video file's first video stream, `[T, H, W, 3]` uint8, decoded when indexed.

    An integer, an integer array or a list decodes just those frames (seek to the keyframe at or
    before each, decode forward to its timestamp); a slice is another lazy view; any other index,
    or `np.asarray`, decodes the frames in order."""

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, path: Path, name: str, pts: np.ndarray, keyframes: np.ndarray, size: tuple[int, int],
                 seekable: bool) -> None:
        self.path, self.name, self.pts, self.keyframes, self.size = path, name, pts, keyframes, size
        self.seekable = seekable

    def __len__(self) -> int:
        return len(self.pts)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.pts), *self.size, 3)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            return ContainerFrames(self.path, self.name, self.pts[key], self.keyframes, self.size, self.seekable)
        index = np.asarray(key)
        if index.dtype.kind not in "iu":
            return np.asarray(self)[key]
        wanted = self.pts[index.reshape(-1)]  # IndexError past the end, as an array
        decoded = self._decode(np.unique(wanted))
        return np.stack([decoded[int(p)] for p in wanted]).reshape(*index.shape, *self.shape[1:])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        frames = self[np.arange(len(self))]
        return frames if dtype is None else frames.astype(dtype)

    def _decode(self, wanted: np.ndarray) -> dict[int, np.ndarray]:
        """Frames by timestamp for the sorted `wanted` timestamps: a seek only where the next one's
        keyframe lies past what was decoded last. Containers without presentation timestamps (AVI)
        and seeks that miss their frame fall back to one decode in order, keeping the wanted frames."""
        av = require("av", "video", "reading video containers (.mp4, .webm, …)")

        if not self.seekable:
            return self._decode_in_order(wanted)
        out: dict[int, np.ndarray] = {}
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                frames, last = iter(()), None
                for target in wanted:
                    key = self.keyframes[max(np.searchsorted(self.keyframes, target, side="right") - 1, 0)]
                    if last is None or last >= target or key > last:
                        container.seek(int(key), stream=stream, backward=True)
                        frames = iter(container.decode(stream))
                    frame = next((f for f in frames if f.pts is not None and f.pts >= target), None)
                    last = None if frame is None else frame.pts
                    if last != target:
                        return self._decode_in_order(wanted)
                    out[int(target)] = frame.to_ndarray(format="rgb24")
        except av.FFmpegError as exc:
            raise InputError(f"{self.name}: not a readable video file ({exc})") from None
        return out

    def _decode_in_order(self, wanted: np.ndarray) -> dict[int, np.ndarray]:
        av = require("av", "video", "reading video containers (.mp4, .webm, …)")

        keep = set(wanted.tolist())
        try:
            with av.open(str(self.path)) as container:
                frames = container.decode(container.streams.video[0])
                out = {f.pts: f.to_ndarray(format="rgb24") for f in frames if f.pts in keep}
        except av.FFmpegError as exc:
            raise InputError(f"{self.name}: not a readable video file ({exc})") from None
        if len(out) != len(keep):
            raise InputError(f"{self.name}: {len(keep) - len(out)} frame(s) could not be decoded (corrupt file?)")
        return out


def _read_container(path: Path, name: str) -> Video:
    av = require("av", "video", "reading video containers (.mp4, .webm, …)")

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{name}: the file has no video stream")
            stream = container.streams.video[0]
            rate = float(stream.average_rate or stream.guessed_rate or DEFAULT_FPS)
            seekable = any(f in SEEKABLE for f in container.format.name.split(","))
            packets = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.size]
        pts = np.array(sorted(p for p, _ in packets if p is not None), dtype=np.int64)
        keyframes = np.array(sorted(p for p, k in packets if k and p is not None), dtype=np.int64)
        usable = len(pts) == len(packets) and len(np.unique(pts)) == len(pts) and len(keyframes) > 0 \
            and keyframes[0] <= pts[0]
        with av.open(str(path)) as container:
            frames = container.decode(container.streams.video[0])
            if not usable:  # no timestamps to index frames by: decode everything, in order
                decoded = [frame.to_ndarray(format="rgb24") for frame in frames]
                if not decoded:
                    raise InputError(f"{name}: the video stream has no decodable frames (truncated?)")
                return video_array(np.stack(decoded), rate, name)
            first = next(iter(frames), None)
    except av.FFmpegError as exc:
        raise InputError(f"{name}: not a readable video file ({exc})") from None
    if first is None:
        raise InputError(f"{name}: the video stream has no decodable frames (truncated?)")
    return Video(ContainerFrames(path, name, pts, keyframes, (first.height, first.width), seekable), rate)


def uniform_frames(video: Video, count: int) -> np.ndarray:
    """`count` frames at evenly spaced indices from first to last (pytorchvideo's
    `uniform_temporal_subsample`: linspace(0, T − 1, count) truncated to integers)."""
    idx = np.linspace(0, len(video.frames) - 1, count).astype(np.int64)
    return video.frames[idx]
