"""The approximate index kinds (ivf, hnsw, pq, ivfpq) on small clustered data: recall against
the exact index, parameters that survive a save/load round trip, and clear errors."""
from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spacebind.errors import InputError
from spacebind.retrieval.mining import IndexOptions, build_index

DIM = 64


def _clustered(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(50, DIM, generator=torch.Generator().manual_seed(0))
    return F.normalize(centres[torch.randint(0, 50, (n,), generator=g)] + 0.5 * torch.randn(n, DIM, generator=g), dim=1)


def _chunks(x: torch.Tensor, size: int = 700):
    for i in range(0, len(x), size):
        yield [str(j) for j in range(i, min(i + size, len(x)))], x[i:i + size]


OPTIONS = IndexOptions(nlist=32, nprobe=8, hnsw_m=16, ef_construction=40, ef_search=64, pq_m=16, pq_bits=6, train_size=2000)


@pytest.mark.parametrize(("kind", "floor"), [("ivf", 0.8), ("hnsw", 0.9), ("pq", 0.3), ("ivfpq", 0.3)])
def test_recall_at_10_against_exact_and_round_trip(kind: str, floor: float, tmp_path: Path) -> None:
    pool, queries = _clustered(3000, 1), _clustered(100, 2).numpy()
    exact, _ = build_index(_chunks(pool), DIM)
    index, ids = build_index(_chunks(pool), DIM, kind, options=OPTIONS)  # type: ignore[arg-type]
    assert ids == [str(i) for i in range(3000)] and index.ntotal == 3000
    want = exact.search(queries, 10)[1]
    got_scores, got = index.search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(want, got)])
    assert recall >= floor, recall
    faiss.write_index(index, str(tmp_path / "x.faiss"))
    back = faiss.read_index(str(tmp_path / "x.faiss"))
    if kind in ("ivf", "ivfpq"):
        assert back.nprobe == OPTIONS.nprobe
    if kind == "hnsw":
        assert back.hnsw.efSearch == OPTIONS.ef_search
    scores, rows = back.search(queries, 10)
    np.testing.assert_array_equal(rows, got)
    np.testing.assert_allclose(scores, got_scores, rtol=1e-5)


def test_training_uses_up_to_train_size_vectors_across_chunks() -> None:
    pool = _clustered(3000, 1)
    # 700-vector chunks: the first alone is below nlist=1000, the buffered train set is not
    index, _ = build_index(_chunks(pool), DIM, "ivf", options=IndexOptions(nlist=1000, nprobe=1000, train_size=2000))
    assert index.ntotal == 3000 and index.is_trained


def test_clear_errors() -> None:
    pool = _clustered(100, 1)
    with pytest.raises(InputError, match="pq_m=24 needs a dimension divisible by 24"):
        build_index(_chunks(pool), DIM, "pq", options=IndexOptions(pq_m=24))
    with pytest.raises(InputError, match="pq_bits=8 needs at least 256 vectors"):
        build_index(_chunks(pool), DIM, "pq", options=IndexOptions(pq_m=16, pq_bits=8))
    with pytest.raises(InputError, match="unknown index 'lsh'"):
        build_index(_chunks(pool), DIM, "lsh")  # type: ignore[arg-type]
