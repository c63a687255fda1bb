"""Hugging Face unimodal encoders from local directories: tiny DINOv2 saved with save_pretrained."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from spacebind.errors import CheckpointError, InputError
from spacebind.experts.registry import EXPERTS


@pytest.fixture(scope="module")
def tiny_dinov2(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    root = tmp_path_factory.mktemp("dinov2")
    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                          image_size=32, patch_size=8)
    model = Dinov2Model(config).eval()
    model.save_pretrained(root)
    BitImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32},
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(root)
    return root, model


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
