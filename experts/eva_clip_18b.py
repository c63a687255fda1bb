"""EVA-CLIP-18B (BAAI/EVA-CLIP-18B) from a local snapshot directory, through transformers.

The snapshot ships its own model code (`modeling_evaclip.py`, loaded with `trust_remote_code`),
so it runs only when the caller sets `trust_remote_code=True` explicitly. As the official usage:
images through the `CLIPImageProcessor` of openai/clip-vit-large-patch14 (the snapshot has no
preprocessor config, so its constants are built in here: shortest edge 224 bicubic, centre crop
224, OpenAI CLIP mean/std) and `encode_image(pixels)`; texts through the snapshot's CLIP BPE
tokenizer (`<|startoftext|> tokens <|endoftext|>`, truncated to 77 ids, padded with
`<|endoftext|>`), then `encode_text(ids)`. Both are 1536-d and not normalised by the model; the
expert normalises them.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from spacebind.errors import InputError
from spacebind.experts._remote_code import load_remote_model, load_tokenizer, remote_expert
from spacebind.experts.registry import EXPERTS
from spacebind.space import Expert

IMAGE_SIZE = 224
MAX_LENGTH = 77


def image_processor() -> Any:
    """openai/clip-vit-large-patch14's preprocessing: shortest edge 224 (bicubic), centre crop 224,
    OpenAI CLIP mean/std."""
    from transformers import CLIPImageProcessor
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    return CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                              resample=3, do_center_crop=True, image_mean=list(OPENAI_CLIP_MEAN),
                              image_std=list(OPENAI_CLIP_STD), do_convert_rgb=True)


def text_ids(tokenizer: Any, texts: list[str], max_length: int = MAX_LENGTH) -> torch.Tensor:
    """[N, L ≤ max_length] ids as the official usage: padded to the longest text in the batch,
    truncated to `max_length` (the model card's 77; OmniBind's expert cuts at 42)."""
    return tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True,
                     max_length=max_length)["input_ids"]


@EXPERTS.register("eva_clip_18b", modalities=("image", "text"), dim=1536, checkpoint="EVA-CLIP-18B snapshot dir", licence="apache-2.0",
                  description="EVA-CLIP-18B (BAAI) from a local snapshot; needs trust_remote_code=True")
def eva_clip_18b(checkpoint: str, trust_remote_code: bool = False, dtype: str = "float32", device: str = "cpu",
                 batch_size: int = 16, max_length: int = MAX_LENGTH) -> Expert:
    """`create_expert("eva_clip_18b", checkpoint=DIR, trust_remote_code=True)`; `max_length`: text
    ids kept, end-of-text included (77; OmniBind's expert 42).

    Raises:
        CheckpointError: not a snapshot, remote code not allowed, weights that do not match the
            model code, or a broken tokenizer.
    """
    if not 2 <= max_length <= MAX_LENGTH:
        raise InputError(f"eva_clip_18b: max_length {max_length}: expected 2 to {MAX_LENGTH} (the model's positions)")
    loaded = load_remote_model("EVA-CLIP-18B", "eva_clip_18b", "BAAI/EVA-CLIP-18B", checkpoint,
                               trust_remote_code=trust_remote_code, dtype=dtype, device=device)
    model = loaded.model
    processor = image_processor()
    tokenizer = load_tokenizer(loaded, loaded.config.get("text_config", {}).get("vocab_size"),
                               hint="; the snapshot needs vocab.json, merges.txt and tokenizer_config.json")

    @torch.no_grad()
    def encode_image(images: list[np.ndarray]) -> torch.Tensor:
        pixels = processor(images=list(images), return_tensors="pt")["pixel_values"]
        return model.encode_image(pixels.to(device, loaded.torch_dtype)).float()

    @torch.no_grad()
    def encode_text(texts: list[str]) -> torch.Tensor:
        return model.encode_text(text_ids(tokenizer, texts, max_length).to(device)).float()

    return remote_expert(loaded, int(loaded.config.get("projection_dim", 1536)),
                         {"image": encode_image, "text": encode_text}, batch_size)
