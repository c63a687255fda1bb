"""ImageBind's video path: the official clip sampling, frame choice, scaling, crops and clip averaging."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tiny_checkpoints import IMAGEBIND_TINY as TINY
from tiny_checkpoints import imagebind_checkpoint

from spacebind.experts.imagebind import _uniform_crop, clip_bounds, clip_times, video_clips
from spacebind.experts.registry import EXPERTS
from spacebind.io.video import Video


def test_clip_times_are_the_constant_clips_sampler() -> None:
    # 10 s video, 5 clips of 2 s: starts k · (10 − 2) / 4; a short video repeats [0, 2] five times
    assert clip_times(10.0, 2, 5) == [(Fraction(2 * k), Fraction(2 * k + 2)) for k in range(5)]
    assert clip_times(1.5, 2, 5) == [(Fraction(0), Fraction(2))] * 5
    assert clip_bounds(16000 * 4) == [(0, 32000), (16000, 48000), (32000, 64000)]  # the audio clips, unchanged


def test_video_clips_pick_the_official_frames_and_crops() -> None:
    # 30 frames at 10 fps (3 s): clip k spans [0.25k, 0.25k + 2) s → frames ceil(2.5k) .. ceil(2.5k + 20) − 1;
    # two evenly spaced frames per clip are its first and last: (0, 19), (3, 22), (5, 24), (8, 27), (10, 29)
    frames = np.repeat(np.arange(30, dtype=np.uint8)[:, None, None, None] * 8, 3, axis=3)
    frames = np.broadcast_to(frames, (30, 180, 320, 3)).copy()
    clips = video_clips(Video(frames, 10.0))
    assert clips.shape == (15, 3, 2, 224, 224)
    mean, std = 0.48145466, 0.26862954  # red channel
    picked = (clips[::3, 0, :, 0, 0] * std + mean) * 255 / 8
    torch.testing.assert_close(picked, torch.tensor([[0, 19], [3, 22], [5, 24], [8, 27], [10, 29]]).float(),
                               atol=1e-3, rtol=0)
    # 180×320 → 224×398 (short side 224, floor); crops at x = 0, ceil(174 / 2) = 87, 174
    grid = torch.arange(398.0).expand(1, 1, 224, 398)
    assert [int(_uniform_crop(grid, 224, i)[0, 0, 0, 0]) for i in range(3)] == [0, 87, 174]
    tall = torch.arange(300.0)[:, None].expand(1, 1, 300, 224)
    assert [int(_uniform_crop(tall, 224, i)[0, 0, 0, 0]) for i in range(3)] == [0, 38, 76]


def test_video_embedding_averages_its_fifteen_unit_clip_embeddings(tmp_path: Path) -> None:
    path, model = imagebind_checkpoint(tmp_path)
    expert = EXPERTS.create("imagebind_huge", checkpoint=str(path), config=TINY.to_json())
    video = Video(np.random.default_rng(0).integers(0, 256, (24, 120, 160, 3), dtype=np.uint8), 6.0)
    clips = video_clips(video)
    with torch.no_grad():
        # one clip at a time ([1, 1, 3, 2, 224, 224]: a batch of one video of one clip)
        per_clip = torch.cat([F.normalize(model("vision", c[None, None]), dim=-1) for c in clips])  # [15, 8]
    expected = F.normalize(per_clip.mean(dim=0, keepdim=True), dim=-1)
    torch.testing.assert_close(expert.encode("video", [video]), expected, atol=1e-5, rtol=0)
