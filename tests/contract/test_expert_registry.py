"""Every registered expert, built from a tiny checkpoint in its official format: it encodes each
of its modalities to finite unit vectors, and a batch gives what its items give one by one."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tiny_checkpoints import BUILDERS

from spacebind.experts.registry import EXPERTS, list_experts
from spacebind.io.events import events_array
from spacebind.io.inputs import Audio
from spacebind.io.video import Video


def _rng(i: int) -> np.random.Generator:
    return np.random.default_rng(1000 + i)


# Three inputs per modality, of different sizes, so batching must pad, crop or resample.
SAMPLES: dict[str, Callable[[], list[Any]]] = {
    "text": lambda: ["a photo of a red panda", "the cat", "a dog barking at the sea under a grey sky"],
    "image": lambda: [_rng(i).integers(0, 256, (40 + 9 * i, 56 - 5 * i, 3), dtype=np.uint8) for i in range(3)],
    "audio": lambda: [Audio(_rng(i).uniform(-0.5, 0.5, rate * (i + 1) // 2).astype(np.float32), rate)
                      for i, rate in enumerate((16_000, 44_100, 48_000))],
    "point": lambda: [np.concatenate([_rng(i).normal(size=(n, 3)), _rng(i).uniform(size=(n, 3))], 1).astype(np.float32)
                      for i, n in enumerate((300, 2500, 1200))],
    "depth": lambda: [_rng(i).uniform(0.5, 8.0, (48 + 8 * i, 64)).astype(np.float32) for i in range(3)],
    "thermal": lambda: [_rng(i).uniform(0.0, 1.0, (64, 48 + 8 * i)).astype(np.float32) for i in range(3)],
    "imu": lambda: [_rng(i).normal(size=(500 * (i + 1), 6)).astype(np.float32) for i in range(3)],
    "video": lambda: [Video(_rng(i).integers(0, 256, (4 + 9 * i, 36 + 8 * i, 48, 3), dtype=np.uint8), 4.0 + 2 * i)
                      for i in range(3)],
    "event": lambda: [events_array(np.column_stack([_rng(i).integers(0, 40, (n, 2)), np.sort(_rng(i).random(n)),
                                                    _rng(i).integers(0, 2, n)]), "event")
                      for i, n in enumerate((50, 400, 1000))],
}


def test_every_registered_expert_has_a_tiny_checkpoint_builder() -> None:
    assert set(list_experts()) == set(BUILDERS)


@pytest.mark.parametrize("name", list_experts())
def test_expert_encodes_unit_vectors_batch_invariantly(name: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    expert = EXPERTS.create(name, **BUILDERS[name](tmp_path, monkeypatch))
    assert set(expert.modalities) == set(EXPERTS.entry(name).modalities)
    for modality in expert.modalities:
        inputs = SAMPLES[modality]()
        batch = expert.encode(modality, inputs)
        assert batch.shape == (3, expert.dim) and batch.dtype == torch.float32, modality
        assert torch.isfinite(batch).all(), modality
        torch.testing.assert_close(batch.norm(dim=-1), torch.ones(3), atol=1e-5, rtol=0)
        one_by_one = torch.cat([expert.encode(modality, [x]) for x in inputs])
        torch.testing.assert_close(batch, one_by_one, atol=1e-4, rtol=0, msg=f"{name} {modality}")
