"""Pseudo pairs and mining on cache rows (issue 18, scale): the row/key path gives exactly what the
id-list/set path gave, on a small cache with unpaired items, bad items and a miner that lacks some."""
from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from spacebind.cache import CacheSet
from spacebind.cache.keys import KeyIndex, id_keys
from spacebind.cache.store import embed_dataset
from spacebind.errors import CacheError, InputError
from spacebind.io.datasets import Dataset, Manifest
from spacebind.retrieval import mining
from spacebind.retrieval.mining import MiningIndex, mine
from spacebind.retrieval.pseudo import PseudoDataset, pseudo_pairs
from spacebind.space import Space

N, DIM = 160, 8


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Items 0-159: text and point for most, text-only every 5th, point-only every 7th; splits by i % 4.
    AT (miner and source) fails on the points of every 11th item; U (target) on the texts of every 13th."""
    root = tmp_path_factory.mktemp("rows")
    (root / "point").mkdir()
    lines = []
    for i in range(N):
        rec: dict = {"id": f"i{i}", "split": "val" if i % 4 == 0 else "train"}
        if i % 7:
            rec["text"] = str(i)
        if i % 5:
            np.save(root / "point" / f"{i}.npy", np.array([[i, 0, 0]], np.float32))
            rec["point"] = f"point/{i}.npy"
        lines.append(json.dumps(rec))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    g = torch.Generator().manual_seed(0)
    table = torch.randn(N, DIM, generator=g)
    noisy = table + 0.8 * torch.randn(N, DIM, generator=g)
    other = torch.randn(N, DIM, generator=g)

    def encoder(t: torch.Tensor, fails: int, key) -> callable:  # noqa: ANN001
        def run(xs):  # noqa: ANN001, ANN202
            idx = [key(x) for x in xs]
            if any(i % fails == 0 and i for i in idx):
                raise InputError("undecodable")
            return t[idx]
        return run

    text_i, point_i = (lambda x: int(x)), (lambda x: int(x[0, 0]))
    at = Space.from_encoders("AT", {"text": encoder(table, 10**6, text_i), "point": encoder(noisy, 11, point_i)}, dim=DIM)
    u = Space.from_encoders("U", {"text": encoder(other, 13, text_i), "point": encoder(noisy.flip(1), 10**6, point_i)},
                            dim=DIM)
    data = Dataset.load(root)
    caches = CacheSet({s.name: embed_dataset(s, data, root / "c" / s.name, shard_size=16, progress=False) for s in (at, u)})
    return root, data, at, u, caches


def _old_usable(caches: CacheSet, space: Space, modality: str, ids: list[str]) -> list[str]:
    """`CacheSet.usable_ids` as it was: a set of every cached id per leaf."""
    keep = list(ids)
    for leaf in space.leaves_for(modality):
        if not keep:
            break
        have = set(caches.caches[leaf.name].ids(modality))
        keep = [i for i in keep if i in have]
    return keep


def _old_pseudo_pairs(spec, src, tgt, caches, dataset, split, miner, admits=lambda s, t: True):  # noqa: ANN001, ANN202
    """`pseudo_pairs` before issue 18's scale work: id lists and sets (kept verbatim but for `_old_usable`)."""
    seeds = _old_usable(caches, src, spec.seed, [it.id for it in dataset.select(split, spec.seed)])
    empty = torch.empty(0, src.dim), torch.empty(0, tgt.dim), []
    if not seeds:
        return empty
    x = caches.embeddings(src, spec.seed, seeds)
    xs, ys, sources = [], [], []

    def add(source, src_rows, tgt_rows):  # noqa: ANN001, ANN202
        xs.append(src_rows)
        ys.append(tgt_rows)
        if source not in sources:
            sources.append(source)

    own = _old_usable(caches, tgt, spec.seed, seeds) if spec.seed in tgt.modalities else []
    if own and admits(spec.seed, spec.seed):
        add(spec.seed, caches.embeddings(src, spec.seed, own), caches.embeddings(tgt, spec.seed, own))
    miner_cache = caches.caches[miner]
    row_of_seed = {i: row for row, i in enumerate(seeds)}
    in_miner = set(miner_cache.ids(spec.seed)) if spec.partners else set()
    mined_seeds = [i for i in seeds if i in in_miner]
    own_set = set(own)
    for partner in spec.partners:
        pool = _old_usable(caches, tgt, partner, [it.id for it in dataset.select(split, partner)])
        minable = set(miner_cache.ids(partner))
        pool = [i for i in pool if i in minable]
        if not mined_seeds or not pool:
            continue
        found = mine(miner_cache, spec.seed, partner, k=spec.k, seed_ids=mined_seeds, pool_ids=pool, progress=False)
        if admits(spec.seed, partner):
            seed_rows = x[[row_of_seed[i] for i in found.seed_ids]] if len(found.seed_ids) != len(seeds) else x
            add(spec.seed, seed_rows, found.targets(partial(caches.embeddings, tgt, partner), spec.mode, spec.temperature))
        if partner in src.modalities and admits(partner, spec.seed):
            pairs = [(found.pool_ids[n], s) for s, n in zip(found.seed_ids, found.indices[:, 0].tolist()) if s in own_set]
            usable = set(_old_usable(caches, src, partner, [p for p, _ in pairs]))
            pairs = [(p, s) for p, s in pairs if p in usable]
            if pairs:
                add(partner, caches.embeddings(src, partner, [p for p, _ in pairs]),
                    caches.embeddings(tgt, spec.seed, [s for _, s in pairs]))
    if not xs:
        return empty
    return torch.cat(xs), torch.cat(ys), sources


SPECS = [PseudoDataset(seed="text", partners=["point"], k=3, mode="top1"),
         PseudoDataset(seed="text", partners=["point"], k=4, temperature=0.1),
         PseudoDataset(seed="point", partners=["text"], k=2),
         PseudoDataset(seed="point")]
ADMITS = [lambda s, t: True, lambda s, t: t == "text", lambda s, t: s == t]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.label}-k{s.k}-{s.mode}")
@pytest.mark.parametrize("split", ["train", "val"])
@pytest.mark.parametrize("pick", range(len(ADMITS)))
def test_pseudo_pairs_on_rows_equal_the_id_path(world, spec, split, pick) -> None:
    root, data, at, u, caches = world
    for src, tgt in ((at, u), (u, at)):
        want = _old_pseudo_pairs(spec, src, tgt, caches, data, split, "AT", ADMITS[pick])
        got = pseudo_pairs(spec, src, tgt, caches, data, split, "AT", ADMITS[pick])
        assert got[2] == want[2] and got[0].shape == want[0].shape and got[1].shape == want[1].shape
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        streamed = pseudo_pairs(spec, src, tgt, caches, Manifest.open(root), split, "AT", ADMITS[pick])
        assert torch.equal(streamed[0], want[0]) and torch.equal(streamed[1], want[1])  # no loaded Dataset needed


def test_the_fixture_has_unpaired_and_bad_items(world) -> None:
    _, data, at, u, caches = world
    x, _, sources = pseudo_pairs(SPECS[0], at, u, caches, data, "train", "AT")
    assert sources == ["text", "point"] and len(x) > 100  # own, partner and mirror pairs
    texts = [it.id for it in data.select("train", "text")]
    assert len(caches.usable_ids(u, "text", texts)) < len(texts)  # U failed on some texts
    assert caches.caches["AT"].bad("point") and caches.caches["U"].bad("text")
    assert caches.usable_ids(at, "point", ["i11", "i12", "nope", "i22", "i3"]) == ["i12", "i3"]
    assert caches.usable_ids(at, "point", []) == []


def test_usable_ids_equal_the_set_path(world) -> None:
    _, data, at, u, caches = world
    for space in (at, u):
        for m in ("text", "point"):
            ids = [it.id for it in list(data.iter_items())][::-1] + ["missing", "i0"]
            assert caches.usable_ids(space, m, ids) == _old_usable(caches, space, m, ids)


def test_cache_rows_ids_and_embeddings_agree(world) -> None:
    _, _, _, _, caches = world
    cache = caches.caches["AT"]
    ids = cache.ids("point")
    rows = cache.rows("point", ids)
    assert rows.tolist() == list(range(len(ids))) and cache.count("point") == len(ids)
    pick = np.array([5, 0, len(ids) - 1, 17, 5])
    assert cache.ids_at("point", pick) == [ids[r] for r in pick.tolist()]
    assert torch.equal(cache.embeddings_at("point", pick), cache.embeddings("point", [ids[r] for r in pick.tolist()]))
    assert torch.equal(cache.embeddings_at("point", np.arange(len(ids))), cache.embeddings("point"))
    assert cache.rows("point", ["nope", ids[3]]).tolist() == [-1, 3]
    with pytest.raises(CacheError, match="asked for rows"):
        cache.embeddings_at("point", [len(ids)])
    with pytest.raises(CacheError, match=r"no point embeddings for ids \['nope'\]"):
        cache.embeddings("point", ["nope"])


def test_key_index_finds_rows_and_resolves_equal_leading_halves() -> None:
    keys = id_keys(f"x{i}" for i in range(1000))
    index = KeyIndex(keys)
    q = np.random.default_rng(0).permutation(1000)
    assert (index.rows(keys[q]) == q).all()
    assert index.rows(id_keys(["y", "x3"])).tolist() == [-1, 3]
    assert index.nbytes == 24 * 1000
    crafted = np.array([[7, 3], [7, 1], [2, 9], [7, 2]], dtype=np.uint64)  # three keys share the leading half
    idx = KeyIndex(crafted)
    assert idx.rows(np.array([[7, 2], [7, 1], [7, 3], [7, 4], [2, 9], [1, 1]], dtype=np.uint64)).tolist() == [3, 1, 0, -1, 2, -1]
    assert KeyIndex(np.empty((0, 2), np.uint64)).rows(crafted).tolist() == [-1] * 4


def test_mining_by_rows_equals_mining_by_ids_and_stores_rows(world, tmp_path: Path) -> None:
    _, data, _, _, caches = world
    cache = caches.caches["AT"]
    seeds = [it.id for it in data.select("train", "text")][::2]
    pool = [i for i in (it.id for it in data.select("train", "point")) if i in set(cache.ids("point"))]
    by_ids = mine(cache, "text", "point", k=3, seed_ids=seeds, pool_ids=pool, progress=False)
    by_rows = mine(cache, "text", "point", k=3, seed_rows=cache.rows("text", seeds), pool_rows=cache.rows("point", pool),
                   out=tmp_path, progress=False)
    assert torch.equal(by_ids.indices, by_rows.indices) and torch.equal(by_ids.scores, by_rows.scores)
    assert by_rows.seed_ids == seeds and by_rows.pool_ids == pool and len(by_rows) == len(seeds)
    with safe_open(str(tmp_path / "neighbours.safetensors"), framework="pt") as fh:
        meta = fh.metadata()
        assert "seed_ids" not in meta and "pool_ids" not in meta and len(meta["key"]) == 64
        assert fh.get_tensor("seed_rows").tolist() == cache.rows("text", seeds).tolist()
    again = mine(cache, "text", "point", k=3, seed_ids=seeds, pool_ids=pool, out=tmp_path, progress=False)
    assert again.seed_ids == seeds and torch.equal(again.indices, by_ids.indices)
    other = mine(cache, "text", "point", k=3, seed_ids=seeds[1:], pool_ids=pool, out=tmp_path, progress=False)
    assert other.seed_ids == seeds[1:]  # other seeds, other key: mined again
    with pytest.raises(CacheError, match="no point embeddings for ids"):
        mine(cache, "text", "point", k=3, pool_ids=["i11"], progress=False)
    with pytest.raises(InputError, match="not both"):
        mine(cache, "text", "point", seed_ids=seeds, seed_rows=[0], progress=False)


def test_pseudo_datasets_mine_through_their_index(world) -> None:
    """A pseudo dataset's `index`: HNSW searched past the pool's size gives the flat index's pairs;
    an index that cannot train on the pool is an error naming the pseudo dataset."""
    _, data, at, u, caches = world
    flat = pseudo_pairs(SPECS[0], at, u, caches, data, "train", "AT")
    spec = SPECS[0].model_copy(update={"index": MiningIndex(kind="hnsw", options={"ef_search": 256})})
    hnsw = pseudo_pairs(spec, at, u, caches, data, "train", "AT")
    assert torch.equal(hnsw[0], flat[0]) and torch.equal(hnsw[1], flat[1])
    ivf = SPECS[0].model_copy(update={"index": MiningIndex(kind="ivf", options={"nlist": 1000})})
    with pytest.raises(InputError, match="pseudo dataset 'text-point' index, mining train point: an IVF index with nlist=1000"):
        pseudo_pairs(ivf, at, u, caches, data, "train", "AT")


def test_datasets_of_one_label_keep_their_own_minings(world, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two pseudo datasets with one label but other miners or k: each mining is stored apart, so a
    rerun reuses both instead of each overwriting the other's."""
    _, data, at, u, caches = world
    specs = [(SPECS[0], "AT"), (SPECS[0], "U"), (SPECS[0].model_copy(update={"k": 2}), "AT")]
    first = [pseudo_pairs(spec, at, u, caches, data, "train", miner, out=tmp_path) for spec, miner in specs]
    assert len(list(tmp_path.glob("train-text-point-point-*/neighbours.safetensors"))) == 3
    monkeypatch.setattr(mining, "_search", lambda *a, **k: pytest.fail("mined again"))
    again = [pseudo_pairs(spec, at, u, caches, data, "train", miner, out=tmp_path) for spec, miner in specs]
    for a, b in zip(first, again):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
