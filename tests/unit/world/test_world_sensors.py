"""The world's optional sensor modalities leave every other file unchanged and are deterministic."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spacebind.io.inputs import load_input
from spacebind.world.concepts import make_concepts, sample_instances
from spacebind.world.generate import generate_world
from spacebind.world.sensors import render_events, render_thermal, render_video

SIZES = {"train": 12, "val": 4, "test": 4}


def test_sensors_leave_the_other_modalities_byte_identical(tmp_path: Path) -> None:
    plain = generate_world(tmp_path / "plain", seed=3, sizes=SIZES, progress=False)
    full = generate_world(tmp_path / "full", seed=3, sizes=SIZES, progress=False, sensors=["event", "video", "thermal"])
    for sub in ("image", "audio", "point"):
        for f in sorted((plain / sub).iterdir()):
            assert f.read_bytes() == (full / sub / f.name).read_bytes(), f.name
    rows = [json.loads(line) for line in (full / "manifest.jsonl").read_text().splitlines()]
    stripped = [{k: v for k, v in r.items() if k not in ("video", "thermal", "event")} for r in rows]
    assert stripped == [json.loads(line) for line in (plain / "manifest.jsonl").read_text().splitlines()]
    assert list(rows[0])[:8] == ["id", "split", "label", "image", "audio", "point", "video", "thermal"]
    assert json.loads((full / "classes.json").read_text())["world"]["sensors"] == ["video", "thermal", "event"]
    with pytest.raises(ValueError, match="unknown sensor modality"):
        generate_world(tmp_path / "bad", sizes=SIZES, sensors=["depth"], progress=False)


def test_sensor_files_load_back_to_the_renders(tmp_path: Path) -> None:
    root = generate_world(tmp_path / "w", seed=3, sizes={"test": 3}, progress=False, sensors=["video", "thermal", "event"])
    inst = sample_instances(make_concepts(), 3, seed=3 * 10 + 2)[0]  # the test split's stream
    row = json.loads((root / "manifest.jsonl").read_text().splitlines()[0])
    video = load_input("video", root / row["video"])
    np.testing.assert_array_equal(video.frames, render_video(inst).frames)  # animated PNG, lossless
    assert video.fps == 8.0 and video.frames.shape == (8, 32, 32, 3)
    np.testing.assert_allclose(load_input("thermal", root / row["thermal"]), render_thermal(inst), atol=1 / 65535)
    events, rendered = load_input("event", root / row["event"]), render_events(inst)
    np.testing.assert_array_equal(events.t, rendered.t)
    np.testing.assert_array_equal(events.p, rendered.p)
    assert (events.height, events.width) == (32, 32)


def test_size_shows_in_video_and_thermal() -> None:
    """Bigger instances cover more pixels (foreground = far from the per-item background).
    Measured mean areas (size < 0.25 vs > 0.75): thermal 0.056 vs 0.251, video 0.078 vs 0.355."""
    insts = sample_instances(make_concepts(), 200, seed=5)
    small = [i for i in insts if i.size < 0.25]
    large = [i for i in insts if i.size > 0.75]

    def thermal_area(i):
        t = render_thermal(i)
        return (np.abs(t - np.median(t)) > 0.08).mean()

    def video_area(i):
        f = render_video(i).frames[0].astype(float)
        return (np.abs(f - np.median(f, axis=(0, 1))).sum(-1) > 60).mean()

    for area in (thermal_area, video_area):
        assert np.mean([area(i) for i in large]) > 2 * np.mean([area(i) for i in small]), area.__name__
