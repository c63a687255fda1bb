"""Peak memory of reading a long container video: a full decode (every frame, as `read_video` did)
against the seeking reader (only the sampled frames), each measured in its own subprocess.

    python -m benchmarks.video_memory [--seconds 20] [--width 640] [--height 480] [--frames 10]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

MEASURE = """
import resource, sys
import numpy as np
from pathlib import Path
path, mode, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
import av
from spacebind.io.video import read_video, uniform_frames
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if mode == "full":
    with av.open(str(path)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    picked = frames[np.linspace(0, len(frames) - 1, count).astype(np.int64)]
else:
    picked = uniform_frames(read_video(path, path.name), count)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(before, after, picked.shape[0])
"""


def write_clip(path: Path, seconds: float, width: int, height: int, fps: int = 30) -> None:
    """A synthetic H.264 clip (B-frames, keyframe every 2 s): a gradient with a moving square."""
    import av

    ys, xs = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"g": str(2 * fps), "bf": "2", "preset": "ultrafast"}
        for i in range(int(seconds * fps)):
            frame = np.stack([(xs + i) % 256, (ys + 2 * i) % 256, np.full_like(xs, i % 256)], -1).astype(np.uint8)
            frame[(ys // 40 == (i // 5) % (height // 40)) & (xs // 40 == i % (width // 40))] = 255
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())


def peak_rss_mib(path: Path, mode: str, frames: int) -> tuple[float, float]:
    """(peak RSS after the read, its growth over the interpreter with imports) in MiB; ru_maxrss is KiB on Linux."""
    out = subprocess.run([sys.executable, "-c", MEASURE, str(path), mode, str(frames)], check=True,
                         capture_output=True, text=True).stdout.split()
    before, after = int(out[0]), int(out[1])
    return after / 1024, (after - before) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--frames", type=int, default=10, help="frames sampled (uniform_frames)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.mp4"
        write_clip(path, args.seconds, args.width, args.height)
        print(f"{args.seconds:g} s {args.width}x{args.height} H.264 at 30 fps, {args.frames} frames sampled")
        for mode, label in (("full", "full decode"), ("seek", "seek")):
            peak, growth = peak_rss_mib(path, mode, args.frames)
            print(f"  {label:12s} peak RSS {peak:8.1f} MiB  (+{growth:7.1f} MiB for the read)")


if __name__ == "__main__":
    main()
