"""Tiny deterministic experts for tests (importable as `toy_experts:text_expert` in recipes)."""
from __future__ import annotations

import zlib

import numpy as np
import torch

from spacebind.space import Expert, Space


def _text_vectors(texts: list[str], dim: int, seed: int) -> torch.Tensor:
    rows = [torch.randn(dim, generator=torch.Generator().manual_seed(zlib.crc32(t.encode()) + seed)) for t in texts]
    return torch.stack(rows)


def _array_vectors(arrays: list[np.ndarray], dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    proj = torch.randn(16, dim, generator=g)
    feats = [np.resize(np.asarray(a, dtype=np.float32).ravel(), 16) for a in arrays]
    return torch.from_numpy(np.stack(feats)) @ proj + 0.01


def text_expert(name: str = "toy_text", dim: int = 6, seed: int = 0) -> Expert:
    """Text only: each string maps to a fixed random vector."""
    return Space.from_encoders(name, {"text": lambda xs: _text_vectors(xs, dim, seed)}, dim=dim)


def multi_expert(name: str, dim: int, modalities: tuple[str, ...], seed: int) -> Expert:
    """Text by string hash; image/point by a fixed projection of the first values of the array."""
    encoders = {
        m: (lambda xs: _text_vectors(xs, dim, seed)) if m == "text" else (lambda xs: _array_vectors(xs, dim, seed))
        for m in modalities
    }
    return Space.from_encoders(name, encoders, dim=dim)


def image_text_expert(name: str = "toy_image_text", dim: int = 5) -> Expert:
    """`multi_expert` over image and text, with defaults (for `--kwarg`-free command lines)."""
    return multi_expert(name, dim, ("image", "text"), 0)


def table_expert(name: str, dim: int, modalities: tuple[str, ...], seed: int) -> Expert:
    """Input "i" (a digit string) maps to row i of a fixed random table, for every modality."""
    table = torch.randn(64, dim, generator=torch.Generator().manual_seed(seed))
    return Space.from_encoders(name, {m: lambda xs: table[[int(x) % 64 for x in xs]] for m in modalities}, dim=dim)


def file_expert(path: str, name: str = "toy_file") -> Expert:
    """Text expert whose weights (a .npy matrix [16, dim]) come from a checkpoint file."""
    from spacebind.io.files import sha256_file
    from spacebind.space import ExpertSpec

    weights = torch.from_numpy(np.load(path)).float()
    dim = weights.shape[1]

    def encode(texts: list[str]) -> torch.Tensor:
        return _text_vectors(texts, 16, 0) @ weights

    spec = ExpertSpec(source="toy_experts:file_expert", kwargs={"path": path}, checkpoint=path, sha256=sha256_file(path))
    return Expert(name, dim, {"text": encode}, spec=spec)


def logged_expert(name: str = "toy_logged", dim: int = 8, seed: int = 0) -> Expert:
    """`multi_expert` over text and image that appends the size of every batch it encodes to
    `$TOY_LOG_DIR/rank<RANK>.log`; with `TOY_DIE_RANK` set, that rank exits abruptly (os._exit,
    as if killed) on the encoder call after its first `TOY_DIE_AFTER` calls. Settings come from the
    environment so that they stay out of the cache's identity."""
    import os

    inner = multi_expert(name, dim, ("text", "image"), seed)
    calls = {"n": 0}

    def wrap(fn):
        def encode(xs):
            rank = os.environ.get("RANK", "0")
            if os.environ.get("TOY_DIE_RANK") == rank and calls["n"] >= int(os.environ.get("TOY_DIE_AFTER", "1")):
                os._exit(3)
            calls["n"] += 1
            if os.environ.get("TOY_LOG_DIR"):
                with open(os.path.join(os.environ["TOY_LOG_DIR"], f"rank{rank}.log"), "a") as fh:
                    fh.write(f"{len(xs)}\n")
            return fn(xs)
        return encode

    return Space.from_encoders(name, {m: wrap(fn) for m, fn in inner.encoders.items()}, dim=dim)


class Counting:
    """An encoder wrapper that counts the items it encodes."""

    def __init__(self, fn) -> None:
        self.fn, self.items = fn, 0

    def __call__(self, xs):
        self.items += len(xs)
        return self.fn(xs)
