"""Readers for point-cloud text and PLY files (xyz, optional rgb)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


def read_xyz(path: Path) -> np.ndarray:
    """Whitespace-separated rows of 3 (xyz) or 6 (xyz rgb) numbers."""
    arr = np.loadtxt(path, dtype=np.float32, ndmin=2)
    return _with_unit_rgb(arr)


def read_ply(path: Path) -> np.ndarray:
    """The vertex element of an ASCII or binary little-endian PLY → [N, 3] or [N, 6]."""
    with open(path, "rb") as fh:
        if fh.readline().strip() != b"ply":
            raise ValueError("missing 'ply' magic line")
        fmt, count, props = None, 0, []
        element = None
        while True:
            line = fh.readline()
            if not line:
                raise ValueError("header ends without 'end_header'")
            words = line.decode("ascii", "replace").split()
            if not words:
                continue
            if words[0] == "format":
                fmt = words[1]
            elif words[0] == "element":
                element = words[1]
                if element == "vertex":
                    count = int(words[2])
                elif not props:
                    raise ValueError("elements before 'vertex' are not supported")
            elif words[0] == "property" and element == "vertex":
                if words[1] == "list":
                    raise ValueError("list properties in the vertex element are not supported")
                props.append((words[2], _PLY_TYPES[words[1]]))
            elif words[0] == "end_header":
                break
        names = [n for n, _ in props]
        if fmt == "ascii":
            data = np.loadtxt(fh, dtype=np.float64, max_rows=count, ndmin=2)
            if data.shape != (count, len(props)):
                raise ValueError(f"expected {count} vertices of {len(props)} values, read {data.shape}")
            table = {n: data[:, i] for i, n in enumerate(names)}
        elif fmt == "binary_little_endian":
            dtype = np.dtype([(n, "<" + t) for n, t in props])
            raw = fh.read(dtype.itemsize * count)
            if len(raw) < dtype.itemsize * count:
                raise ValueError(f"truncated: expected {count} vertices")
            rec = np.frombuffer(raw, dtype=dtype, count=count)
            table = {n: rec[n].astype(np.float64) for n in names}
        else:
            raise ValueError(f"unsupported PLY format {fmt!r}; expected ascii or binary_little_endian")
    if not {"x", "y", "z"} <= set(table):
        raise ValueError("vertex element has no x, y, z properties")
    cols = [table["x"], table["y"], table["z"]]
    colour = [table[c] for c in ("red", "green", "blue") if c in table]
    if len(colour) == 3:
        scale = 255.0 if dict(props)["red"] in ("u1", "i1") else 1.0
        cols += [c / scale for c in colour]
    return np.stack(cols, axis=1).astype(np.float32)


def _with_unit_rgb(arr: np.ndarray) -> np.ndarray:
    if arr.shape[1] == 6 and arr[:, 3:].max(initial=0.0) > 1.0:
        arr = arr.copy()
        arr[:, 3:] /= 255.0
    return arr
