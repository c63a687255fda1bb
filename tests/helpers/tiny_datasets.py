"""A tiny on-disk dataset of images and captions, one image file corrupt, for cache and embed tests."""
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
