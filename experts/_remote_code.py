"""Loading models that ship their own code in a local Hugging Face snapshot (transformers
`trust_remote_code`), shared by the experts built on them (InternVL-C, EVA-CLIP-18B).

The snapshot's code runs only when the caller says so explicitly; weights must match the model
code exactly (transformers only warns about missing weights and initialises them at random)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from spacebind.errors import CheckpointError
from spacebind.experts.hf_text import check_tokenizer
from spacebind.io.files import sha256_file
from spacebind.space import Expert, ExpertSpec

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json",
                "pytorch_model.bin")


@dataclass(frozen=True)
class RemoteModel:
    """A loaded snapshot: the model (eval mode, on its device), its config.json and weights file."""

    label: str
    source: str
    path: Path
    config: dict[str, Any]
    weights: Path
    model: Any
    dtype: str
    trust_remote_code: bool

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


def snapshot_files(label: str, path: Path, repo: str) -> tuple[dict[str, Any], Path]:
    """The snapshot's config and its weights file (the shards' index or the single file)."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{label}: {path} is not a model snapshot directory (no config.json); download "
                              f"{repo} into a directory and pass checkpoint=DIR")
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return json.loads(config_file.read_text()), path / name
    raise CheckpointError(f"{label}: {path} holds no weights (model.safetensors[.index.json] or "
                          f"pytorch_model.bin[.index.json])")


def check_loading(label: str, info: dict[str, Any], weights: Path) -> None:
    """Refuse weights that do not match the model code (missing, unexpected or mismatched keys)."""
    problems = {kind: sorted(map(str, info.get(kind) or [])) for kind in ("missing_keys", "unexpected_keys",
                                                                        "mismatched_keys")}
    if any(problems.values()):
        found = "; ".join(f"{kind.replace('_', ' ')}: {', '.join(keys)}" for kind, keys in problems.items() if keys)
        raise CheckpointError(f"{label}: {weights} does not match the model code ({found})")


def load_remote_model(label: str, source: str, repo: str, checkpoint: str | Path, *, trust_remote_code: bool,
                      dtype: str, device: str) -> RemoteModel:
    """`AutoModel.from_pretrained(checkpoint, trust_remote_code=...)`, offline and strict.

    Raises:
        CheckpointError: not a snapshot, remote code not allowed, an unknown dtype, or weights that
            do not match the model code.
    """
    from transformers import AutoModel

    path = Path(checkpoint)
    config, weights = snapshot_files(label, path, repo)
    if config.get("auto_map") and not trust_remote_code:
        modules = sorted({ref.split("--")[-1].split(".")[0] + ".py" for ref in config["auto_map"].values()})
        raise CheckpointError(
            f"{label}: {path} runs its own model code ({', '.join(modules)}); read it, then pass "
            f"trust_remote_code=True (recipe: experts: {{alias: {{name: {source}, kwargs: "
            f"{{checkpoint: {path}, trust_remote_code: true}}}}}})")
    if dtype not in DTYPES:
        raise CheckpointError(f"{label}: dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    model, info = AutoModel.from_pretrained(str(path), trust_remote_code=trust_remote_code, local_files_only=True,
                                            dtype=DTYPES[dtype], output_loading_info=True)
    check_loading(label, info, weights)
    return RemoteModel(label, source, path, config, weights, model.to(device).eval(), dtype, trust_remote_code)


def load_tokenizer(loaded: RemoteModel, vocab_size: int | None, hint: str = "") -> Any:
    """The snapshot's tokenizer, refused when it loads broken (see `check_tokenizer`); `hint` ends
    the error when it cannot load at all."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(loaded.path), local_files_only=True,
                                        trust_remote_code=loaded.trust_remote_code)
    except (OSError, ValueError, ImportError) as exc:
        raise CheckpointError(f"{loaded.label}: cannot load the tokenizer in {loaded.path} ({exc}){hint}") from None
    check_tokenizer(tokenizer, vocab_size, loaded.path)
    return tokenizer


def remote_expert(loaded: RemoteModel, dim: int, encoders: dict[str, Any], batch_size: int) -> Expert:
    """The Expert, its spec recording the snapshot, the consent to run its code and the dtype."""
    kwargs = {"checkpoint": str(loaded.path), "trust_remote_code": loaded.trust_remote_code, "dtype": loaded.dtype}
    spec = ExpertSpec(source=loaded.source, kwargs=kwargs, checkpoint=str(loaded.weights),
                      sha256=sha256_file(loaded.weights))
    return Expert(loaded.source, dim, encoders, spec=spec, batch_size=batch_size)
