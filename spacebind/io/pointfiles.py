"""Readers for point-cloud text and PLY files (xyz, optional rgb)."""
from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_BYTE_ORDER = {"ascii": "<", "binary_little_endian": "<", "binary_big_endian": ">"}  # format → byte order (unused for ascii)
_MAX_HEADER = 64 * 1024  # bytes; a longer header is not a point cloud
_BAD_HEADER = "bad PLY header"
_BAD_DATA = "bad or truncated PLY data"


class _Property(NamedTuple):
    name: str
    code: str  # numpy type code of the value (of each item, for a list)
    count: str | None  # numpy type code of a list's length; None for a scalar


class _Element(NamedTuple):
    name: str
    count: int
    props: list[_Property]


def read_xyz(path: Path) -> np.ndarray:
    """Whitespace-separated rows of 3 (xyz) or 6 (xyz rgb) numbers."""
    return np.loadtxt(path, dtype=np.float32, ndmin=2)


def read_ply(path: Path) -> np.ndarray:
    """The vertex element of an ASCII or binary (either byte order) PLY → [N, 3] or [N, 6]."""
    with open(path, "rb") as fh:
        fmt, elements = _read_header(fh)
        index = next((i for i, e in enumerate(elements) if e.name == "vertex"), None)
        if index is None:
            raise ValueError("no 'vertex' element")
        vertex, before = elements[index], elements[:index]
        lists = [p.name for p in vertex.props if p.count]
        if lists:
            raise ValueError(f"list properties in the vertex element are not supported ({', '.join(lists)})")
        codes = {p.name: p.code for p in vertex.props}
        if not {"x", "y", "z"} <= codes.keys():
            raise ValueError("vertex element has no x, y, z properties")
        if fmt == "ascii":
            table = _read_ascii(fh, before, vertex)
        else:
            table = _read_binary(fh.read(), _BYTE_ORDER[fmt], before, vertex)
    names = ["x", "y", "z"] + (["red", "green", "blue"] if {"red", "green", "blue"} <= codes.keys() else [])
    cols = [table[n].astype(np.float64) for n in names]
    if len(cols) == 6 and codes["red"] in ("u1", "i1"):
        cols[3:] = [c / 255.0 for c in cols[3:]]
    return np.stack(cols, axis=1).astype(np.float32)


def _read_header(fh: BinaryIO) -> tuple[str, list[_Element]]:
    """Parse the header through 'end_header' → (format, elements in file order)."""
    fmt, elements, size, lineno = None, [], 0, 0
    while True:
        line = fh.readline(_MAX_HEADER + 1 - size)
        size, lineno = size + len(line), lineno + 1
        where = f"{_BAD_HEADER}: line {lineno}"
        if lineno == 1 and line.rstrip(b"\r\n") != b"ply":
            raise ValueError(f"{where}: no 'ply' magic line")
        if size > _MAX_HEADER:
            raise ValueError(f"{_BAD_HEADER}: no 'end_header' in the first {_MAX_HEADER} bytes")
        if not line:
            raise ValueError(f"{_BAD_HEADER}: ends without 'end_header'")
        try:
            words = line.decode("ascii").split()
        except UnicodeDecodeError:
            raise ValueError(f"{where} is not ASCII") from None
        keyword, args = (words[0], words[1:]) if words else ("", [])
        if lineno == 1 or keyword in ("", "comment", "obj_info"):
            continue
        if keyword == "end_header" and not args:
            if fmt is None:
                raise ValueError(f"{_BAD_HEADER}: no 'format' line")
            return fmt, elements
        if keyword == "format" and len(args) == 2:
            if args[0] not in _BYTE_ORDER:
                raise ValueError(f"{where}: unknown format {args[0]!r}; expected {', '.join(_BYTE_ORDER)}")
            fmt = args[0]
        elif keyword == "element" and len(args) == 2 and args[1].isdigit():
            elements.append(_Element(args[0], int(args[1]), []))
        elif keyword == "property" and elements and len(args) == (4 if args[:1] == ["list"] else 2):
            types = args[1:3] if len(args) == 4 else args[:1]  # [length type, item type] or [type]
            unknown = [t for t in types if t not in _PLY_TYPES]
            if unknown:
                raise ValueError(f"{where}: unknown property type {unknown[0]!r}")
            props = elements[-1].props
            if args[-1] in {p.name for p in props}:
                raise ValueError(f"{where}: duplicate property {args[-1]!r}")
            props.append(_Property(args[-1], _PLY_TYPES[types[-1]], _PLY_TYPES[types[0]] if len(types) == 2 else None))
        else:
            raise ValueError(f"{where}: not a 'format', 'element', 'property' or 'comment' line")


def _read_ascii(fh: BinaryIO, before: list[_Element], vertex: _Element) -> dict[str, np.ndarray]:
    """Skip the elements before `vertex` (one line a row), then read its rows."""
    for element in before:
        for row in range(element.count):
            if not fh.readline():
                raise _early_end(element, row)
    rows = []
    for row in range(vertex.count):
        line = fh.readline()
        words = line.split()
        where = f"{_BAD_DATA}: element 'vertex' row {row}"
        if len(words) != len(vertex.props):
            raise ValueError(f"{where}: expected {len(vertex.props)} values, read {len(words)}")
        try:
            rows.append([float(w) for w in words])
        except ValueError:
            raise ValueError(f"{where}: malformed number") from None
    data = np.array(rows, dtype=np.float64).reshape(vertex.count, len(vertex.props))
    return {p.name: data[:, i] for i, p in enumerate(vertex.props)}


def _read_binary(buf: bytes, order: str, before: list[_Element], vertex: _Element) -> dict[str, np.ndarray]:
    """Skip the elements before `vertex` (by byte count, or row by row through list lengths), then read it."""
    pos = 0
    for element in before:
        if any(p.count for p in element.props):
            pos = _skip_list_rows(buf, pos, order, element)
        else:
            pos += _records(buf, pos, order, element).nbytes
    rec = _records(buf, pos, order, vertex)
    return {p.name: rec[p.name] for p in vertex.props}


def _records(buf: bytes, pos: int, order: str, element: _Element) -> np.ndarray:
    """A fixed-size element's rows from offset `pos`, as a structured array (a view, no copy)."""
    dtype = np.dtype([(p.name, order + p.code) for p in element.props])
    if pos + dtype.itemsize * element.count > len(buf):
        raise _early_end(element, (len(buf) - pos) // dtype.itemsize)
    return np.frombuffer(buf, dtype=dtype, count=element.count, offset=pos)


def _skip_list_rows(buf: bytes, pos: int, order: str, element: _Element) -> int:
    """The offset just past the rows of `element` (which has list properties) that start at `pos`."""
    for row in range(element.count):
        for p in element.props:
            n = 1
            if p.count:
                length = np.dtype(order + p.count)
                if pos + length.itemsize > len(buf):
                    raise _early_end(element, row)
                n = int(np.frombuffer(buf, length, 1, pos)[0])
                if n < 0:
                    raise ValueError(f"{_BAD_DATA}: element {element.name!r} row {row}: negative list length {n}")
                pos += length.itemsize
            pos += n * np.dtype(p.code).itemsize
        if pos > len(buf):
            raise _early_end(element, row)
    return pos


def _early_end(element: _Element, row: int) -> ValueError:
    return ValueError(f"{_BAD_DATA}: element {element.name!r} row {row}: early end-of-file")


def unit_rgb(arr: np.ndarray) -> np.ndarray:
    """[N, 6] points with colours in [0, 1]: colours stored as 0–255 (any of them above 1) scaled."""
    if arr.shape[1] == 6 and arr[:, 3:].max(initial=0.0) > 1.0:
        arr = arr.copy()
        arr[:, 3:] /= 255.0
    return arr
