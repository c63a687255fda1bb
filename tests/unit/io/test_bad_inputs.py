"""Every bad input is a named InputError (never double-wrapped, never quoting file contents), and
manifest paths stay inside the dataset directory unless the dataset opts in."""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image
from toy_experts import multi_expert

from spacebind.cache.store import embed_dataset
from spacebind.errors import InputError
from spacebind.io.datasets import Dataset
from spacebind.io.importers import import_data
from spacebind.io.inputs import load_input, load_inputs_lenient


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header declares width x height 1-bit pixels, with almost no data: a bomb to open."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def test_decompression_bomb_png_is_refused_with_a_cap_users_can_raise(tmp_path: Path, monkeypatch) -> None:
    bomb = tmp_path / "bomb.png"
    _png_header_only(bomb, 100_000, 100_000)
    with pytest.raises(InputError, match=r"bomb\.png: image larger than .*SPACEBIND_MAX_IMAGE_PIXELS"):
        load_input("image", bomb)
    small = tmp_path / "small.png"
    Image.new("RGB", (40, 30)).save(small)
    monkeypatch.setenv("SPACEBIND_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(InputError, match=r"40x30 = 1,200 pixels, over the cap of 1,000"):
        load_input("image", small)
    with pytest.raises(InputError, match="over the cap"):
        load_input("depth", small)
    monkeypatch.setenv("SPACEBIND_MAX_IMAGE_PIXELS", "1200")
    assert load_input("image", small).shape == (30, 40, 3)
    monkeypatch.setenv("SPACEBIND_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(InputError, match="SPACEBIND_MAX_IMAGE_PIXELS is 'lots'"):
        load_input("image", small)


def test_truncated_wav_is_refused(tmp_path: Path) -> None:
    whole = tmp_path / "whole.wav"
    sf.write(whole, np.zeros(8000, np.float32), 8000, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[:44 + 7978])
    assert load_input("audio", whole).samples.size == 8000
    with pytest.raises(InputError, match=r"cut\.wav: truncated audio: 3989 of the 8000 frames"):
        load_input("audio", cut)


@pytest.mark.parametrize("modality", ["point", "depth", "imu"])
def test_complex_npy_is_refused(tmp_path: Path, modality: str) -> None:
    shape = {"point": (5, 3), "depth": (4, 4), "imu": (7, 6)}[modality]
    path = tmp_path / "c.npy"
    np.save(path, np.ones(shape, np.complex64))
    with pytest.raises(InputError, match=r"c\.npy: complex values \(complex64\); expected real numbers"):
        load_input(modality, path)
    with pytest.raises(InputError, match="complex values"):
        load_input("image", np.ones((4, 4, 3), np.complex128))


def test_errors_are_not_double_wrapped_and_never_quote_file_contents(tmp_path: Path) -> None:
    nan = tmp_path / "x.ply"
    nan.write_text("ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\n"
                   "property float z\nend_header\nnan 0 0\n")
    with pytest.raises(InputError) as exc:
        load_input("point", nan)
    assert str(exc.value) == f"{nan}: contains NaN or infinite values"
    secret = "x:0:0:hunter2"
    for suffix, modality in [(".xyz", "point"), (".npy", "point"), (".csv", "imu"), (".npy", "depth")]:
        path = tmp_path / f"secret{suffix}"
        path.write_text(secret + "\n")
        with pytest.raises(InputError) as exc:
            load_input(modality, path)
        assert "hunter2" not in str(exc.value), str(exc.value)
    ply = tmp_path / "s.ply"
    ply.write_text("ply\nformat ascii 1.0\nhunter2 secret\nend_header\n")
    with pytest.raises(InputError) as exc:
        load_input("point", ply)
    assert "hunter2" not in str(exc.value)


def _dataset(root: Path, lines: list[dict], classes: dict | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.jsonl").write_text("".join(json.dumps(rec) + "\n" for rec in lines))
    if classes is not None:
        (root / "classes.json").write_text(json.dumps(classes))
    return root


def test_blank_text_is_recorded_and_skipped_by_embed(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "d", [{"id": "a", "text": "a red kettle"}, {"id": "b", "text": "  "},
                                     {"id": "c", "text": ""}, {"id": "d", "text": "a blue cup"}])
    toy = multi_expert("toy", 8, ("text",), 0)
    cache = embed_dataset(toy, Dataset.load(data), tmp_path / "cache", shard_size=3, progress=False)
    assert cache.ids("text") == ["a", "d"]
    assert {b["id"]: b["reason"] for b in cache.bad("text")} == {
        "b": "text[1]: empty text; expected a non-empty string", "c": "text[2]: empty text; expected a non-empty string"}


@pytest.mark.parametrize("rec, match", [
    ({"id": "a", "text": "x", "attributes": "abc"}, r"manifest\.jsonl:1: field 'attributes' is str; expected an object"),
    ({"id": "a", "text": "x", "attributes": [1]}, r"manifest\.jsonl:1: field 'attributes' is list"),
    ({"id": ["a"], "text": "x"}, r"manifest\.jsonl:1: field 'id' is \['a'\]"),
    ({"id": "a", "text": 3}, r"manifest\.jsonl:1: field 'text' is int; expected a string"),
    ({"id": "a", "image": ""}, r"manifest\.jsonl:1: field 'image' must be a file path"),
])
def test_bad_manifest_fields_name_the_line(tmp_path: Path, rec: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        Dataset.load(_dataset(tmp_path / "d", [rec]))


def test_paths_are_confined_to_the_dataset_unless_it_opts_in(tmp_path: Path) -> None:
    secret = tmp_path / "secret.xyz"
    secret.write_text("root:x:0:0 hunter2\n")
    inside = tmp_path / "d" / "p.xyz"
    inside.parent.mkdir()
    inside.write_text("0 0 0\n1 1 1\n")
    (tmp_path / "d" / "link.xyz").symlink_to(secret)
    for path in ["../secret.xyz", str(secret), "link.xyz", "sub/../../secret.xyz"]:
        with pytest.raises(InputError, match=r"manifest\.jsonl:2: field 'point' path .* leaves the dataset directory"
                                             r".*\"allow_outside_root\": true in classes\.json"):
            Dataset.load(_dataset(tmp_path / "d", [{"id": "a", "point": "p.xyz"}, {"id": "b", "point": path}]))
    data = Dataset.load(_dataset(tmp_path / "d", [{"id": "a", "point": "p.xyz"}, {"id": "b", "point": "../secret.xyz"}],
                                 {"allow_outside_root": True}))
    assert list(data.iter_items())[1].fields["point"] == str(secret.resolve())
    result = load_inputs_lenient("point", [it.fields["point"] for it in list(data.iter_items())])
    assert result.indices == [0] and "hunter2" not in result.bad[0][1]
    with pytest.raises(InputError, match="'allow_outside_root' is 'yes'; expected true or false"):
        Dataset.load(_dataset(tmp_path / "d", [{"id": "a", "point": "p.xyz"}], {"allow_outside_root": "yes"}))


def test_importer_opts_in_only_when_media_leave_the_dataset(tmp_path: Path) -> None:
    src = tmp_path / "src" / "kettle"
    src.mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(src / "a.png")
    import_data("folder", tmp_path / "src", tmp_path / "out")
    assert json.loads((tmp_path / "out" / "classes.json").read_text())["allow_outside_root"] is True
    assert list(Dataset.load(tmp_path / "out").iter_items())[0].fields["image"] == str((src / "a.png").resolve())
    import_data("folder", tmp_path / "src", tmp_path / "copied", copy=True)
    assert "allow_outside_root" not in json.loads((tmp_path / "copied" / "classes.json").read_text())
    assert len(list(Dataset.load(tmp_path / "copied").iter_items())) == 1
