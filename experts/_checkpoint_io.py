"""Reading official checkpoint files: weights-only unpickling, wrapper dicts, `module.` prefixes,
and strict loading whose errors name every missing, unexpected or misshaped key."""
from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spacebind.errors import CheckpointError


def read_checkpoint(path: Path, key: str | None, what: str, safe_globals: Sequence[Any] = ()) -> dict[str, torch.Tensor]:
    """The model state of an official file: the dict under `key` (None: the file is a plain state
    dict), loaded with `weights_only=True` plus the allow-listed `safe_globals`, `module.`
    prefixes stripped. `what` names the file a user must download, for the error when it is absent."""
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}: download {what} and give its path")
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = next((line.strip() for line in str(exc).splitlines() if "GLOBAL" in line), str(exc).splitlines()[0])
        raise CheckpointError(f"{path}: holds Python objects that weights-only loading does not allow ({reason}); "
                              f"re-save just the model weights{f' under {key!r}' if key else ''}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({exc})") from None
    state = saved if key is None else (saved.get(key) if isinstance(saved, dict) else None)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        found = sorted(map(str, saved))[:10] if isinstance(saved, dict) else type(saved).__name__
        where = "a plain state dict of tensors" if key is None else f"a dict with the model weights under {key!r}"
        raise CheckpointError(f"{path}: expected {where}; found {found}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _names(keys: list[str], limit: int = 20) -> str:
    more = f" … ({len(keys)} in all)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], path: Path, ignore: tuple[str, ...] = (),
                assign: bool = False) -> None:
    """Load `state` into `module`, failing on any missing, unexpected or misshaped key (keys
    starting with an `ignore` prefix are dropped first). `assign` fills a meta-device module."""
    state = {k: v for k, v in state.items() if not k.startswith(ignore)}
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(f"{k} {tuple(state[k].shape)} (expected {tuple(expected[k].shape)})"
                       for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    problems = [f"{label} keys: {_names(keys)}" for label, keys in
                (("missing", missing), ("unexpected", unexpected), ("misshaped", misshaped)) if keys]
    if problems:
        raise CheckpointError(f"{path}: does not match the {type(module).__name__} architecture; " + "; ".join(problems))
    module.load_state_dict(state, strict=True, assign=assign)
