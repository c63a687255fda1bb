"""Container videos decode only the frames indexed (seeking by timestamp), and those frames equal a
full decode's, on clips with B-frames and keyframe intervals > 1, in every container we read."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spacebind.io.inputs import load_input
from spacebind.io.video import ContainerFrames, uniform_frames

av = pytest.importorskip("av")


def _write(path: Path, codec: str, options: dict[str, str], count: int = 60) -> None:
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = options
        for i in range(count):  # every frame distinct: a moving bar, a ramp, noise
            frame = np.zeros((48, 64, 3), np.uint8)
            frame[..., 0], frame[:, (3 * i) % 64] = 4 * i, 255
            frame[..., 1] = rng.integers(0, 50, (48, 64))
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())


def _full_decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.mark.parametrize("file, codec, options", [
    ("bframes.mp4", "libx264", {"bf": "3", "g": "12", "keyint_min": "12", "sc_threshold": "0"}),
    ("gop10.mp4", "mpeg4", {"g": "10", "bf": "2"}),
    ("bframes.mkv", "libx264", {"bf": "2", "g": "7"}),
    ("gop9.webm", "libvpx", {"g": "9"}),
    ("bframes.avi", "mpeg4", {"g": "5", "bf": "2"}),  # no presentation timestamps: decoded in order
])
def test_sampled_frames_equal_a_full_decode(tmp_path: Path, file: str, codec: str, options: dict[str, str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    if codec not in av.codecs_available:
        pytest.skip(f"PyAV built without {codec}")
    _write(tmp_path / file, codec, options)
    full = _full_decode(tmp_path / file)
    video = load_input("video", tmp_path / file)
    assert isinstance(video.frames, ContainerFrames) and video.frames.shape == full.shape == (60, 48, 64, 3)
    assert video.fps == 25.0 and video.duration == 2.4 and len(np.unique(full.reshape(60, -1), axis=0)) == 60
    decoded: list[int] = []
    original = ContainerFrames._decode
    monkeypatch.setattr(ContainerFrames, "_decode", lambda self, wanted: decoded.append(len(wanted)) or original(self, wanted))
    for count in (2, 10, 17):
        idx = np.linspace(0, 59, count).astype(np.int64)
        np.testing.assert_array_equal(uniform_frames(video, count), full[idx])
    assert decoded == [2, 10, 17]  # only the sampled frames were asked for
    np.testing.assert_array_equal(video.frames[7], full[7])
    np.testing.assert_array_equal(video.frames[10:50][[0, 39]], full[[10, 49]])  # a slice is a lazy view
    np.testing.assert_array_equal(np.asarray(video.frames), full)
    with pytest.raises(IndexError):
        video.frames[60]
