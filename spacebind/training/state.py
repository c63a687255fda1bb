"""The on-disk state of a resumable projector training run.

One file per run, rewritten atomically after every epoch. It carries a fingerprint of the run
(config, head shape, data); a file with another fingerprint belongs to another run and is
ignored with a warning (the new run overwrites it after its first epoch). The batch order of
epoch e is drawn from a generator seeded by (seed, e), so no global RNG state needs saving.

The file also carries a sha256 of its content (`checksum`): a file whose content no longer
matches it (a flipped bit) is refused with a named error, never used; a file without one (written
by an older spacebind) is ignored with a warning, like another run's.
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


def _content_sha256(obj: Any, h: Any = None) -> str:
    """sha256 of a nested state (dicts, lists, tensors, numbers, strings): tensors by dtype, shape
    and bytes, everything else by type and repr, dict items in key order."""
    h = h or hashlib.sha256()
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy() if t.numel() else b"")
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for k in sorted(obj, key=repr):
            h.update(repr(k).encode())
            _content_sha256(obj[k], h)
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for v in obj:
            _content_sha256(v, h)
    else:
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
    return h.hexdigest()


def load_state(path: Path, key: str | None) -> dict[str, Any] | None:
    """The saved state of this run (same fingerprint `key`; None: whichever run wrote it), or None
    if there is none.

    Raises:
        CheckpointError: the file exists but cannot be read, or its content does not match its checksum.
    """
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # torch raises several unrelated types for damaged files
        raise CheckpointError(f"{path}: unreadable training state ({exc}); delete it to train from scratch") from exc
    checksum = saved.pop("checksum", None) if isinstance(saved, dict) else None
    if checksum is None:  # written by an older spacebind: not verifiable, so never used
        warnings.warn(f"{path}: training state without a checksum (an older spacebind); training starts over "
                      "and will overwrite it", stacklevel=3)
        return None
    if checksum != _content_sha256(saved):
        raise CheckpointError(f"{path}: training state does not match its checksum (damaged); "
                              "delete it to train this run from scratch")
    if key is not None and saved.get("fingerprint") != key:
        warnings.warn(f"{path} was written by a run with another config or other data; training starts over "
                      "and will overwrite it", stacklevel=3)
        return None
    return saved


def save_state(path: Path, key: str, state: dict[str, Any]) -> None:
    """Atomically write `state` (tensors, dicts, lists, numbers) tagged with the run's `key` and checksummed."""
    tagged = {**state, "fingerprint": key}
    save_torch(path, {**tagged, "checksum": _content_sha256(tagged)})
