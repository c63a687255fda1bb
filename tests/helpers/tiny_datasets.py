"""A tiny on-disk dataset of images and captions (one image file corrupt) for cache and embed tests, and a
tiny fuse recipe."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from spacebind import Dataset


def tiny_dataset(root: Path, n: int = 23, corrupt: int | None = 5) -> Dataset:
    rng = np.random.default_rng(0)
    (root / "image").mkdir(parents=True)
    lines = []
    for i in range(n):
        path = root / "image" / f"{i}.png"
        if i == corrupt:
            path.write_bytes(b"not a png")
        else:
            Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(path)
        lines.append(json.dumps({"id": f"item{i}", "split": "train" if i < 18 else "test", "label": f"c{i % 3}",
                                 "image": f"image/{i}.png", "text": f"caption number {i}"}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return Dataset.load(root)


# A fuse recipe small enough for unit tests: a world of 40 items, two toy experts, one bond.
TINY_RECIPE = """name: tiny
data:
  world: {seed: 1, train: 24, val: 8, test: 8, num_concepts: 4}
experts:
  u: {import: 'toy_experts:multi_expert', kwargs: {name: U, dim: 6, modalities: [text, image], seed: 0}}
  e: {import: 'toy_experts:multi_expert', kwargs: {name: E, dim: 4, modalities: [text, image], seed: 1}}
base: u
bonds: [{type: combination, expert: e, mixture: 2, lambdas: {text: 0.5, image: 0.5}, tune: false}]
train: {epochs: 3, batch_size: 8, hidden: 16}
evaluate: {split: test, ks: [1]}
"""


def text_point_cache(root: Path, n: int, dim: int, noise: float, shard_size: int):
    """An embedding cache of `n` items with a text and a point each (the point file holds the item's
    index): text embeddings are seeded random rows, point embeddings the same rows plus `noise` ×
    fresh ones (`noise` 0: identical), so item i's text and point are partners."""
    import torch

    from spacebind.cache.store import embed_dataset
    from spacebind.space import Space

    (root / "point").mkdir(parents=True)
    lines = []
    for i in range(n):
        np.save(root / "point" / f"{i}.npy", np.array([[i, 0, 0]], np.float32))
        lines.append(json.dumps({"id": f"i{i}", "text": str(i), "point": f"point/{i}.npy"}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    g = torch.Generator().manual_seed(0)
    text_table = torch.randn(n, dim, generator=g)
    point_table = text_table + noise * torch.randn(n, dim, generator=g) if noise else text_table
    expert = Space.from_encoders("pair", {
        "text": lambda xs: text_table[[int(x) for x in xs]],
        "point": lambda xs: point_table[[int(x[0, 0]) for x in xs]],
    }, dim=dim)
    return embed_dataset(expert, Dataset.load(root), root / "cache", shard_size=shard_size, progress=False)
