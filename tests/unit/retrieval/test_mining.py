"""Mining pseudo pairs with FAISS: exact against brute force, IVF, soft targets, on-disk reuse."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tiny_datasets import text_point_cache

from spacebind.errors import CacheError, InputError
from spacebind.retrieval.mining import IndexOptions, _filled, mine

N, DIM = 300, 16


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return text_point_cache(tmp_path_factory.mktemp("mine"), N, DIM, noise=0.9, shard_size=64)


def brute_force(cache, k: int):
    q, p = cache.embeddings("text"), cache.embeddings("point")
    return torch.topk(q @ p.T, k, dim=1)


def test_flat_mining_equals_brute_force_top_k(cache) -> None:
    got = mine(cache, "text", "point", k=5, chunk_size=50, progress=False)
    want = brute_force(cache, 5)
    assert got.seed_ids == cache.ids("text") and got.pool_ids == cache.ids("point")
    torch.testing.assert_close(got.scores, want.values, atol=1e-5, rtol=0)
    assert (got.indices == want.indices).float().mean() > 0.99  # equal up to float ties
    assert (got.indices[:, 0] == torch.arange(N)).float().mean() > 0.5  # the true partner mostly wins


def test_ivf_with_all_lists_probed_is_exact(cache) -> None:
    exact = mine(cache, "text", "point", k=3, progress=False)
    ivf = mine(cache, "text", "point", k=3, index="ivf", options=IndexOptions(nlist=8, nprobe=8), chunk_size=300, progress=False)
    torch.testing.assert_close(ivf.scores, exact.scores, atol=1e-5, rtol=0)


def test_an_ivf_index_probed_too_little_never_names_a_missing_neighbour(cache) -> None:
    """FAISS pads short result lists with -1, which as a position would name the pool's last item."""
    ivf = mine(cache, "text", "point", k=10, index="ivf", options=IndexOptions(nlist=64, nprobe=1, train_size=N),
               progress=False)
    short = torch.isinf(ivf.scores).any(dim=1)
    assert short.any() and (ivf.indices >= 0).all()
    assert torch.equal(ivf.indices[torch.isinf(ivf.scores)], ivf.indices[:, :1].expand_as(ivf.indices)[torch.isinf(ivf.scores)])
    weights = ivf.weights("softmax", 0.05)
    assert not torch.isnan(weights).any() and (weights[torch.isinf(ivf.scores)] == 0).all()
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(N))
    none = torch.tensor([[3, -1], [-1, -1]])  # the second seed's probed cells were empty
    with pytest.raises(InputError, match=r"the ivf index found no neighbour for 1 of 2 seeds; search more of it"):
        _filled(none, torch.zeros(2, 2), "ivf", IndexOptions())


def test_soft_and_top1_targets(cache) -> None:
    nb = mine(cache, "text", "point", k=4, seed_ids=["i3", "i7"], progress=False)
    assert nb.seed_ids == ["i3", "i7"]
    w = nb.weights("softmax", temperature=0.1)
    torch.testing.assert_close(w.sum(dim=1), torch.ones(2))
    torch.testing.assert_close(w, torch.softmax(nb.scores / 0.1, dim=1))
    assert nb.weights("top1")[:, 0].tolist() == [1.0, 1.0]
    embed = lambda ids: cache.embeddings("point", ids)  # noqa: E731
    top1 = nb.targets(embed, "top1")
    torch.testing.assert_close(top1, F.normalize(embed([nb.pool_ids[i] for i in nb.indices[:, 0].tolist()]), dim=-1))
    soft = nb.targets(embed, "softmax", 0.1)
    manual = F.normalize((w.unsqueeze(-1) * embed([nb.pool_ids[i] for i in nb.indices.flatten().tolist()]).view(2, 4, -1)).sum(1), dim=-1)
    torch.testing.assert_close(soft, manual, atol=1e-5, rtol=0)


def test_mining_is_stored_and_reused(cache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = mine(cache, "text", "point", k=2, out=tmp_path, progress=False)
    import spacebind.retrieval.mining as mining

    monkeypatch.setattr(mining, "_build", lambda *a, **k: pytest.fail("stored neighbours must be reused"))
    again = mine(cache, "text", "point", k=2, out=tmp_path, progress=False)
    assert again.seed_ids == first.seed_ids and torch.equal(again.indices, first.indices)
    with pytest.raises(CacheError, match="no 'audio' embeddings"):
        mine(cache, "audio", "point", progress=False)
