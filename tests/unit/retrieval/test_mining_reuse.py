"""Stored minings: a stored result is reused only for the same mining (k is part of its key), and
it is reused (no index built again)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import spacebind.retrieval.mining as mining
from spacebind.cache.store import embed_dataset
from spacebind.io.datasets import Dataset
from spacebind.retrieval.mining import mine
from spacebind.space import Space

N, DIM = 40, 8


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("mine1")
    (root / "point").mkdir()
    lines = []
    for i in range(N):
        np.save(root / "point" / f"{i}.npy", np.array([[i, 0, 0]], np.float32))
        lines.append(json.dumps({"id": f"i{i}", "text": str(i), "point": f"point/{i}.npy"}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    g = torch.Generator().manual_seed(0)
    text_table = torch.randn(N, DIM, generator=g)
    point_table = text_table + 0.9 * torch.randn(N, DIM, generator=g)
    expert = Space.from_encoders("pair", {
        "text": lambda xs: text_table[[int(x) for x in xs]],
        "point": lambda xs: point_table[[int(x[0, 0]) for x in xs]],
    }, dim=DIM)
    return embed_dataset(expert, Dataset.load(root), root / "cache", shard_size=16, progress=False)


def test_a_stored_mining_of_another_k_is_not_reused(cache, tmp_path: Path) -> None:
    two = mine(cache, "text", "point", k=2, out=tmp_path, progress=False)
    three = mine(cache, "text", "point", k=3, out=tmp_path, progress=False)
    fresh = mine(cache, "text", "point", k=3, progress=False)
    assert two.indices.shape == (N, 2) and three.indices.shape == (N, 3)
    assert torch.equal(three.indices, fresh.indices)


def test_a_stored_mining_is_reused_without_building_an_index(cache, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    first = mine(cache, "text", "point", k=2, out=tmp_path, progress=False)
    monkeypatch.setattr(mining, "_build", lambda *a, **k: pytest.fail("stored neighbours must be reused"))
    again = mine(cache, "text", "point", k=2, out=tmp_path, progress=False)
    assert torch.equal(again.indices, first.indices) and torch.equal(again.scores, first.scores)
