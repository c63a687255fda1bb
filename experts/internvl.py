"""InternVL-C (InternVL-14B-224px) from a local snapshot directory, through transformers.

The snapshot ships its own model code (`modeling_internvl.py`, loaded with `trust_remote_code`),
so it runs only when the caller sets `trust_remote_code=True` explicitly. As the official usage:
images through the snapshot's `CLIPImageProcessor` (224 px bicubic, ImageNet mean/std) and
`encode_image(pixels, mode="InternVL-C")`; texts prefixed `summarize:`, tokenized as
`[bos] tokens [eos]` (LLaMA tokenizer with `add_eos_token=True`), truncated to 80 ids and padded
with id 0, then `encode_text(ids)`, which reads the embedding at the last non-pad position.
Both are 768-d and not normalised by the model; the expert normalises them.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from spacebind.errors import CheckpointError
from spacebind.experts._remote_code import load_remote_model, load_tokenizer, remote_expert
from spacebind.experts.registry import EXPERTS
from spacebind.space import Expert

TEXT_PREFIX = "summarize:"
MAX_LENGTH = 80
PAD_ID = 0


def text_ids(tokenizer: Any, texts: list[str]) -> torch.Tensor:
    """[N, 80] ids: bos, the tokens of `summarize:` + text (truncated), eos, then pad id 0 on the
    right, whatever the tokenizer's `padding_side` (transformers 5 pads LLaMA on the left, and
    `encode_text` reads the last non-pad position)."""
    rows = []
    for text in texts:
        body = tokenizer(TEXT_PREFIX + text, add_special_tokens=False)["input_ids"][:MAX_LENGTH - 2]
        ids = [tokenizer.bos_token_id, *body, tokenizer.eos_token_id]
        rows.append(ids + [PAD_ID] * (MAX_LENGTH - len(ids)))
    return torch.tensor(rows, dtype=torch.long)


@EXPERTS.register("internvl_c", modalities=("image", "text"), dim=768, checkpoint="InternVL-14B-224px snapshot dir", licence="mit",
                  description="InternVL-C (InternVL-14B-224px) from a local snapshot; needs trust_remote_code=True")
def internvl_c(checkpoint: str, trust_remote_code: bool = False, dtype: str = "float32", device: str = "cpu",
               batch_size: int = 16) -> Expert:
    """`create_expert("internvl_c", checkpoint=DIR, trust_remote_code=True)`.

    Raises:
        CheckpointError: not a snapshot, remote code not allowed, or a broken tokenizer.
    """
    from transformers import CLIPImageProcessor

    loaded = load_remote_model("InternVL-C", "internvl_c", "OpenGVLab/InternVL-14B-224px", checkpoint,
                               trust_remote_code=trust_remote_code, dtype=dtype, device=device)
    model = loaded.model
    processor = CLIPImageProcessor.from_pretrained(str(loaded.path), local_files_only=True)
    tokenizer = load_tokenizer(loaded, loaded.config.get("qllama_config", {}).get("vocab_size"),
                               hint="; a LLaMA tokenizer.model needs the sentencepiece package")
    if tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
        raise CheckpointError(f"InternVL-C: the tokenizer in {loaded.path} has no bos/eos token")

    @torch.no_grad()
    def encode_image(images: list[np.ndarray]) -> torch.Tensor:
        pixels = processor(images=list(images), return_tensors="pt")["pixel_values"]
        return model.encode_image(pixels.to(device, loaded.torch_dtype), mode="InternVL-C").float()

    @torch.no_grad()
    def encode_text(texts: list[str]) -> torch.Tensor:
        return model.encode_text(text_ids(tokenizer, texts).to(device)).float()

    return remote_expert(loaded, int(loaded.config.get("clip_embed_dim", 768)),
                         {"image": encode_image, "text": encode_text}, batch_size)
