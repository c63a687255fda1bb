"""Mining edge cases: k larger than the pool gives the whole pool (no padded, -inf neighbours);
index options must be at least 1; an IVF-PQ index, like a PQ one, needs pq_m to divide the dim."""

import pytest
import torch
from pydantic import ValidationError
from tiny_datasets import text_point_cache

from spacebind.errors import InputError
from spacebind.retrieval.mining import IndexOptions, MiningIndex, mine, new_index

N, DIM = 12, 4


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return text_point_cache(tmp_path_factory.mktemp("mine2"), N, DIM, noise=0, shard_size=8)


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
