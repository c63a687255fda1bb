"""Input loading: every format, and a named error for every kind of bad input."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from spacebind.errors import InputError
from spacebind.io.inputs import (
    Audio,
    load_input,
    load_inputs,
    load_inputs_lenient,
    resample,
)


def test_images_from_files_and_arrays(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb).convert("L").save(tmp_path / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full((5, 7), 255, np.uint8)])).save(tmp_path / "rgba.png")
    sixteen = (np.arange(35).reshape(5, 7) * 1000).astype(np.uint16)
    Image.fromarray(sixteen).save(tmp_path / "deep.png")
    np.testing.assert_array_equal(load_input("image", tmp_path / "a.png"), rgb)
    np.testing.assert_array_equal(load_input("image", str(tmp_path / "rgba.png")), rgb)
    gray = load_input("image", tmp_path / "gray.png")
    assert gray.shape == (5, 7, 3) and (gray[..., 0] == gray[..., 2]).all()
    # 16-bit pictures scale by their bit depth, not by their own brightest pixel
    want = np.repeat(np.rint(sixteen / 65535 * 255).astype(np.uint8)[..., None], 3, axis=-1)
    for deep in (load_input("image", tmp_path / "deep.png"), load_input("image", sixteen)):
        np.testing.assert_array_equal(deep, want)
    np.testing.assert_array_equal(load_input("image", torch.from_numpy(rgb).permute(2, 0, 1)), rgb)
    np.testing.assert_array_equal(load_input("image", rgb / 255.0), rgb)
    assert len(load_inputs("image", rgb)) == 1 and len(load_inputs("image", np.stack([rgb, rgb]))) == 2


def test_audio_loading_and_resampling(tmp_path: Path) -> None:
    t = np.arange(48000) / 48000
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], axis=1).astype(np.float32) * 0.5
    sf.write(tmp_path / "a.wav", stereo, 48000)
    sf.write(tmp_path / "a.flac", stereo, 48000)
    for name in ["a.wav", "a.flac"]:
        clip = load_input("audio", tmp_path / name)
        assert clip.sample_rate == 48000 and clip.samples.shape == (48000,)
        np.testing.assert_allclose(clip.samples, stereo[:, 0], atol=1e-4)
    down = resample(load_input("audio", tmp_path / "a.wav"), 16000)
    assert down.sample_rate == 16000 and down.samples.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(down.samples))
    assert abs(np.argmax(spectrum) - 440) <= 1  # 1 Hz bins: the tone survives resampling
    same = Audio(np.zeros(10, np.float32), 16000)
    assert resample(same, 16000) is same
    assert load_input("audio", (np.zeros(5), 8000)).sample_rate == 8000


def test_audio_arrays_integer_pcm_and_channel_axis() -> None:
    wave = (0.5 * np.sin(2 * np.pi * 440 * np.arange(1600) / 16000)).astype(np.float32)
    pcm16 = np.rint(wave * 32768).astype(np.int16)
    for clip in (load_input("audio", (pcm16, 16000)), load_input("audio", Audio(pcm16, 16000))):
        np.testing.assert_allclose(clip.samples, wave, atol=1 / 32768)  # scaled as soundfile reads int16
    unsigned = load_input("audio", (np.array([0, 128, 255], np.uint8), 8000)).samples
    np.testing.assert_allclose(unsigned, [-1.0, 0.0, 127 / 128])
    twelve = np.stack([wave * (k + 1) / 12 for k in range(12)], axis=1)  # [T, 12]: frames first
    for array in (twelve, twelve.T, np.rint(twelve * 32768).astype(np.int16)):
        clip = load_input("audio", (array, 16000))
        assert clip.samples.shape == (1600,) and clip.channels.shape == (12, 1600)
        np.testing.assert_allclose(clip.channels[11], wave, atol=1 / 32768)


def _binary_ply(path: Path, pts: np.ndarray, rgb: np.ndarray) -> None:
    header = (f"ply\nformat binary_little_endian 1.0\nelement vertex {len(pts)}\nproperty float x\nproperty float y\n"
              "property float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
    body = b"".join(struct.pack("<fffBBB", *p, *c) for p, c in zip(pts, rgb))
    path.write_bytes(header.encode() + body)


def test_point_clouds_npy_ply_xyz(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    pts = rng.standard_normal((10, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (10, 3), dtype=np.uint8)
    np.save(tmp_path / "p.npy", pts)
    _binary_ply(tmp_path / "p.ply", pts, rgb)
    (tmp_path / "a.ply").write_text("ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\n"
                                    "property float z\nend_header\n0 1 2\n3 4 5\n")
    np.savetxt(tmp_path / "p.xyz", np.hstack([pts, rgb.astype(np.float32)]))
    np.testing.assert_array_equal(load_input("point", tmp_path / "p.npy"), pts)
    ply = load_input("point", tmp_path / "p.ply")
    np.testing.assert_allclose(ply, np.hstack([pts, rgb / 255.0]), atol=1e-6)
    np.testing.assert_array_equal(load_input("point", tmp_path / "a.ply"), [[0, 1, 2], [3, 4, 5]])
    np.testing.assert_allclose(load_input("point", tmp_path / "p.xyz"), np.hstack([pts, rgb / 255.0]), atol=1e-5)
    # colours stored as 0–255 come out in [0, 1] from every source, .npy files and arrays included
    np.save(tmp_path / "rgb.npy", np.hstack([pts, rgb.astype(np.float32)]))
    for source in (tmp_path / "rgb.npy", np.hstack([pts, rgb.astype(np.float32)])):
        np.testing.assert_allclose(load_input("point", source), np.hstack([pts, rgb / 255.0]), atol=1e-6)


def _bad_files(tmp_path: Path) -> dict[str, tuple[str, Path, str]]:
    (tmp_path / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    good = tmp_path / "ok.wav"
    sf.write(good, np.zeros(1000, np.float32), 16000)
    (tmp_path / "truncated.wav").write_bytes(good.read_bytes()[:30])
    np.save(tmp_path / "four.npy", np.zeros((5, 4), np.float32))
    np.save(tmp_path / "nan.npy", np.full((5, 3), np.nan, np.float32))
    np.save(tmp_path / "empty.npy", np.zeros((0, 3), np.float32))
    (tmp_path / "cloud.obj").write_text("v 0 0 0\n")
    _binary_ply(tmp_path / "short.ply", np.zeros((3, 3), np.float32), np.zeros((3, 3), np.uint8))
    (tmp_path / "short.ply").write_bytes((tmp_path / "short.ply").read_bytes()[:-5])
    return {
        "corrupt png": ("image", tmp_path / "garbage.png", "not a readable image"),
        "truncated wav": ("audio", tmp_path / "truncated.wav", "not a readable audio file"),
        "points [N,4]": ("point", tmp_path / "four.npy", r"shape \(5, 4\); expected \[N, 3\]"),
        "NaN points": ("point", tmp_path / "nan.npy", "NaN"),
        "empty cloud": ("point", tmp_path / "empty.npy", "empty point cloud"),
        "unknown extension": ("point", tmp_path / "cloud.obj", "unsupported point cloud extension '.obj'"),
        "truncated ply": ("point", tmp_path / "short.ply", "truncated"),
        "missing file": ("image", tmp_path / "nope.png", "no such file"),
    }


@pytest.mark.parametrize("case", ["corrupt png", "truncated wav", "points [N,4]", "NaN points", "empty cloud",
                                  "unknown extension", "truncated ply", "missing file"])
def test_bad_files_raise_named_errors(tmp_path: Path, case: str) -> None:
    modality, path, message = _bad_files(tmp_path)[case]
    with pytest.raises(InputError, match=message) as info:
        load_input(modality, path)
    assert str(path) in str(info.value)


def test_depth_thermal_and_imu(tmp_path: Path) -> None:
    raw = (np.arange(48 * 64).reshape(48, 64) * 20).astype(np.uint16)
    Image.fromarray(raw).save(tmp_path / "d16.png")
    Image.fromarray((raw % 256).astype(np.uint8)).save(tmp_path / "t8.png")
    depth = load_input("depth", tmp_path / "d16.png")
    assert depth.shape == (48, 64) and depth.dtype == np.float32
    np.testing.assert_array_equal(depth, raw.astype(np.float32))  # depth values are kept as stored
    np.testing.assert_allclose(load_input("thermal", tmp_path / "t8.png"), (raw % 256) / 255.0, rtol=1e-6)
    np.testing.assert_allclose(load_input("thermal", tmp_path / "d16.png"), raw / 65535.0, rtol=1e-6)
    np.save(tmp_path / "d.npy", raw[None].astype(np.float32))  # [1, H, W]
    assert load_input("depth", tmp_path / "d.npy").shape == (48, 64)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(InputError, match="rgb.png: depth image has 3 channels"):
        load_input("depth", tmp_path / "rgb.png")

    series = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    np.savetxt(tmp_path / "imu.csv", series, delimiter=",")
    np.save(tmp_path / "imu.npy", series.T)  # [6, T] is transposed
    np.testing.assert_allclose(load_input("imu", tmp_path / "imu.csv"), series, rtol=1e-6)
    np.testing.assert_array_equal(load_input("imu", tmp_path / "imu.npy"), series)
    assert len(load_inputs("imu", np.zeros((3, 20, 6)))) == 3 and len(load_inputs("depth", raw)) == 1
    with pytest.raises(InputError, match=r"imu\[0\]: IMU series of shape \(20, 5\)"):
        load_inputs("imu", [np.zeros((20, 5))])


@pytest.mark.parametrize("modality, value, message", [
    ("text", "   ", r"text\[0\]: empty text"),
    ("text", 3, "expected a string"),
    ("image", np.zeros((4, 4, 2)), r"image\[0\]: image of shape \(4, 4, 2\)"),
    ("image", np.full((4, 4, 3), np.nan), "NaN"),
    ("audio", np.zeros(100), "no sample rate"),
    ("smell", "x", "unknown modality 'smell'"),
])
def test_bad_in_memory_inputs(modality: str, value: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        load_inputs(modality, [value])


def test_lenient_loading_keeps_going(tmp_path: Path) -> None:
    bad = _bad_files(tmp_path)
    np.save(tmp_path / "ok.npy", np.zeros((4, 3), np.float32))
    result = load_inputs_lenient("point", [tmp_path / "ok.npy", bad["NaN points"][1], tmp_path / "ok.npy"])
    assert result.indices == [0, 2] and len(result.loaded) == 2
    assert result.bad[0][0] == 1 and "NaN" in result.bad[0][1]
