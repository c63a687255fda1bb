"""Hugging Face unimodal encoders from local directories: tiny DINOv2 saved with save_pretrained."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_checkpoints import dinov2_directory

from spacebind.errors import CheckpointError, InputError
from spacebind.experts.registry import EXPERTS


@pytest.fixture(scope="module")
def tiny_dinov2(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    return dinov2_directory(tmp_path_factory.mktemp("dinov2"))


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_dinov2_from_disk(tiny_dinov2, pooling: str) -> None:
    from transformers import AutoImageProcessor

    root, model = tiny_dinov2
    expert = EXPERTS.create("dinov2", path=str(root), pooling=pooling)
    assert expert.dim == 32 and expert.modalities == ("image",)
    images = [np.random.default_rng(i).integers(0, 256, (40, 48, 3), dtype=np.uint8) for i in range(2)]
    pixels = AutoImageProcessor.from_pretrained(str(root))(images=images, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (2, 3, 32, 32)
    with torch.no_grad():
        hidden = model(pixel_values=pixels).last_hidden_state
    want = hidden[:, 0] if pooling == "cls" else hidden[:, 1:].mean(1)
    torch.testing.assert_close(expert.encode("image", images), torch.nn.functional.normalize(want, dim=-1), atol=1e-5, rtol=0)


def test_missing_files_and_bad_pooling(tiny_dinov2, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="needs model.safetensors, config.json and preprocessor_config.json"):
        EXPERTS.create("dinov2", path=str(tmp_path))
    with pytest.raises(InputError, match="pooling 'max'"):
        EXPERTS.create("dinov2", path=str(tiny_dinov2[0]), pooling="max")
