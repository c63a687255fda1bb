"""Batched search (`search_batch`): one FAISS call for many queries gives, query by query, the
same hits as `search` one at a time and as the per-query loop `search` used before, for every
index kind, over one or two modalities, with padded (short) result lists."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spacebind.errors import InputError
from spacebind.retrieval.mining import INDEX_KINDS, IndexOptions, build_index
from spacebind.search import Hit, SearchIndex, search, search_batch

DIM = 32
OPTIONS = IndexOptions(nlist=16, nprobe=4, hnsw_m=8, ef_construction=40, ef_search=32, pq_m=8, pq_bits=6, train_size=1000)


def _clustered(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(20, DIM, generator=torch.Generator().manual_seed(0))
    return F.normalize(centres[torch.randint(0, 20, (n,), generator=g)] + 0.5 * torch.randn(n, DIM, generator=g), dim=1)


def _index(x: torch.Tensor, kind: str, prefix: str, options: IndexOptions = OPTIONS) -> tuple[object, list[dict]]:
    chunks = ([[f"{prefix}{j}" for j in range(i, min(i + 500, len(x)))], x[i:i + 500]] for i in range(0, len(x), 500))
    index, ids = build_index(chunks, DIM, kind, options=options)  # type: ignore[arg-type]
    return index, [{"id": i, "split": "test", "label": f"c{int(i[len(prefix):]) % 3}", "input": f"{i}.png"} for i in ids]


def _search_index(parts: dict[str, tuple[object, list[dict]]]) -> SearchIndex:
    return SearchIndex(Path("."), {"space": {"dim": DIM}}, {m: p[0] for m, p in parts.items()}, {m: p[1] for m, p in parts.items()})


def _loop(index: SearchIndex, q: np.ndarray, k: int, wanted: list[str]) -> list[Hit]:
    """`search` as it was before batching: per modality one FAISS call for one query, merged by a
    stable Python sort on the score."""
    found = []
    for m in wanted:
        scores, rows = index.indexes[m].search(q[None, :], min(k, len(index.items[m])))
        found += [(s, m, r) for s, r in zip(scores[0].tolist(), rows[0].tolist()) if r >= 0]
    if len(wanted) > 1:
        found.sort(key=lambda t: -t[0])
    return [Hit(rank, index.items[m][r]["id"], m, index.items[m][r]["label"], s, index.items[m][r]["input"])
            for rank, (s, m, r) in enumerate(found[:k], 1)]


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_batched_hits_equal_one_query_at_a_time(kind: str) -> None:
    index = _search_index({"image": _index(_clustered(1500, 1), kind, "img"), "audio": _index(_clustered(1200, 3), kind, "aud")})
    queries = _clustered(40, 2)
    for modalities in (["image"], ["image", "audio"], None):
        results = search_batch(index, queries, 10, modalities)
        assert len(results) == 40 and results.ids.shape == results.scores.shape == (40, 10)
        wanted = modalities or ["image", "audio"]
        for i, hits in enumerate(results):
            assert hits == search(index, queries[i], 10, modalities) == _loop(index, queries[i].numpy(), 10, wanted)
            assert results.ids[i].tolist() == [h.id for h in hits]
            assert results.modalities[i].tolist() == [h.modality for h in hits]
        np.testing.assert_array_equal(np.diff(results.scores, axis=1) <= 0, True)  # ranked by score


def test_short_lists_are_padded_and_modalities_smaller_than_k_merge() -> None:
    # 256 lists over 600 items, one probed: many queries find fewer than k items
    sparse = IndexOptions(nlist=256, nprobe=1, train_size=600)
    index = _search_index({"image": _index(_clustered(600, 1), "ivf", "img", sparse),
                           "point": _index(_clustered(4, 5), "flat", "pt")})
    queries = _clustered(60, 2)
    alone = search_batch(index, queries.numpy(), 20, ["image"])
    assert (alone.rows < 0).any(), "expected some short lists"
    assert all(alone.ids[alone.rows < 0] == None)  # noqa: E711 (object array comparison)
    assert np.isneginf(alone.scores[alone.rows < 0]).all()
    both = search_batch(index, queries, 20)
    assert both.ids.shape == (60, 20)
    for i in range(60):
        assert alone.hits(i) == search(index, queries[i], 20, ["image"]) == _loop(index, queries[i].numpy(), 20, ["image"])
        assert both.hits(i) == search(index, queries[i], 20) == _loop(index, queries[i].numpy(), 20, ["image", "point"])


def test_one_vector_is_one_query_and_bad_shapes_are_refused() -> None:
    index = _search_index({"image": _index(_clustered(300, 1), "flat", "img")})
    q = _clustered(1, 2)[0]
    assert search_batch(index, q, 5).hits(0) == search(index, q, 5)
    assert len(search_batch(index, q.double(), 5)) == 1
    with pytest.raises(InputError, match="give \\[dim\\] or \\[N, dim\\]"):
        search_batch(index, torch.zeros(3, DIM + 1), 5)
    with pytest.raises(InputError, match="k must be at least 1"):
        search_batch(index, q, 0)
    with pytest.raises(InputError, match="unknown modality"):
        search_batch(index, q, 5, ["audi"])


def test_scores_are_cosines_on_the_dimensions_a_modality_uses() -> None:
    # a channelled space: audio uses every dimension, image only the first half (its channel block is zero)
    half = DIM // 2
    audio, image = _clustered(50, 1), _clustered(50, 3)
    image[:, half:] = 0
    image = F.normalize(image, dim=1)
    parts = {"image": _index(image, "flat", "img"), "audio": _index(audio, "flat", "aud")}
    manifest = {"space": {"dim": DIM}, "modalities": {"image": {"support": [[0, half]]}, "audio": {}}}
    index = SearchIndex(Path("."), manifest, {m: p[0] for m, p in parts.items()}, {m: p[1] for m, p in parts.items()})
    assert index.support("audio") is None and index.support("image").tolist() == [True] * half + [False] * half
    # queries mostly in the channel block, as a carried modality's with κ near 1
    queries = F.normalize(torch.cat([0.05 * _clustered(8, 2)[:, :half], _clustered(8, 4)[:, half:]], dim=1), dim=1)
    results = search_batch(index, queries, 100)
    restricted = F.normalize(queries[:, :half], dim=1)
    for i, hits in enumerate(results):
        for h in hits:
            row = int(h.id[3:])
            want = restricted[i] @ image[row, :half] if h.modality == "image" else queries[i] @ audio[row]
            assert h.score == pytest.approx(float(want), abs=1e-5)
        # unscaled, every image score would be at most the query's norm on the first half (≈ 0.07)
        assert {h.modality for h in hits[:20]} == {"image", "audio"}


def test_build_index_records_the_dimensions_a_modality_uses(tmp_path: Path) -> None:
    from spacebind.io.datasets import Dataset, Item
    from spacebind.search import build_index as build_search_index
    from spacebind.space import Space

    def encode(texts: list[str]) -> torch.Tensor:
        x = torch.randn(len(texts), DIM, generator=torch.Generator().manual_seed(len(texts)))
        x[:, 4:9] = 0
        return x

    space = Space.from_encoders("half", {"text": encode}, dim=DIM)
    data = Dataset.of_items(tmp_path, [Item(f"t{i}", "test", None, {"text": f"caption {i}"}) for i in range(12)])
    (tmp_path / "manifest.jsonl").write_text("", encoding="utf-8")  # the cache key reads the manifest file
    index = build_search_index(space, data, tmp_path / "index", cache_dir=tmp_path / "cache", chunk_size=5,
                               progress=False)
    assert index.manifest["modalities"]["text"]["support"] == [[0, 4], [9, DIM]]
    assert index.support("text").sum() == DIM - 5

    for bad in ([[4, 2]], [[0, DIM + 1]], "0-4", [[0, 4.0]], [0, 4]):
        with pytest.raises(InputError, match="support .* is not a list of \\[start, end\\] dimension ranges"):
            SearchIndex(Path("."), {"space": {"dim": DIM}, "modalities": {"text": {"support": bad}}}, {}, {})


def test_scores_are_cosines_whatever_the_query_norm_and_a_modality_named_twice_counts_once() -> None:
    index = _search_index({"image": _index(_clustered(300, 1), "flat", "img"), "audio": _index(_clustered(200, 3), "flat", "aud")})
    q = _clustered(1, 2)[0]
    unit = search(index, q, 6)
    for scale in (0.3, 3.0):  # unnormalised, the modalities' scores used to drift apart (a ×3 query: 3.0 "cosines")
        assert [(h.id, round(h.score, 5)) for h in search(index, scale * q, 6)] == [(h.id, round(h.score, 5)) for h in unit]
    assert max(h.score for h in unit) <= 1.0 + 1e-6
    assert search(index, q, 4, ["image", "image"]) == search(index, q, 4, ["image"])
    for bad, what in ((torch.zeros(DIM), "zero"), (torch.full((DIM,), float("nan")), "not finite")):
        with pytest.raises(InputError, match=f"query 0 is {what}: a query needs a direction"):
            search(index, bad, 3)
