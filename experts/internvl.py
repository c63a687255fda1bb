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

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spacebind.errors import CheckpointError
from spacebind.experts.hf_text import check_tokenizer
from spacebind.experts.registry import EXPERTS
from spacebind.fileio import sha256_file
from spacebind.space import Expert, ExpertSpec

TEXT_PREFIX = "summarize:"
MAX_LENGTH = 80
PAD_ID = 0
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _snapshot(path: Path) -> tuple[dict[str, Any], Path]:
    """The snapshot's config and its weights file (the first shard's index or the single file)."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"InternVL-C: {path} is not a model snapshot directory (no config.json); download "
                              f"OpenGVLab/InternVL-14B-224px into a directory and pass checkpoint=DIR")
    for name in ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json",
                 "pytorch_model.bin"):
        if (path / name).is_file():
            return json.loads(config_file.read_text()), path / name
    raise CheckpointError(f"InternVL-C: {path} holds no weights (model.safetensors[.index.json] or "
                          f"pytorch_model.bin[.index.json])")


def _check_loading(info: dict[str, Any], weights: Path) -> None:
    """transformers only warns about missing weights (and initialises them at random): refuse."""
    problems = {kind: sorted(map(str, info.get(kind) or [])) for kind in ("missing_keys", "unexpected_keys",
                                                                        "mismatched_keys")}
    if any(problems.values()):
        found = "; ".join(f"{kind.replace('_', ' ')}: {', '.join(keys)}" for kind, keys in problems.items() if keys)
        raise CheckpointError(f"InternVL-C: {weights} does not match the model code ({found})")


def text_ids(tokenizer: Any, texts: list[str]) -> torch.Tensor:
    """[N, 80] ids: bos, the tokens of `summarize:` + text (truncated), eos, then pad id 0."""
    rows = []
    for text in texts:
        body = tokenizer(TEXT_PREFIX + text, add_special_tokens=False)["input_ids"][:MAX_LENGTH - 2]
        ids = [tokenizer.bos_token_id, *body, tokenizer.eos_token_id]
        rows.append(ids + [PAD_ID] * (MAX_LENGTH - len(ids)))
    return torch.tensor(rows, dtype=torch.long)


@EXPERTS.register("internvl_c", modalities=("image", "text"), dim=768, checkpoint="InternVL-14B-224px snapshot dir",
                  description="InternVL-C (InternVL-14B-224px) from a local snapshot; needs trust_remote_code=True")
def internvl_c(checkpoint: str, trust_remote_code: bool = False, dtype: str = "float32", device: str = "cpu",
               batch_size: int = 16) -> Expert:
    """`create_expert("internvl_c", checkpoint=DIR, trust_remote_code=True)`.

    Raises:
        CheckpointError: not a snapshot, remote code not allowed, or a broken tokenizer.
    """
    from transformers import AutoModel, AutoTokenizer, CLIPImageProcessor

    path = Path(checkpoint)
    config, weights = _snapshot(path)
    if config.get("auto_map") and not trust_remote_code:
        modules = sorted({ref.split(".")[0] + ".py" for ref in config["auto_map"].values()})
        raise CheckpointError(
            f"InternVL-C: {path} runs its own model code ({', '.join(modules)}); read it, then pass "
            f"trust_remote_code=True (recipe: experts: {{alias: {{name: internvl_c, kwargs: "
            f"{{checkpoint: {path}, trust_remote_code: true}}}}}})")
    if dtype not in DTYPES:
        raise CheckpointError(f"InternVL-C: dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    model, info = AutoModel.from_pretrained(str(path), trust_remote_code=trust_remote_code, local_files_only=True,
                                            dtype=DTYPES[dtype], output_loading_info=True)
    _check_loading(info, weights)
    model = model.to(device).eval()
    processor = CLIPImageProcessor.from_pretrained(str(path), local_files_only=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, ImportError) as exc:
        raise CheckpointError(f"InternVL-C: cannot load the tokenizer in {path} ({exc}); a LLaMA tokenizer.model "
                              f"needs the sentencepiece package") from None
    if tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
        raise CheckpointError(f"InternVL-C: the tokenizer in {path} has no bos/eos token")
    check_tokenizer(tokenizer, config.get("qllama_config", {}).get("vocab_size"), path)

    @torch.no_grad()
    def encode_image(images: list[np.ndarray]) -> torch.Tensor:
        pixels = processor(images=list(images), return_tensors="pt")["pixel_values"]
        return model.encode_image(pixels.to(device, DTYPES[dtype]), mode="InternVL-C").float()

    @torch.no_grad()
    def encode_text(texts: list[str]) -> torch.Tensor:
        return model.encode_text(text_ids(tokenizer, texts).to(device)).float()

    kwargs = {"checkpoint": str(path), "trust_remote_code": trust_remote_code, "dtype": dtype}
    spec = ExpertSpec(source="internvl_c", kwargs=kwargs, checkpoint=str(weights), sha256=sha256_file(weights))
    return Expert("internvl_c", int(config.get("clip_embed_dim", 768)),
                  {"image": encode_image, "text": encode_text}, spec=spec, batch_size=batch_size)
