"""Search: (1) an index is refused for a space of the same dim whose heads differ (the fingerprint,
not only the dim, is checked); (2) merged results over several modalities break score ties by
modality order, then FAISS rank (a stable merge), also for long, tie-heavy lists."""
from pathlib import Path

import numpy as np
import pytest
import torch

from spacebind.errors import CheckpointError
from spacebind.retrieval.mining import build_index
from spacebind.search import SearchIndex, check_same_space, search_batch, space_fingerprint


def _bond(seed: int):
    from toy_experts import multi_expert

    from spacebind.bonds.bind import BoundSpace
    from spacebind.bonds.projector import MLPProjector

    u, e = multi_expert("U", 6, ("text", "image"), 0), multi_expert("E", 5, ("text", "image"), 1)
    torch.manual_seed(seed)
    return BoundSpace(u, [e], "combination", {"E": MLPProjector(5, 6, hidden=8).eval()}, lambdas={"text": 0.5})


def test_an_index_of_another_space_of_the_same_dim_is_refused() -> None:
    built, other = _bond(0), _bond(1)
    assert built.dim == other.dim
    manifest = {"space": {"name": built.name, "dim": built.dim, "fingerprint": space_fingerprint(built), "fused": None}}
    check_same_space(manifest, built, Path("idx"))  # the same space: fine
    with pytest.raises(CheckpointError, match="was built with space"):
        check_same_space(manifest, other, Path("idx"))


def test_merged_ties_keep_modality_order_then_faiss_rank() -> None:
    dim, n = 4, 150
    g = torch.Generator().manual_seed(0)
    parts = {}
    for m in ("image", "audio"):
        x = torch.randint(0, 2, (n, dim), generator=g).float()  # integer scores: ties everywhere
        chunks = [([f"{m}{j}" for j in range(n)], x)]
        index, ids = build_index(chunks, dim, "flat")
        parts[m] = (index, [{"id": i, "split": "test", "label": None, "input": i} for i in ids])
    sindex = SearchIndex(Path("."), {"space": {"dim": dim}}, {m: p[0] for m, p in parts.items()},
                         {m: p[1] for m, p in parts.items()})
    q = np.full(dim, 0.5, dtype=np.float32)  # a unit query: scores are 0.5 × the number of ones
    k = 2 * n
    expected = []
    for j, m in enumerate(("image", "audio")):
        s, r = parts[m][0].search(q[None, :], n)
        expected += [(float(score), j, rank, parts[m][1][row]["id"]) for rank, (score, row) in enumerate(zip(s[0], r[0]))]
    expected.sort(key=lambda t: -t[0])  # Python's sort is stable: modality order, then FAISS rank
    got = search_batch(sindex, q, k)
    assert [h.id for h in got.hits(0)] == [t[3] for t in expected]
