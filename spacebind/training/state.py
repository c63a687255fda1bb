"""The on-disk state of a resumable projector training run.

One file per run, rewritten atomically after every epoch. It carries a fingerprint of the run
(config, head shape, data); a file with another fingerprint belongs to another run and is
ignored with a warning (the new run overwrites it after its first epoch). The batch order of
epoch e is drawn from a generator seeded by (seed, e), so no global RNG state needs saving.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from spacebind.errors import CheckpointError
from spacebind.io.files import save_torch

STATE_FILE = "train_state.pt"


def fingerprint(config: dict[str, Any], head_config: Any, tensors: Sequence[torch.Tensor | None]) -> str:
    """A digest of a config, a head description and the exact bytes and shapes of tensors: the key
    of one training run (its data), or the identity of a space (its head weights)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps({"config": config, "head": head_config}, sort_keys=True, default=str).encode())
    for t in tensors:
        if t is None:
            h.update(b"none")
            continue
        h.update(f"{tuple(t.shape)}{t.dtype}".encode())
        # blake2b of the raw buffer: exact, and about a second per GB
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def load_state(path: Path, key: str) -> dict[str, Any] | None:
    """The saved state of this run (same fingerprint `key`), or None if there is none.

    Raises:
        CheckpointError: the file exists but cannot be read.
    """
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # torch raises several unrelated types for damaged files
        raise CheckpointError(f"{path}: unreadable training state ({exc}); delete it to train from scratch") from exc
    if not isinstance(saved, dict) or saved.get("fingerprint") != key:
        warnings.warn(f"{path} was written by a run with another config or other data; training starts over "
                      "and will overwrite it", stacklevel=3)
        return None
    return saved


def save_state(path: Path, key: str, state: dict[str, Any]) -> None:
    """Atomically write `state` (tensors, dicts, lists, numbers) tagged with the run's `key`."""
    save_torch(path, {**state, "fingerprint": key})
