"""Sentence encoders from a local directory, run by sentence-transformers: the directory's modules.json
(pooling, dense layers, normalisation) is honoured; a plain Hugging Face model gets mean pooling.
Nothing is downloaded and no code named by the directory is run."""
from __future__ import annotations

import json
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


def _transformer_weights(name: str, path: Path) -> Path:
    """The transformer's model.safetensors; refuses pickled module weights (pytorch_model.bin)."""
    dirs = [("Transformer", path)]
    if (path / "modules.json").is_file():
        try:
            dirs = [(m["type"], path / m["path"]) for m in json.loads((path / "modules.json").read_text("utf-8"))]
        except (ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(f"sentence encoder {name!r}: unreadable {path / 'modules.json'} ({exc})") from None
    for _, folder in dirs:
        if (folder / "pytorch_model.bin").is_file() and not (folder / "model.safetensors").is_file():
            raise CheckpointError(f"sentence encoder {name!r}: {folder} holds pickled weights (pytorch_model.bin); "
                                  f"convert them to model.safetensors")
    folder = next((f for t, f in dirs if t.endswith("Transformer")), path)
    if not (folder / "model.safetensors").is_file():
        raise CheckpointError(f"sentence encoder {name!r}: no model.safetensors in {folder}")
    return folder / "model.safetensors"


def sentence_encoder(name: str, path: str | Path, *, max_length: int | None = None, batch_size: int = 64,
                     device: str = "cpu", source: str | None = None,
                     spec_kwargs: dict[str, object] | None = None) -> Expert:
    """A text expert from a local sentence-encoder directory (config, weights, tokenizer, modules.json).
    Texts are cut at `max_length` tokens; None keeps the model's own `max_seq_length` (its
    sentence_bert_config.json, as sentence-transformers reads it: 384 for all-mpnet-base-v2, 128
    for all-roberta-large-v1, 256 for all-MiniLM-L6-v2)."""
    from sentence_transformers import SentenceTransformer

    path = Path(path)
    weights = _transformer_weights(name, path)
    try:
        model = SentenceTransformer(str(path), device=device, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"sentence encoder {name!r}: cannot load {path} ({exc})") from None
    if model.tokenizer is None:
        raise CheckpointError(f"{path}: no text tokenizer loaded; check that the directory holds the tokenizer files")
    config = getattr(getattr(model[0], "auto_model", None), "config", None)
    check_tokenizer(model.tokenizer, getattr(config, "vocab_size", None), path)
    if max_length is not None:
        model.max_seq_length = max_length
    dim = model.get_embedding_dimension()
    if dim is None:
        raise CheckpointError(f"sentence encoder {name!r}: {path} declares no embedding dimension")

    def encode(texts: list[str]) -> torch.Tensor:
        return model.encode(texts, batch_size=len(texts), convert_to_tensor=True, show_progress_bar=False)

    kwargs = {"path": str(path)} if spec_kwargs is None else dict(spec_kwargs)
    if max_length is not None:  # a choice of the caller's: it changes long texts' embeddings, so the spec keeps it
        kwargs["max_length"] = max_length
    spec = ExpertSpec(source=source or name, kwargs=kwargs, checkpoint=str(weights), sha256=sha256_file(weights))
    return Expert(name, dim, {"text": encode}, spec=spec, batch_size=batch_size)
