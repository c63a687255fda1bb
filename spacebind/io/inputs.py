"""Input loading: paths, arrays or strings → the loaded form each modality's encoders take.

Loaded forms (what expert encoders receive, as a list):
- image: np.ndarray uint8 [H, W, 3] RGB
- audio: `Audio` (mono float32 samples in [-1, 1], sample rate)
- point: np.ndarray float32 [N, 3] (xyz) or [N, 6] (xyz + rgb in [0, 1])
- text: non-empty str
- depth: np.ndarray float32 [H, W] (depth or disparity values as stored, unscaled)
- thermal: np.ndarray float32 [H, W] in [0, 1] (8- or 16-bit grayscale scaled by its bit depth)
- imu: np.ndarray float32 [T, 6] (accelerometer xyz, gyroscope xyz), T ≥ 1
- video: `spacebind.io.video.Video` (uint8 frames [T, H, W, 3], fps)
- event: `spacebind.io.events.Events` (x, y, t, p columns sorted by time, sensor height and width)
"""
from __future__ import annotations

import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path
from typing import Any

import numpy as np

from spacebind.errors import InputError
from spacebind.io.events import Events, events_array, read_events
from spacebind.io.files import positive_int_env
from spacebind.io.pointfiles import read_ply, read_xyz, unit_rgb
from spacebind.io.video import DEFAULT_FPS, ContainerFrames, Video, read_video, video_array
from spacebind.modalities import check_modality


@dataclass(frozen=True)
class Audio:
    """A mono waveform (the mean of the source's channels); `channels` keeps a multichannel source's
    own channels, for experts whose official loaders read them (ImageBind's reads channel 0)."""

    samples: np.ndarray  # float32 [T]
    sample_rate: int
    channels: np.ndarray | None = None  # float32 [C, T], C > 1; None for mono sources


@dataclass
class LoadResult:
    """What a lenient load produced: loaded items, their positions, and the bad ones with reasons."""

    loaded: list[Any] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    bad: list[tuple[int, str]] = field(default_factory=list)


def resample(audio: Audio, rate: int) -> Audio:
    """Polyphase resampling to `rate` (identity when the rates match)."""
    if audio.sample_rate == rate:
        return audio
    from scipy.signal import resample_poly

    g = gcd(audio.sample_rate, rate)
    samples = resample_poly(audio.samples, rate // g, audio.sample_rate // g).astype(np.float32)
    return Audio(samples, rate)


MAX_IMAGE_PIXELS_ENV = "SPACEBIND_MAX_IMAGE_PIXELS"
DEFAULT_MAX_IMAGE_PIXELS = 178_956_970  # Pillow's own error threshold (2 × its warning threshold)


def max_image_pixels() -> int:
    """The largest image (width × height) loaded: `$SPACEBIND_MAX_IMAGE_PIXELS`, else 178,956,970.

    Raises:
        InputError: the variable is not a positive integer.
    """
    return positive_int_env(MAX_IMAGE_PIXELS_ENV, DEFAULT_MAX_IMAGE_PIXELS, "pixels")


def _open_image(path: Path, name: str, what: str = "image") -> Any:
    """`PIL.Image.open(path)`, refusing images over `max_image_pixels()` before decoding them."""
    from PIL import Image, UnidentifiedImageError

    cap = max_image_pixels()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the cap below decides
            Image.MAX_IMAGE_PIXELS = max(cap, DEFAULT_MAX_IMAGE_PIXELS) // 2  # Pillow refuses above twice this
            img = Image.open(path)
    except Image.DecompressionBombError:
        raise InputError(f"{name}: image larger than {cap:,} pixels (a decompression bomb?); "
                         f"set ${MAX_IMAGE_PIXELS_ENV} to allow larger images") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InputError(f"{name}: not a readable {what} ({exc})") from None
    width, height = img.size
    if width * height > cap:
        img.close()
        raise InputError(f"{name}: image of {width}x{height} = {width * height:,} pixels, over the cap of {cap:,} "
                         f"(a decompression bomb?); set ${MAX_IMAGE_PIXELS_ENV} to allow larger images")
    return img


def _real(arr: Any, name: str) -> np.ndarray:
    """`arr` as a numpy array, refusing complex values (a cast to real would drop them silently)."""
    a = arr.detach().cpu().numpy() if hasattr(arr, "detach") else np.asarray(arr)
    if np.iscomplexobj(a):
        raise InputError(f"{name}: complex values ({a.dtype}); expected real numbers")
    return a


def _load_npy(path: Path, name: str) -> np.ndarray:
    """A .npy file's array; the reason of a failure never quotes the file's bytes."""
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError):
        raise InputError(f"{name}: not a readable .npy array (bad header, truncated data or object dtype)") from None


def _load_text_table(path: Path, name: str, what: str, delimiter: str | None = None) -> np.ndarray:
    """Rows of numbers from a text file; the reason of a failure never quotes the file's text."""
    try:
        return np.loadtxt(path, delimiter=delimiter, ndmin=2)
    except (ValueError, OSError, EOFError, UnicodeDecodeError):
        sep = "comma" if delimiter == "," else "whitespace"
        raise InputError(f"{name}: not a readable {what} (expected rows of {sep}-separated numbers)") from None


def _finite(arr: np.ndarray, name: str) -> np.ndarray:
    if not np.isfinite(arr).all():
        raise InputError(f"{name}: contains NaN or infinite values")
    return arr


def _image_array(arr: Any, name: str) -> np.ndarray:
    a = _real(arr, name)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)  # CHW → HWC
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4) or min(a.shape[:2]) < 1:
        raise InputError(f"{name}: image of shape {a.shape}; expected HxW, HxWx3 (or 4) or 3xHxW")
    if a.dtype == np.uint16:  # 16-bit pictures: scaled by their bit depth, as 8-bit ones are
        a = a.astype(np.float32) / np.iinfo(np.uint16).max
    if a.dtype != np.uint8:
        a = _finite(a.astype(np.float32), name)
        if a.max(initial=0.0) <= 1.0 + 1e-6 and a.min(initial=0.0) >= 0.0:
            a = a * 255.0
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return np.ascontiguousarray(a[..., :3])


def _sixteen_bit(arr: np.ndarray) -> np.ndarray:
    """PIL's 32-bit integer pixels as uint16 when they fit (PIL's mode "I" holds 16-bit PNGs)."""
    if arr.dtype.kind in "iu" and arr.dtype.itemsize > 1 and arr.min(initial=0) >= 0 and arr.max(initial=0) <= 65535:
        return arr.astype(np.uint16)
    return arr


def _image_file(path: Path, name: str) -> np.ndarray:
    from PIL import UnidentifiedImageError

    try:
        with _open_image(path, name) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # PIL's mode "I" holds 16-bit PNGs
                return _image_array(_sixteen_bit(np.asarray(img)), name)
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InputError(f"{name}: not a readable image ({exc})") from None


def _audio_file(path: Path, name: str) -> Audio:
    import soundfile as sf

    try:
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as exc:  # type: ignore[attr-defined]
        raise InputError(f"{name}: not a readable audio file ({exc})") from None
    declared = _wav_frames(path)
    if declared is not None and len(samples) < declared:
        raise InputError(f"{name}: truncated audio: {len(samples)} of the {declared} frames its header declares")
    return _audio_array(samples.mean(axis=1), rate, name, samples.T if samples.shape[1] > 1 else None)


def _wav_frames(path: Path) -> int | None:
    """The frame count a RIFF/WAVE header declares (data chunk size / block align); None for other
    formats and for streamed WAVs whose header leaves the size open (0 or 0xFFFFFFFF)."""
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block_align = None
        while True:
            chunk = fh.read(8)
            if len(chunk) < 8:
                return None
            cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"fmt ":
                fmt = fh.read(size)
                block_align = struct.unpack("<H", fmt[12:14])[0] if len(fmt) >= 14 else None
                fh.seek(size % 2, 1)
            elif cid == b"data":
                if not block_align or size in (0, 0xFFFFFFFF):
                    return None
                return size // block_align
            else:
                fh.seek(size + size % 2, 1)


def _audio_array(samples: Any, rate: int, name: str, channels: Any = None) -> Audio:
    a = _pcm_float(_real(samples, name))
    if a.ndim == 2:
        frames_first = a.shape[1] <= a.shape[0]  # the shorter axis holds the channels
        if a.shape[1 if frames_first else 0] > 1:
            channels = a.T if frames_first else a
        a = a.mean(axis=1) if frames_first else a.mean(axis=0)
    if a.ndim != 1 or a.size == 0:
        raise InputError(f"{name}: audio of shape {np.asarray(samples).shape}; expected a non-empty 1-D waveform")
    if int(rate) <= 0:
        raise InputError(f"{name}: sample rate {rate}; expected a positive integer")
    if channels is not None:
        channels = np.ascontiguousarray(_pcm_float(_real(channels, name)))
        if channels.ndim != 2 or channels.shape[1] != a.size:
            raise InputError(f"{name}: channels of shape {channels.shape}; expected [C, {a.size}]")
    return Audio(_finite(a, name), int(rate), channels)


def _pcm_float(a: np.ndarray) -> np.ndarray:
    """Samples as float32 in [-1, 1]: integer PCM scaled by its bit depth (as soundfile reads it)."""
    if a.dtype.kind == "i":
        return (a / float(2 ** (8 * a.dtype.itemsize - 1))).astype(np.float32)
    if a.dtype.kind == "u":  # unsigned PCM (8-bit WAV) is centred on half its range
        half = float(2 ** (8 * a.dtype.itemsize - 1))
        return ((a - half) / half).astype(np.float32)
    return a.astype(np.float32)


def _points_array(arr: Any, name: str) -> np.ndarray:
    a = _real(arr, name).astype(np.float32)
    if a.ndim != 2 or a.shape[1] not in (3, 6):
        raise InputError(f"{name}: point cloud of shape {a.shape}; expected [N, 3] (xyz) or [N, 6] (xyz + rgb)")
    if a.shape[0] == 0:
        raise InputError(f"{name}: empty point cloud; expected at least one point")
    return unit_rgb(_finite(a, name))


def _points_file(path: Path, name: str) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _points_array(_load_npy(path, name), name)
    if suffix == ".ply":
        try:
            points = read_ply(path)
        except (ValueError, OSError, EOFError) as exc:  # our parser's reasons name places, not contents
            raise InputError(f"{name}: not a readable point cloud ({exc})") from None
        return _points_array(points, name)
    if suffix == ".xyz":
        try:
            points = read_xyz(path)
        except (ValueError, OSError, EOFError, UnicodeDecodeError):
            raise InputError(f"{name}: not a readable point cloud (expected rows of 3 or 6 numbers)") from None
        return _points_array(points, name)
    raise InputError(f"{name}: unsupported point cloud extension {suffix!r}; expected .npy, .ply or .xyz")


def _map_array(arr: Any, name: str, modality: str) -> np.ndarray:
    a = _real(arr, name)
    if a.ndim == 3 and 1 in (a.shape[0], a.shape[-1]):
        a = a.reshape(a.shape[1:] if a.shape[0] == 1 else a.shape[:2])
    if a.ndim != 2 or min(a.shape) < 1:
        raise InputError(f"{name}: {modality} map of shape {a.shape}; expected [H, W] (or [1, H, W] / [H, W, 1])")
    if modality == "thermal" and a.dtype in (np.uint8, np.uint16):
        a = a.astype(np.float32) / np.iinfo(a.dtype).max
    return _finite(a.astype(np.float32), name)


def _map_file(modality: str) -> Callable[[Path, str], np.ndarray]:
    def load(path: Path, name: str) -> np.ndarray:
        from PIL import UnidentifiedImageError

        if path.suffix.lower() == ".npy":
            return _map_array(_load_npy(path, name), name, modality)
        what = f"{modality} image or .npy array"
        try:
            with _open_image(path, name, what) as img:
                img.load()
                arr = np.asarray(img)
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise InputError(f"{name}: not a readable {what} ({exc})") from None
        if arr.ndim == 3:
            raise InputError(f"{name}: {modality} image has {arr.shape[2]} channels; expected a single-channel image")
        return _map_array(_sixteen_bit(arr), name, modality)

    return load


def _imu_array(arr: Any, name: str) -> np.ndarray:
    a = _real(arr, name).astype(np.float32)
    if a.ndim == 2 and a.shape[0] == 6 and a.shape[1] != 6:
        a = a.T  # [6, T] → [T, 6]
    if a.ndim != 2 or a.shape[1] != 6 or a.shape[0] == 0:
        raise InputError(f"{name}: IMU series of shape {a.shape}; expected [T, 6] (accelerometer xyz, gyroscope xyz)")
    return _finite(a, name)


def _imu_file(path: Path, name: str) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _imu_array(_load_npy(path, name), name)
    if suffix in (".csv", ".txt"):
        return _imu_array(_load_text_table(path, name, "IMU series", "," if suffix == ".csv" else None), name)
    raise InputError(f"{name}: unsupported IMU extension {suffix!r}; expected .npy, .csv or .txt")


_FILE_LOADERS: dict[str, Callable[[Path, str], Any]] = {
    "image": _image_file, "audio": _audio_file, "point": _points_file,
    "depth": _map_file("depth"), "thermal": _map_file("thermal"), "imu": _imu_file,
    "video": read_video, "event": read_events,
}


def load_input(modality: str, x: Any, *, name: str | None = None) -> Any:
    """Load one input of `modality`: a path, an array/tensor, `Audio` or `(samples, rate)`, or text."""
    check_modality(modality)
    name = name or (str(x) if isinstance(x, (str, Path)) and modality != "text" else f"{modality} input")
    if modality == "text":
        if not isinstance(x, str):
            raise InputError(f"{name}: expected a string, got {type(x).__name__}")
        if not x.strip():
            raise InputError(f"{name}: empty text; expected a non-empty string")
        return x
    if isinstance(x, (str, Path)):
        path = Path(x)
        if not path.is_file():
            raise InputError(f"{name}: no such file")
        return _FILE_LOADERS[modality](path, name)
    if modality == "image":
        return _image_array(x, name)
    if modality == "point":
        return _points_array(x, name)
    if modality in ("depth", "thermal"):
        return _map_array(x, name, modality)
    if modality == "imu":
        return _imu_array(x, name)
    if modality == "video":
        if isinstance(x, Video):
            return x if isinstance(x.frames, ContainerFrames) else video_array(x.frames, x.fps, name)
        return video_array(x, DEFAULT_FPS, name)
    if modality == "event":
        return events_array(x, name)
    if isinstance(x, Audio):  # the one modality left: audio
        return _audio_array(x.samples, x.sample_rate, name, x.channels)
    if isinstance(x, tuple) and len(x) == 2:
        return _audio_array(x[0], x[1], name)
    raise InputError(f"{name}: a bare array has no sample rate; pass Audio(samples, rate) or (samples, rate)")


def _as_batch(modality: str, xs: Any) -> list[Any]:
    if isinstance(xs, (str, Path, Audio, Video, Events)) or (modality == "audio" and isinstance(xs, tuple) and len(xs) == 2
                                               and np.isscalar(xs[1])):
        return [xs]
    if isinstance(xs, np.ndarray) or hasattr(xs, "detach"):
        single_dims = {"image": (2, 3), "point": (2,), "depth": (2,), "thermal": (2,), "imu": (2,),
                       "video": (4,), "event": (1, 2)}.get(modality, ())
        return [xs] if xs.ndim in single_dims else list(xs)
    return list(xs)


def load_inputs(modality: str, xs: Any) -> list[Any]:
    """Load a batch (a list, or one item); raise InputError naming the first bad input."""
    check_modality(modality)
    return [load_input(modality, x, name=_item_name(modality, x, i)) for i, x in enumerate(_as_batch(modality, xs))]


def load_inputs_lenient(modality: str, xs: Any) -> LoadResult:
    """Load what can be loaded; bad items are returned with their reasons instead of raising."""
    check_modality(modality)
    result = LoadResult()
    for i, x in enumerate(_as_batch(modality, xs)):
        try:
            result.loaded.append(load_input(modality, x, name=_item_name(modality, x, i)))
            result.indices.append(i)
        except InputError as exc:
            result.bad.append((i, str(exc)))
    return result


def _item_name(modality: str, x: Any, i: int) -> str:
    return str(x) if isinstance(x, (str, Path)) and modality != "text" else f"{modality}[{i}]"
