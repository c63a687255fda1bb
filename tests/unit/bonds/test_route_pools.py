"""OmniBind from unpaired pools: router tuples mined for unimodal items, and each routed member's
share of the stage's pseudo datasets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from memory_cache import MemoryCache

from spacebind import Dataset, Space
from spacebind.bonds import route
from spacebind.bonds.linear import LinearMap
from spacebind.bonds.route import RoutedSpace, RouterConfig, member_pseudo, route_data, train_routed, train_routers
from spacebind.cache import CacheSet
from spacebind.cache.keys import id_keys
from spacebind.errors import InputError
from spacebind.io.datasets import Item
from spacebind.io.progress import NORMAL, verbosity
from spacebind.retrieval.mining import MiningIndex
from spacebind.retrieval.pseudo import PseudoDataset


def identity(dim: int) -> LinearMap:
    head = LinearMap(dim, dim)
    with torch.no_grad():
        head.weight.copy_(torch.eye(dim))
    return head.eval()


def pools(n: int = 12, dim: int = 8):
    """A text pool and an audio pool (disjoint items) plus two paired items. Audio item i and text
    item perm[i] share a direction in both spaces, so mining must pair them."""
    g = torch.Generator().manual_seed(0)
    directions = F.normalize(torch.randn(n, dim, generator=g), dim=-1)
    perm = torch.randperm(n, generator=g).tolist()
    items, table = [], {"text": {}, "audio": {}}
    for i in range(n):
        items.append(Item(f"a{i}", "train", None, {"audio": f"a{i}.wav"}, {}))
        items.append(Item(f"t{perm[i]}", "train", None, {"text": f"text {perm[i]}"}, {}))
        table["audio"][f"a{i}"] = directions[i]
        table["text"][f"t{perm[i]}"] = F.normalize(directions[i] + 0.05 * torch.randn(dim, generator=g), dim=-1)
    for j in range(2):
        items.append(Item(f"p{j}", "train", None, {"audio": "x.wav", "text": "x"}, {}))
        table["audio"][f"p{j}"] = table["text"][f"p{j}"] = F.normalize(torch.randn(dim, generator=g), dim=-1)
    space = {m: (lambda xs: torch.zeros(len(xs), dim)) for m in ("text", "audio")}
    t, e = Space.from_encoders("T", space, dim=dim), Space.from_encoders("E", space, dim=dim)
    routed = RoutedSpace(t, [e], {"E": identity(dim)})
    caches = CacheSet({"T": MemoryCache(table), "E": MemoryCache(table)})
    return routed, caches, Dataset.of_items(Path("."), items, classes=[]), perm


def test_unimodal_items_become_tuples_with_their_nearest_partner() -> None:
    routed, caches, dataset, perm = pools()
    data = route_data(routed, caches, dataset, "train")
    every = [it.id for it in dataset.iter_items()]
    named = {tuple(key): i for key, i in zip(id_keys(every).tolist(), every)}
    tuple_ids = [named[tuple(key)] for key in data.keys.tolist()]  # each tuple's (seed) item
    assert tuple_ids[:2] == ["p0", "p1"] and data.mined == 24 and len(data) == 26
    text_ids = [it.id for it in list(dataset.iter_items()) if "text" in it.fields]
    audio_ids = [it.id for it in list(dataset.iter_items()) if "audio" in it.fields]
    for position, item in enumerate(tuple_ids):
        if item.startswith("a"):  # an audio seed: its own audio row, the matching text mined
            assert audio_ids[int(data.rows["audio"][position])] == item
            assert text_ids[int(data.rows["text"][position])] == f"t{perm[int(item[1:])]}"
        if item.startswith("t"):  # a text seed: the audio item that shares its direction
            assert text_ids[int(data.rows["text"][position])] == item
            assert audio_ids[int(data.rows["audio"][position])] == f"a{perm.index(int(item[1:]))}"
    # paired items keep their own rows in both modalities
    assert audio_ids[int(data.rows["audio"][0])] == "p0" and text_ids[int(data.rows["text"][0])] == "p0"


def test_each_member_gets_the_pseudo_datasets_it_can_learn_from() -> None:
    dim = 4
    enc = lambda xs: torch.zeros(len(xs), dim)  # noqa: E731
    target = Space.from_encoders("T", {m: enc for m in ("image", "text", "audio", "point")}, dim=dim)
    audio_text = Space.from_encoders("AT", {"audio": enc, "text": enc}, dim=dim)
    unified = Space.from_encoders("U", {m: enc for m in ("image", "text", "audio", "point")}, dim=dim)
    leaves = {s.name: s.modalities for s in (target, audio_text, unified)}
    specs = [PseudoDataset(seed="audio", partners=["text", "image"]), PseudoDataset(seed="point", partners=["text"]),
             PseudoDataset(seed="text", partners=["audio", "point"])]
    kept = member_pseudo(specs, "AT", leaves, target.modalities)
    assert [(s.seed, s.partners) for s in kept] == [("audio", ["text"]), ("text", ["audio"])]
    assert [(s.seed, s.partners) for s in member_pseudo(specs, "U", leaves, target.modalities)] == \
        [(s.seed, s.partners) for s in specs]
    # a miner named by the dataset decides which partners it can retrieve
    named = [PseudoDataset(seed="audio", partners=["text", "image"], miner="U")]
    assert member_pseudo(named, "AT", leaves, target.modalities)[0].partners == ["text", "image"]
    with pytest.raises(InputError, match="none of the pseudo datasets"):
        member_pseudo([PseudoDataset(seed="point", partners=["text"])], "AT", leaves, target.modalities)


def test_router_tuples_stay_in_memory_where_a_cache_is_not_on_disk(capsys) -> None:
    """`stream_mb` needs every leaf's cache on disk; in-memory caches are held, and a status line says so."""
    routed, caches, dataset, _ = pools()
    held = route_data(routed, caches, dataset, "train")
    with verbosity(NORMAL):
        data = route_data(routed, caches, dataset, "train", stream_mb=1.0, progress=True)
    assert type(data.source).__name__ == "_Held" and np.array_equal(data.keys, held.keys)
    assert all(torch.equal(data.rows[m], held.rows[m]) for m in held.rows)
    assert "held in memory, not streamed (routed.router.stream_mb): the cache of 'T' is not an embedding cache" in \
        capsys.readouterr().err


def test_router_tuples_mine_through_the_configured_index() -> None:
    """`routed.router.index`: an HNSW index searched past its size finds the flat index's partners;
    an index that cannot train on the pool is an error naming the field and the mining."""
    routed, caches, dataset, _ = pools()
    flat = route_data(routed, caches, dataset, "train")
    hnsw = route_data(routed, caches, dataset, "train", index=MiningIndex(kind="hnsw", options={"ef_search": 256}))
    assert all(torch.equal(hnsw.rows[m], flat.rows[m]) for m in flat.rows)
    with pytest.raises(InputError, match=r"routed\.router\.index, mining train text→audio: an IVF index with nlist=64 needs at least 64 vectors"):
        route_data(routed, caches, dataset, "train", index=MiningIndex(kind="ivf", options={"nlist": 64}))
    assert RouterConfig(index="pq").index == MiningIndex(kind="pq")
    with pytest.raises(InputError, match=r"routed\.router\.index, mining train"):  # the recipe's router config reaches it
        train_routers(routed, caches, dataset, RouterConfig(epochs=1, index={"kind": "ivf", "options": {"nlist": 64}}),
                      progress=False)


def test_train_routed_weighs_the_channel_on_val_as_the_router_config_says(monkeypatch) -> None:
    """`routed.router.channel` and `groups` reach `choose_channels`; `channel: false`, or no val
    split, leaves OmniBind's formula."""
    routed, caches, dataset, _ = pools()
    calls = []
    monkeypatch.setattr(route, "remap", lambda *args, **kwargs: routed)
    monkeypatch.setattr(route, "train_routers", lambda space, *args, **kwargs: space)
    monkeypatch.setattr(route, "choose_channels", lambda space, c, d, **kwargs: calls.append(kwargs) or space.with_channels({}))
    val = Dataset.of_items(Path("."), [*dataset.iter_items(), Item("v0", "val", None, {"audio": "v.wav", "text": "v"}, {})],
                           classes=[])
    assert train_routed(routed.base, routed.experts, caches, val, router=RouterConfig(groups="speaker")).channels == {}
    assert calls == [{"groups": "speaker"}]
    assert train_routed(routed.base, routed.experts, caches, val, router=RouterConfig(channel=False)).channels is None
    assert train_routed(routed.base, routed.experts, caches, dataset).channels is None  # no val items
    assert len(calls) == 1


class _HeldRows(route._Held):
    """Router tuples held in memory, from given leaf embeddings (modality → leaf name → rows)."""

    def __init__(self, space: RoutedSpace, leaves: dict[str, dict[str, torch.Tensor]]) -> None:
        self.candidates = {m: space.candidates(m, leaf) for m, leaf in leaves.items()}
        self.inputs = {m: space.router_input(m, leaf) for m, leaf in leaves.items()}


def test_routers_train_when_no_val_tuple_pairs_two_modalities(monkeypatch: pytest.MonkeyPatch) -> None:
    """A val split of one modality gives no pair to score (NaN every epoch): the last epoch is kept
    instead of a crash on an empty best state."""
    from spacebind.bonds.route import RouteData

    g = torch.Generator().manual_seed(0)
    t_table, a_table = torch.randn(64, 8, generator=g), torch.randn(64, 6, generator=g)
    t = Space.from_encoders("T", {m: (lambda xs: t_table[[int(x) for x in xs]]) for m in ("text", "image")}, dim=8)
    a = Space.from_encoders("A", {m: (lambda xs: a_table[[int(x) for x in xs]]) for m in ("text", "audio")}, dim=6)
    space = RoutedSpace(t, [a], {"A": LinearMap(6, 8).eval()})

    def data(n: int, modalities: tuple[str, ...]) -> RouteData:
        leaves = {m: {"T": F.normalize(torch.randn(n, 8, generator=g), dim=-1),
                      "A": F.normalize(torch.randn(n, 6, generator=g), dim=-1)} for m in modalities}
        return RouteData(np.zeros((n, 2), dtype=np.uint64), {m: torch.arange(n) for m in modalities},
                         _HeldRows(space, leaves))

    train, val = data(64, ("text", "image")), data(16, ("text",))
    monkeypatch.setattr(route, "route_data", lambda space, caches, dataset, split, *a, **k: train if split == "train" else val)
    assert np.isnan(route.mean_pair_recall(space, {}, val))
    out = train_routers(space, None, None, RouterConfig(hidden=[16, 8], epochs=2, batch_size=32, channel=False),
                        progress=False)
    assert set(out.routers) == {"text"}
    record = out.choices["router"]  # the routers' training, for the export's history and card
    assert (record["split"], record["best_epoch"], record["modalities"]) == ("val", 1, ["text"])
    assert [row["epoch"] for row in record["history"]] == [0, 1]
    assert all(np.isnan(row["val_recall@1"]) and np.isfinite(row["loss"]) and row["lr"] >= 0 for row in record["history"])
