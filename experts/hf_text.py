"""Sentence encoders from a local Hugging Face directory: mean pooling over the attention mask,
L2-normalised (the sentence-transformers recipe). Nothing is downloaded."""
from __future__ import annotations

from pathlib import Path

import torch

from spacebind.errors import CheckpointError
from spacebind.io.files import sha256_file
from spacebind.space import Expert, ExpertSpec

_PROBES = ("a dog runs on the beach", "quantum chromodynamics lecture notes")


def check_tokenizer(tokenizer: object, vocab_size: int | None, path: Path) -> None:
    """Refuse a broken tokenizer: offline loads can silently yield one with a tiny vocabulary
    that gives every text the same ids. `vocab_size` is the model config's, when known."""
    a, b = (tokenizer(t)["input_ids"] for t in _PROBES)  # type: ignore[operator]
    size = len(tokenizer)  # type: ignore[arg-type]
    # Configs may pad vocab_size above the real vocabulary a little, never by 10 %.
    if a == b or (vocab_size is not None and size < 0.9 * vocab_size):
        raise CheckpointError(
            f"{path}: the tokenizer loaded broken (vocabulary {size}, config says {vocab_size}; "
            f"different texts give {'the same' if a == b else 'different'} ids); "
            f"check that the directory holds the tokenizer files"
        )


def sentence_encoder(name: str, path: str | Path, *, max_length: int = 256, batch_size: int = 64,
                     device: str = "cpu", source: str | None = None,
                     spec_kwargs: dict[str, object] | None = None) -> Expert:
    """A text expert from a local sentence-encoder directory (config, weights, tokenizer)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path = Path(path)
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"sentence encoder {name!r}: no model.safetensors in {path}")
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    check_tokenizer(tokenizer, AutoConfig.from_pretrained(str(path), local_files_only=True).vocab_size, path)
    model = AutoModel.from_pretrained(str(path), local_files_only=True).to(device).eval()

    @torch.no_grad()
    def encode(texts: list[str]) -> torch.Tensor:
        batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(device)
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)

    kwargs = {"path": str(path)} if spec_kwargs is None else dict(spec_kwargs)
    kwargs["max_length"] = max_length  # it changes the embeddings of long texts, so the spec records it
    spec = ExpertSpec(source=source or name, kwargs=kwargs, checkpoint=str(weights), sha256=sha256_file(weights))
    return Expert(name, model.config.hidden_size, {"text": encode}, spec=spec, batch_size=batch_size)
