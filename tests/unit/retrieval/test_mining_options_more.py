"""Mining edge cases: k larger than the pool gives the whole pool (no padded, -inf neighbours);
index options must be at least 1; an IVF-PQ index, like a PQ one, needs pq_m to divide the dim."""
import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from spacebind.cache.store import embed_dataset
from spacebind.errors import InputError
from spacebind.io.datasets import Dataset
from spacebind.retrieval.mining import IndexOptions, MiningIndex, mine, new_index
from spacebind.space import Space

N, DIM = 12, 4


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("mine2")
    (root / "point").mkdir()
    lines = []
    for i in range(N):
        np.save(root / "point" / f"{i}.npy", np.array([[i, 0, 0]], np.float32))
        lines.append(json.dumps({"id": f"i{i}", "text": str(i), "point": f"point/{i}.npy"}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    table = torch.randn(N, DIM, generator=torch.Generator().manual_seed(0))
    expert = Space.from_encoders("pair", {"text": lambda xs: table[[int(x) for x in xs]],
                                          "point": lambda xs: table[[int(x[0, 0]) for x in xs]]}, dim=DIM)
    return embed_dataset(expert, Dataset.load(root), root / "cache", shard_size=8, progress=False)


def test_k_above_the_pool_size_gives_the_whole_pool(cache) -> None:
    nb = mine(cache, "text", "point", k=5, pool_rows=[0, 1, 2], progress=False)
    assert nb.indices.shape == (N, 3) and bool(torch.isfinite(nb.scores).all())
    assert all(sorted(row) == [0, 1, 2] for row in nb.indices.tolist())  # every pool item, once


def test_index_options_below_one_are_refused() -> None:
    with pytest.raises(ValidationError, match="must be at least 1"):
        MiningIndex.model_validate({"kind": "ivf", "options": {"nprobe": 0}})


def test_ivfpq_needs_pq_m_dividing_the_dimension() -> None:
    with pytest.raises(InputError, match="divisible by 4"):
        new_index("ivfpq", 10, IndexOptions(nlist=2, pq_m=4, pq_bits=4))
