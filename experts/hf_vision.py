"""Unimodal vision encoders from a local Hugging Face directory (DINOv2, DINOv2 with registers and
the like): the CLS token or the mean of the patch tokens (register tokens left out), L2-normalised.
Nothing is downloaded."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch

from spacebind.errors import CheckpointError, InputError
from spacebind.experts.registry import EXPERTS
from spacebind.io.files import sha256_file
from spacebind.space import Expert, ExpertSpec

Pooling = Literal["cls", "mean"]


def vision_encoder(name: str, path: str | Path, *, pooling: Pooling = "cls", device: str = "cpu",
                   batch_size: int = 64, source: str | None = None) -> Expert:
    """An image expert from a local directory with config.json, model.safetensors and
    preprocessor_config.json (the image processor's resize, crop and normalisation)."""
    from transformers import AutoImageProcessor, AutoModel

    path = Path(path)
    weights = path / "model.safetensors"
    if not weights.is_file() or not (path / "preprocessor_config.json").is_file():
        raise CheckpointError(f"vision encoder {name!r}: {path} needs model.safetensors, config.json and "
                              f"preprocessor_config.json (a local copy of the model repository)")
    if pooling not in ("cls", "mean"):
        raise InputError(f"pooling {pooling!r}; expected 'cls' or 'mean'")
    processor = AutoImageProcessor.from_pretrained(str(path), local_files_only=True)
    model = AutoModel.from_pretrained(str(path), local_files_only=True).to(device).eval()
    first_patch = 1 + int(getattr(model.config, "num_register_tokens", 0) or 0)  # after CLS and any registers

    @torch.no_grad()
    def encode(images: list[np.ndarray]) -> torch.Tensor:
        pixels = processor(images=list(images), return_tensors="pt")["pixel_values"].to(device)
        hidden = model(pixel_values=pixels).last_hidden_state
        return hidden[:, 0] if pooling == "cls" else hidden[:, first_patch:].mean(dim=1)

    spec = ExpertSpec(source=source or name, kwargs={"path": str(path), "pooling": pooling},
                      checkpoint=str(weights), sha256=sha256_file(weights))
    return Expert(name, model.config.hidden_size, {"image": encode}, spec=spec, batch_size=batch_size)


# DINOv2's weights are Apache-2.0 since 2023-08-31 (CC-BY-NC before): the release current copies come from
@EXPERTS.register("dinov2", modalities=("image",), checkpoint="a local copy of facebook/dinov2-{small,base,large,giant}",
                  licence="apache-2.0",
                  description="DINOv2 image encoder from a local directory (CLS or mean-pooled patches)")
def dinov2(path: str, pooling: Pooling = "cls", device: str = "cpu", batch_size: int = 64) -> Expert:
    """`spacebind.create_expert("dinov2", path="models/dinov2-base")`."""
    return vision_encoder("dinov2", path, pooling=pooling, device=device, batch_size=batch_size)


@EXPERTS.register("sentence_encoder", modalities=("text",),
                  description="any sentence-transformers model from a local directory (its pooling; mean for plain "
                              "Hugging Face encoders), e.g. all-roberta-large-v1")
def sentence_encoder_any(path: str, max_length: int | None = None, device: str = "cpu", batch_size: int = 64) -> Expert:
    """`spacebind.create_expert("sentence_encoder", path="models/all-roberta-large-v1")`; `max_length`
    None keeps the model's own max_seq_length (sentence_bert_config.json)."""
    from spacebind.experts.hf_text import sentence_encoder

    return sentence_encoder("sentence_encoder", path, max_length=max_length, device=device, batch_size=batch_size)
