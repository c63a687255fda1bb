"""PLY point clouds (parsed by hand with numpy): every encoding and element order, a named error for every bad file."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from spacebind.errors import InputError
from spacebind.io.inputs import load_input

XYZ = "property float x\nproperty float y\nproperty float z\n"
RGB = "property uchar red\nproperty uchar green\nproperty uchar blue\n"
FACE = "element face 1\nproperty list uchar int vertex_indices\n"


def _ply(path: Path, fmt: str, elements: str, body: bytes) -> Path:
    path.write_bytes(f"ply\nformat {fmt} 1.0\ncomment test\n{elements}end_header\n".encode() + body)
    return path


def test_big_endian_binary_with_colour(tmp_path: Path) -> None:
    body = struct.pack(">fffBBB", 1.5, -2, 3, 255, 0, 51) + struct.pack(">fffBBB", 4, 5, 6, 0, 255, 102)
    got = load_input("point", _ply(tmp_path / "be.ply", "binary_big_endian", f"element vertex 2\n{XYZ}{RGB}", body))
    np.testing.assert_allclose(got, [[1.5, -2, 3, 1, 0, 0.2], [4, 5, 6, 0, 1, 0.4]], rtol=1e-6)


def test_face_element_before_vertex(tmp_path: Path) -> None:
    body = struct.pack("<B3i", 3, 0, 1, 0) + struct.pack("<6f", 0, 1, 2, 3, 4, 5)
    got = load_input("point", _ply(tmp_path / "f.ply", "binary_little_endian", f"{FACE}element vertex 2\n{XYZ}", body))
    np.testing.assert_array_equal(got, [[0, 1, 2], [3, 4, 5]])


def test_ascii_with_float_colour_and_extra_properties(tmp_path: Path) -> None:
    elements = f"element vertex 2\n{XYZ}property float nx\n" + RGB.replace("uchar", "float")
    path = _ply(tmp_path / "a.ply", "ascii", elements + FACE, b"0 1 2 9 0.5 0.25 1\n3 4 5 9 0 0 0\n3 0 1 1\n")
    got = load_input("point", path)
    assert got.dtype == np.float32  # normals are dropped, float colours are kept as they are
    np.testing.assert_array_equal(got, [[0, 1, 2, 0.5, 0.25, 1], [3, 4, 5, 0, 0, 0]])


BAD = {
    "no xyz": ("ascii", "element vertex 1\nproperty float a\n", b"1\n", "vertex element has no x, y, z"),
    "non-finite": ("ascii", f"element vertex 2\n{XYZ}", b"0 1 2\nnan 1 inf\n", "NaN or infinite"),
    "empty vertex": ("ascii", f"element vertex 0\n{XYZ}", b"", "empty point cloud"),
    "no vertex": ("ascii", FACE, b"3 0 1 2\n", "no 'vertex' element"),
    "unknown type": ("ascii", "element vertex 1\nproperty float128 x\n", b"1\n", "bad PLY header: .*float128"),
    "bare format": ("", f"element vertex 1\n{XYZ}", b"0 1 2\n", "bad PLY header: line 2"),
    "unknown format": ("binary_middle_endian", f"element vertex 1\n{XYZ}", b"", "bad PLY header: .*binary_middle"),
    "truncated binary": ("binary_little_endian", f"element vertex 2\n{XYZ}", struct.pack("<5f", *range(5)),
                         "truncated PLY data: .*row 1.*early end-of-file"),
    "truncated ascii": ("ascii", f"element vertex 2\n{XYZ}", b"0 1 2\n3 4\n", "truncated PLY data: .*row 1"),
    "malformed ascii": ("ascii", f"element vertex 1\n{XYZ}", b"0 one 2\n", "bad or truncated PLY data: .*malformed"),
    "list xyz": ("ascii", "element vertex 1\nproperty list uchar float x\nproperty float y\nproperty float z\n",
                 b"1 0 1 2\n", "list properties"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_ply_raises_input_error_naming_the_file(tmp_path: Path, case: str) -> None:
    fmt, elements, body, message = BAD[case]
    path = _ply(tmp_path / "bad.ply", fmt, elements, body)
    if case == "bare format":
        path.write_bytes(path.read_bytes().replace(b"format  1.0", b"format"))
    with pytest.raises(InputError, match=message) as info:
        load_input("point", path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("data", [b"", b"plx\n", b"ply\nformat ascii 1.0\nelement vertex 1\n", b"ply\n\xff\xfe\n"])
def test_not_a_ply_header(tmp_path: Path, data: bytes) -> None:
    (tmp_path / "x.ply").write_bytes(data)
    with pytest.raises(InputError, match=r"x\.ply: not a readable point cloud \(bad PLY header"):
        load_input("point", tmp_path / "x.ply")
