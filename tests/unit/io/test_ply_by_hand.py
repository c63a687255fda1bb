"""The hand-written PLY reader: every scalar type and alias, skipped elements, bounded header, no plyfile."""
from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from spacebind.errors import InputError
from spacebind.io.inputs import load_input
from spacebind.io.pointfiles import read_ply

TYPES = {"char": "b", "int8": "b", "uchar": "B", "uint8": "B", "short": "h", "int16": "h", "ushort": "H",
         "uint16": "H", "int": "i", "int32": "i", "uint": "I", "uint32": "I", "float": "f", "float32": "f",
         "double": "d", "float64": "d"}


def _ply(path: Path, fmt: str, elements: str, body: bytes, newline: str = "\n") -> Path:
    header = f"ply\nformat {fmt} 1.0\n{elements}end_header\n".replace("\n", newline)
    path.write_bytes(header.encode() + body)
    return path


@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian", "binary_big_endian"])
@pytest.mark.parametrize("ply_type", list(TYPES))
def test_every_scalar_type(tmp_path: Path, fmt: str, ply_type: str) -> None:
    elements = f"element vertex 2\nproperty {ply_type} x\nproperty {ply_type} y\nproperty double z\n"
    values = [(1, 2, -0.5), (3, 100, 7.25)]
    if fmt == "ascii":
        body = b"".join(b"%d %d %r\n" % row for row in values)
    else:
        fmt_code = ("<" if fmt == "binary_little_endian" else ">") + TYPES[ply_type] * 2 + "d"
        body = b"".join(struct.pack(fmt_code, *row) for row in values)
    np.testing.assert_array_equal(read_ply(_ply(tmp_path / "t.ply", fmt, elements, body)), values)


def test_skipped_elements_before_and_after_vertex(tmp_path: Path) -> None:
    elements = ("element edge 2\nproperty int a\nproperty double b\n"
                "element face 2\nproperty float s\nproperty list ushort short idx\nproperty uchar t\n"
                "element vertex 1\nproperty float x\nproperty float y\nproperty float z\n"
                "element material 1\nproperty list uchar uchar name\n")
    body = (struct.pack(">id", 1, 2.0) * 2 + struct.pack(">fH3hB", 0, 3, 1, 2, 3, 9) + struct.pack(">fHB", 0, 0, 9)
            + struct.pack(">3f", 7, 8, 9) + struct.pack(">B2B", 2, 65, 66))
    np.testing.assert_array_equal(read_ply(_ply(tmp_path / "s.ply", "binary_big_endian", elements, body)), [[7, 8, 9]])


def test_ascii_list_element_before_vertex_and_crlf_header(tmp_path: Path) -> None:
    elements = "element face 2\nproperty list uchar int idx\nelement vertex 1\nproperty float x\nproperty float y\n" \
               "property float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\n"
    path = _ply(tmp_path / "c.ply", "ascii", elements, b"3 0 1 2\r\n4 0 1 2 3\r\n1 2 3 255 0 51\r\n", newline="\r\n")
    np.testing.assert_allclose(read_ply(path), [[1, 2, 3, 1, 0, 0.2]], rtol=1e-6)


BAD = {
    "truncated list element": ("binary_little_endian", "element face 2\nproperty list uchar int idx\n"
                               "element vertex 1\nproperty float x\nproperty float y\nproperty float z\n",
                               struct.pack("<B3i", 3, 0, 1, 2) + struct.pack("<Bi", 3, 0), r"'face' row 1: early end"),
    "truncated fixed element": ("binary_little_endian", "element edge 3\nproperty int a\n"
                                "element vertex 1\nproperty float x\nproperty float y\nproperty float z\n",
                                struct.pack("<2i", 0, 1), r"'edge' row 2: early end"),
    "negative list length": ("binary_little_endian", "element face 1\nproperty list char int idx\n"
                             "element vertex 1\nproperty float x\nproperty float y\nproperty float z\n",
                             struct.pack("<b", -1), "negative list length"),
    "unknown list type": ("ascii", "element face 1\nproperty list uchar int24 idx\n", b"", r"line 4: .*'int24'"),
    "property before element": ("ascii", "property float x\n", b"", r"bad PLY header: line 3"),
    "no format": ("", "", b"", r"bad PLY header: no 'format' line"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_more_bad_files(tmp_path: Path, case: str) -> None:
    fmt, elements, body, message = BAD[case]
    path = _ply(tmp_path / "bad.ply", fmt, elements, body)
    if case == "no format":
        path.write_bytes(b"ply\nelement vertex 0\nend_header\n")
    with pytest.raises(InputError, match=message) as info:
        load_input("point", path)
    assert str(path) in str(info.value)


def test_header_is_bounded(tmp_path: Path) -> None:
    comments = "comment padding padding padding\n" * 4000  # about 130 KiB
    path = _ply(tmp_path / "long.ply", "ascii", comments + "element vertex 1\nproperty float x\n", b"1\n")
    with pytest.raises(InputError, match=r"bad PLY header: no 'end_header' in the first 65536 bytes"):
        load_input("point", path)


def test_plyfile_is_not_used(tmp_path: Path) -> None:
    path = _ply(tmp_path / "p.ply", "ascii", "element vertex 1\nproperty float x\nproperty float y\nproperty float z\n",
                b"0 0 0\n")
    read_ply(path)
    assert "plyfile" not in sys.modules  # GPL-3.0-or-later; spacebind is Apache-2.0 (docs/decisions.md)
