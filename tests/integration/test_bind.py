"""`Space.bind` from Python on the procedural world: trains, encodes raw files, names errors."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from spacebind import InputError, Space
from spacebind.bonds.bind import BoundSpace
from spacebind.experts.registry import EXPERTS
from spacebind.training.trainer import TrainConfig

FAST = TrainConfig(epochs=3, hidden=64, batch_size=128)


def test_bind_from_python_trains_and_encodes_raw_files(small_world, tmp_path: Path) -> None:
    unified, image_text, audio_text = (EXPERTS.create(n) for n in ("world_unified", "world_image_text", "world_audio_text"))
    displaced = unified.bind(image_text, bond="displacement", data=small_world, lambdas={"image": 0.2, "text": 0.2},
                             cache_dir=tmp_path, train=FAST, progress=False)
    carried = unified.dim if displaced.channels is not None else 0  # the val split decides on the base's channel
    assert isinstance(displaced, BoundSpace) and displaced.dim == image_text.dim + carried
    fused = displaced.bind(audio_text, data=small_world.root, cache_dir=tmp_path, projector="procrustes", progress=False)
    channel = fused.channels is not None  # the val split decides whether the expert's channel is kept
    assert fused.formula() == f"({displaced.formula()}) + c(world_audio_text)" + (" ⊕ world_audio_text" if channel else "")
    assert fused.dim == displaced.dim + (audio_text.dim if channel else 0)
    item = small_world.select("test")[0]
    for m in ("image", "audio", "point", "text"):
        emb = fused.encode(m, [item.fields[m]])
        assert emb.shape == (1, fused.dim)
        torch.testing.assert_close(emb.norm(dim=-1), torch.ones(1))
    depth_only = Space.from_encoders("depthy", {"depth": lambda xs: torch.ones(len(xs), 2)}, dim=2)
    with pytest.raises(InputError, match="share no modality"):
        audio_text.bind(depth_only, data=small_world, cache_dir=tmp_path, progress=False)
