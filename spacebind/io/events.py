"""Event-camera inputs: streams of (x, y, t, p) events, and the frames experts read from them.

Loaded form: `Events(x, y, t, p, height, width)`, sorted by time; p is True for a positive
(brightening) event. Files:
- `.npy`: `[N, 4]` columns x, y, t, p, or a structured array with fields x, y, t, p;
- `.npz`: arrays `x`, `y`, `t`, `p` (or `events` `[N, 4]`), optionally `height` and `width`;
- `.h5`/`.hdf5`: datasets `x`, `y`, `t`, `p` at the root or in a group `events` (the DSEC
  layout), optionally `height`/`width` as attributes of the file or datasets.
Polarity may be {0, 1} or {−1, 1}. Without `height`/`width` the sensor size is the largest
coordinate + 1.

Representations:
- `event_histograms(events, windows)`: float32 `[windows, 2, H, W]`, per-polarity counts
  (channel 0 positive, 1 negative) in `windows` equal time windows, divided by the largest
  count so values lie in [0, 1] (an empty stream gives zeros);
- `event_frame(events)`: an RGB uint8 `[H, W, 3]` event frame for image experts: all windows
  summed, positive counts in red, negative in blue, on black, scaled by the largest count.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spacebind.errors import InputError
from spacebind.extras import require

FIELDS = ("x", "y", "t", "p")


@dataclass(frozen=True)
class Events:
    """An event stream on a `height` × `width` sensor, sorted by time."""

    x: np.ndarray  # int64 [N]
    y: np.ndarray  # int64 [N]
    t: np.ndarray  # float64 [N], any time unit
    p: np.ndarray  # bool [N], True = positive
    height: int
    width: int

    def __len__(self) -> int:
        return len(self.t)


def events_from_columns(columns: dict[str, Any], name: str, height: int | None = None,
                        width: int | None = None) -> Events:
    """Validate x, y, t, p columns (equal length, finite, integer non-negative coordinates)."""
    missing = [f for f in FIELDS if f not in columns]
    if missing:
        raise InputError(f"{name}: event stream lacks {', '.join(missing)}; expected columns x, y, t, p")
    cols = {f: np.asarray(columns[f]).reshape(-1) for f in FIELDS}
    lengths = {f: len(c) for f, c in cols.items()}
    if len(set(lengths.values())) != 1:
        raise InputError(f"{name}: event columns of different lengths {lengths}; expected equal lengths")
    for f, c in cols.items():
        if c.dtype.kind not in "biuf" or not np.isfinite(c.astype(np.float64)).all():
            raise InputError(f"{name}: event column {f!r} holds non-numeric, NaN or infinite values")
    xy = {f: cols[f].astype(np.float64) for f in ("x", "y")}
    for f, v in xy.items():
        if (v < 0).any() or (v != np.round(v)).any():
            raise InputError(f"{name}: event column {f!r} must hold non-negative integer pixel coordinates")
    n = lengths["x"]
    if n == 0 and (height is None or width is None):
        raise InputError(f"{name}: empty event stream without a sensor size; give height and width")
    h = int(height) if height is not None else int(xy["y"].max()) + 1
    w = int(width) if width is not None else int(xy["x"].max()) + 1
    if h < 1 or w < 1:
        raise InputError(f"{name}: sensor size {h}x{w}; expected positive height and width")
    if n and (xy["x"].max() >= w or xy["y"].max() >= h):
        raise InputError(f"{name}: event coordinates beyond the {h}x{w} sensor")
    t = cols["t"].astype(np.float64)
    order = np.argsort(t, kind="stable")
    return Events(xy["x"].astype(np.int64)[order], xy["y"].astype(np.int64)[order], t[order],
                  (cols["p"] > 0)[order], h, w)


def events_array(arr: Any, name: str) -> Events:
    """Events from an in-memory `Events`, a structured array, a dict of columns or an `[N, 4]` array."""
    if isinstance(arr, Events):
        return arr
    if isinstance(arr, dict):
        return events_from_columns(arr, name, arr.get("height"), arr.get("width"))
    a = arr.detach().cpu().numpy() if hasattr(arr, "detach") else np.asarray(arr)
    if a.dtype.names:
        return events_from_columns({f: a[f] for f in a.dtype.names}, name)
    if a.ndim != 2 or a.shape[1] != 4:
        raise InputError(f"{name}: event array of shape {a.shape}; expected [N, 4] columns x, y, t, p")
    return events_from_columns(dict(zip(FIELDS, a.T)), name)


def read_events(path: Path, name: str) -> Events:
    """Read an event file (see the module docstring for the formats)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return events_array(np.load(path, allow_pickle=False), name)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                cols = {k: data[k] for k in data.files}
            if "events" in cols and "x" not in cols:
                cols.update(zip(FIELDS, np.asarray(cols.pop("events")).T))
            return events_from_columns(cols, name, _scalar(cols.get("height")), _scalar(cols.get("width")))
        if suffix in (".h5", ".hdf5"):
            return _read_h5(path, name)
    except InputError:
        raise
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise InputError(f"{name}: not a readable event file ({exc})") from None
    raise InputError(f"{name}: unsupported event extension {suffix!r}; expected .npy, .npz, .h5 or .hdf5")


def _scalar(value: Any) -> int | None:
    return None if value is None else int(np.asarray(value).reshape(-1)[0])


def _read_h5(path: Path, name: str) -> Events:
    h5py = require("h5py", "events", f"{name}: reading HDF5 event files")

    with h5py.File(path, "r") as fh:
        group = fh["events"] if "events" in fh and isinstance(fh["events"], h5py.Group) else fh
        cols = {f: group[f][()] for f in FIELDS if f in group}
        size = {k: _scalar(fh.attrs.get(k, group.attrs.get(k, group[k][()] if k in group else None)))
                for k in ("height", "width")}
    return events_from_columns(cols, name, size["height"], size["width"])


def event_histograms(events: Events, windows: int) -> np.ndarray:
    """Per-polarity counts in `windows` equal time windows, normalised: float32 [windows, 2, H, W]."""
    hist = np.zeros((windows, 2, events.height, events.width), dtype=np.float32)
    if len(events) == 0:
        return hist
    span = events.t[-1] - events.t[0]
    rel = (events.t - events.t[0]) / span if span > 0 else np.zeros_like(events.t)
    win = np.minimum((rel * windows).astype(np.int64), windows - 1)
    np.add.at(hist, (win, (~events.p).astype(np.int64), events.y, events.x), 1.0)
    return hist / hist.max()


def event_frame(events: Events) -> np.ndarray:
    """An RGB event frame: positive counts red, negative blue, on black: uint8 [H, W, 3]."""
    counts = event_histograms(events, 1)[0]  # already scaled to [0, 1]
    rgb = np.stack([counts[0], np.zeros_like(counts[0]), counts[1]], axis=-1)
    return np.rint(rgb * 255).astype(np.uint8)
