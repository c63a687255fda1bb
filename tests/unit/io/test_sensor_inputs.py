"""Video, thermal and event inputs from real files the tests write, with named errors for bad ones."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from spacebind.errors import InputError
from spacebind.io.events import Events, event_frame, event_histograms
from spacebind.io.inputs import load_input, load_inputs, load_inputs_lenient
from spacebind.io.video import Video, uniform_frames
from spacebind.world.sensors import CONTRAST, events_from_frames

FRAMES = np.random.default_rng(0).integers(0, 256, (6, 9, 11, 3), dtype=np.uint8)


def _apng(path: Path, frames: np.ndarray, ms: int = 125) -> None:
    first, *rest = (Image.fromarray(f) for f in frames)
    first.save(path, format="PNG", save_all=True, append_images=rest, duration=ms, loop=0)


def test_video_files_round_trip(tmp_path: Path) -> None:
    _apng(tmp_path / "v.png", FRAMES)
    np.save(tmp_path / "v.npy", FRAMES)
    np.savez(tmp_path / "v.npz", frames=FRAMES, fps=25.0)
    video = load_input("video", tmp_path / "v.png")
    assert isinstance(video, Video) and video.fps == 8.0 and video.duration == 0.75
    np.testing.assert_array_equal(video.frames, FRAMES)  # APNG is lossless
    assert load_input("video", tmp_path / "v.npy").fps == 10.0  # .npy carries no rate: the default
    npz = load_input("video", tmp_path / "v.npz")
    assert npz.fps == 25.0 and np.array_equal(npz.frames, FRAMES)
    np.testing.assert_array_equal(load_input("video", FRAMES / 255.0).frames, FRAMES)
    assert len(load_inputs("video", FRAMES)) == 1 and len(load_inputs("video", [FRAMES, FRAMES])) == 2
    # pytorchvideo's uniform_temporal_subsample: linspace(0, T − 1, n) truncated
    np.testing.assert_array_equal(uniform_frames(video, 4), FRAMES[[0, 1, 3, 5]])


def test_bad_video_files_get_named_errors(tmp_path: Path) -> None:
    _apng(tmp_path / "v.png", FRAMES)
    data = (tmp_path / "v.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.gif").write_bytes(b"GIF89a" + bytes(range(200)))
    np.savez(tmp_path / "noframes.npz", images=FRAMES)
    np.savez(tmp_path / "ok.npz", frames=FRAMES)
    (tmp_path / "cut.npz").write_bytes((tmp_path / "ok.npz").read_bytes()[:300])
    cases = {"cut.png": "not a readable animated image", "junk.gif": "not a readable animated image",
             "noframes.npz": ".npz has no 'frames' array", "cut.npz": "not a readable video array"}
    for name, message in cases.items():
        with pytest.raises(InputError, match=f"{name}: {message}"):
            load_input("video", tmp_path / name)
    with pytest.raises(InputError, match="NaN"):
        load_input("video", np.full((2, 4, 4, 3), np.nan))
    with pytest.raises(InputError, match=r"expected frames \[T, H, W, 3\]"):
        load_input("video", np.zeros((4, 4)))
    with pytest.raises(InputError, match="unsupported video extension '.txt'"):
        (tmp_path / "v.txt").write_text("x")
        load_input("video", tmp_path / "v.txt")
    lenient = load_inputs_lenient("video", [str(tmp_path / "v.png"), str(tmp_path / "cut.png")])
    assert lenient.indices == [0] and lenient.bad[0][0] == 1


def test_mp4_encoded_here_decodes_with_pyav_and_a_truncated_one_is_named(tmp_path: Path) -> None:
    import av

    frames = np.repeat(np.repeat(FRAMES[:, :8, :8], 4, axis=1), 4, axis=2)  # 32×32, even sizes for yuv420p
    with av.open(str(tmp_path / "v.mp4"), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode())
    video = load_input("video", tmp_path / "v.mp4")
    assert video.frames.shape == frames.shape and video.fps == 10.0
    # lossy MPEG-4 Part 2 on noise blocks: mean error 13.6 of 255 (85 between unrelated noise frames);
    # every decoded frame is nearest its own source frame, in order
    errors = np.abs(video.frames[:, None].astype(np.int16) - frames[None]).mean(axis=(2, 3, 4))
    assert errors.diagonal().max() < 20 and (errors.argmin(axis=1) == np.arange(len(frames))).all()
    (tmp_path / "cut.mp4").write_bytes((tmp_path / "v.mp4").read_bytes()[:40])
    with pytest.raises(InputError, match="cut.mp4"):
        load_input("video", tmp_path / "cut.mp4")


def test_thermal_png_and_tiff_8_and_16_bit(tmp_path: Path) -> None:
    deep = (np.arange(48).reshape(6, 8) * 1365).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "t16.png")
    Image.fromarray(deep).save(tmp_path / "t16.tiff")
    Image.fromarray((deep // 257).astype(np.uint8)).save(tmp_path / "t8.png")
    for name in ("t16.png", "t16.tiff"):
        t = load_input("thermal", tmp_path / name)
        assert t.dtype == np.float32 and t.shape == (6, 8)
        np.testing.assert_allclose(t, deep / 65535.0, atol=1e-7)
    np.testing.assert_allclose(load_input("thermal", tmp_path / "t8.png"), (deep // 257) / 255.0, atol=1e-7)
    data = (tmp_path / "t16.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.png: not a readable thermal image"):
        load_input("thermal", tmp_path / "cut.png")
    Image.fromarray(FRAMES[0]).save(tmp_path / "rgb.png")
    with pytest.raises(InputError, match="rgb.png: thermal image has 3 channels"):
        load_input("thermal", tmp_path / "rgb.png")


EVENTS = np.array([[0, 0, 0.0, 1], [1, 0, 0.1, 0], [1, 0, 0.2, 1], [2, 1, 0.3, 1], [1, 0, 0.4, 1]])


def test_event_files_in_every_layout(tmp_path: Path) -> None:
    x, y, t, p = EVENTS.T
    np.save(tmp_path / "e.npy", EVENTS)
    structured = np.zeros(5, dtype=[("t", "f8"), ("x", "u2"), ("y", "u2"), ("p", "i1")])
    structured["x"], structured["y"], structured["t"], structured["p"] = x, y, t, np.where(p > 0, 1, -1)
    np.save(tmp_path / "s.npy", structured)
    np.savez(tmp_path / "e.npz", x=x, y=y, t=t, p=p, height=4, width=5)
    with h5py.File(tmp_path / "e.h5", "w") as fh:  # the DSEC layout
        for k, v in zip("xytp", (x, y, t, p)):
            fh.create_dataset(f"events/{k}", data=v)
        fh.attrs["height"], fh.attrs["width"] = 4, 5
    for name, size in [("e.npy", (2, 3)), ("s.npy", (2, 3)), ("e.npz", (4, 5)), ("e.h5", (4, 5))]:
        ev = load_input("event", tmp_path / name)
        assert isinstance(ev, Events) and (ev.height, ev.width) == size and len(ev) == 5, name
        np.testing.assert_array_equal(ev.p, [True, False, True, True, True])
        np.testing.assert_array_equal(ev.x, [0, 1, 1, 2, 1])
    shuffled = load_input("event", EVENTS[::-1])
    np.testing.assert_array_equal(shuffled.t, t)  # sorted by time


def test_event_histograms_and_frame_golden() -> None:
    ev = load_input("event", EVENTS)
    hist = event_histograms(ev, 2)  # windows [0, 0.2) and [0.2, 0.4]; t = 0.2 falls in the second
    expected = np.zeros((2, 2, 2, 3), np.float32)
    expected[0, 0, 0, 0] = 1  # positive at (0, 0), t 0
    expected[0, 1, 0, 1] = 1  # negative at (0, 1), t 0.1
    expected[1, 0, 0, 1] = 2  # positive at (0, 1), t 0.2 and 0.4
    expected[1, 0, 1, 2] = 1  # positive at (1, 2), t 0.3
    np.testing.assert_array_equal(hist, expected / 2)  # divided by the largest count
    frame = event_frame(ev)
    assert frame.shape == (2, 3, 3) and frame.dtype == np.uint8
    np.testing.assert_array_equal(frame[0, 1], [255, 0, 128])  # 2 positive (max) → red 255, 1 negative → blue
    assert event_histograms(Events(*(np.zeros(0),) * 3, np.zeros(0, bool), 3, 3), 4).sum() == 0


def test_bad_event_inputs_get_named_errors(tmp_path: Path) -> None:
    np.savez(tmp_path / "ok.npz", x=[0], y=[0], t=[0.0], p=[1])
    (tmp_path / "cut.npz").write_bytes((tmp_path / "ok.npz").read_bytes()[:100])
    (tmp_path / "junk.h5").write_bytes(b"not hdf5" * 20)
    np.savez(tmp_path / "nop.npz", x=[0], y=[0], t=[0.0])
    cases = {"cut.npz": "not a readable event file", "junk.h5": "not a readable event file",
             "nop.npz": "lacks p"}
    for name, message in cases.items():
        with pytest.raises(InputError, match=f"{name}: .*{message}"):
            load_input("event", tmp_path / name)
    bad = {"NaN": [[0, 0, np.nan, 1]], "non-negative integer": [[-1, 0, 0.0, 1]],
           r"\[N, 4\]": np.zeros((3, 3))}
    for message, arr in bad.items():
        with pytest.raises(InputError, match=message):
            load_input("event", np.asarray(arr, dtype=np.float64))
    with pytest.raises(InputError, match="beyond the 2x2 sensor"):
        load_input("event", {"x": [3], "y": [0], "t": [0.0], "p": [1], "height": 2, "width": 2})
    with pytest.raises(InputError, match="different lengths"):
        load_input("event", {"x": [0, 1], "y": [0], "t": [0.0], "p": [1]})


def test_world_events_follow_log_intensity_thresholds() -> None:
    """A pixel going from gray 0.2 to 0.8 fires floor(ln(0.85/0.25) / C) positive events in order."""
    frames = np.full((2, 4, 4, 3), 51, np.uint8)  # 0.2
    frames[1, 2, 3] = 204  # 0.8
    ev = events_from_frames(Video(frames, 10.0), np.random.default_rng(0))
    mine = (ev.x == 3) & (ev.y == 2)
    expected = int(np.floor(np.log(0.85 / 0.25) / CONTRAST))
    assert mine.sum() >= expected and ev.p[mine][:expected].all()
    times = ev.t[mine][:expected]
    np.testing.assert_allclose(times, np.arange(1, expected + 1) * CONTRAST / np.log(0.85 / 0.25) * 0.1, rtol=1e-6)
