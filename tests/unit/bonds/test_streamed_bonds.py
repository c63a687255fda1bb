"""Bonds trained from the cache shards (`train.stream_mb`): the pairs of two leaf experts become a
`CachePairs` (same parts, same order), the MLP mixture trains from it and the closed-form heads
fit from it chunk by chunk; a bound space's side combines its leaves' rows batch by batch; pairs
whose leaves are not on disk fall back to tensors; a recipe with `train: {stream_mb: ...}` fuses
end to end."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from tiny_datasets import TINY_RECIPE

from spacebind.bonds import fit
from spacebind.bonds.bind import BoundSpace, train_bond
from spacebind.bonds.fit import _pair_parts, _streamed, _tensors, train_heads
from spacebind.bonds.linear import LinearMap
from spacebind.bonds.targets import choose_targets
from spacebind.cache.cache_set import CacheSet
from spacebind.cache.store import EmbeddingCache, embed_dataset
from spacebind.errors import InputError, RecipeError
from spacebind.io.datasets import Dataset
from spacebind.recipe import validate_recipe
from spacebind.retrieval.pseudo import PseudoDataset, block_pairs, pseudo_parts
from spacebind.space import Space
from spacebind.training import batched, trainer
from spacebind.training.pairs import CachePairs
from spacebind.training.threads import cpu_threads
from spacebind.training.trainer import TrainConfig, recall_at_1

N_TRAIN, N_VAL, SHARD = 600, 120, 50  # 12 training shards a side
CFG = TrainConfig(epochs=8, batch_size=64, hidden=32, lr=1e-2, patience=8, stream_mb=0.01)


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("SPACEBIND_TRAIN_THREADS", "1")
    with cpu_threads(1):
        yield


class Spy(CachePairs):
    """A `CachePairs` that records itself and counts the batches read from it."""

    made: list["Spy"] = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gathers = 0
        self.views: list[tuple[torch.Tensor, CachePairs]] = []  # the subsets taken (mixture members)
        Spy.made.append(self)

    def gather(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.gathers += 1
        return super().gather(idx)

    def subset(self, rows: torch.Tensor) -> CachePairs:
        view = super().subset(rows)
        self.views.append((rows, view))
        return view


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> type[Spy]:
    Spy.made = []
    monkeypatch.setattr(fit, "CachePairs", Spy)
    return Spy


def _experts() -> tuple[Space, Space]:
    """E (16-d) embeds text "i" as a fixed random unit vector; T (12-d) as a noisy linear map of it."""
    g = torch.Generator().manual_seed(0)
    table = F.normalize(torch.randn(2000, 16, generator=g), dim=-1)
    target = F.normalize(table @ torch.randn(16, 12, generator=g) + 0.15 * torch.randn(2000, 12, generator=g), dim=-1)
    e = Space.from_encoders("E", {"text": lambda xs: table[[int(x) for x in xs]]}, dim=16)
    t = Space.from_encoders("T", {"text": lambda xs: target[[int(x) for x in xs]]}, dim=12)
    return t, e


@pytest.fixture(scope="module")
def text_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Space, Space, CacheSet, Dataset]:
    root = tmp_path_factory.mktemp("streamed")
    data = root / "data"
    data.mkdir()
    rows = [{"id": f"t{i}", "split": "train", "text": str(i)} for i in range(N_TRAIN)]
    rows += [{"id": f"v{i}", "split": "val", "text": str(1000 + i)} for i in range(N_VAL)]
    (data / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = Dataset.load(data)
    t, e = _experts()
    with cpu_threads(1):
        caches = CacheSet({s.name: embed_dataset(s, dataset, root / s.name, shard_size=SHARD, progress=False)
                           for s in (t, e)})
    return t, e, caches, dataset


def _in_memory(config: TrainConfig) -> TrainConfig:
    return config.model_copy(update={"stream_mb": None})


def test_a_streamed_bond_trains_from_the_shards_and_equals_the_in_memory_bond_in_the_same_order(
        text_world, spy: type[Spy], monkeypatch: pytest.MonkeyPatch) -> None:
    t, e, caches, dataset = text_world
    kwargs = {"lambdas": {"text": 0.5}, "tune": False, "projector": "mlp", "mixture": 2, "progress": False}
    streamed = train_bond(t, [e], "combination", caches, dataset, train=CFG, **kwargs)
    (pairs,) = spy.made
    assert len(pairs) == N_TRAIN and pairs.dims == (16, 12)
    steps = 2 * CFG.epochs * (N_TRAIN // CFG.batch_size)  # two members, every step a batch from the shards
    assert pairs.gathers == steps and pairs.lru.reads >= 2 * N_TRAIN // SHARD
    assert pairs.lru.max_held_bytes <= CFG.stream_mb * 2**20
    # the in-memory bond in the shard-block order gives the same members bit for bit
    order = lambda n, seed, epoch: pairs.epoch_order(seed, epoch)  # noqa: E731
    monkeypatch.setattr(trainer, "epoch_order", order)
    monkeypatch.setattr(batched, "epoch_order", order)
    in_memory = train_bond(t, [e], "combination", caches, dataset, train=_in_memory(CFG), **kwargs)
    assert len(spy.made) == 1  # no source without stream_mb
    a, b = streamed.heads["E"], in_memory.heads["E"]
    assert len(a.members) == 2 and a.sources == b.sources == [["text"], ["text"]]
    for ma, mb in zip(a.members, b.members):
        sa, sb = ma.state_dict(), mb.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_streamed_bond_is_as_good_on_val_as_the_in_memory_one(text_world, spy: type[Spy]) -> None:
    t, e, caches, dataset = text_world
    vx, vy, _ = fit._pairs(e, t, caches, dataset, "val", choose_targets("auto", t, caches, dataset))
    recall = {}
    for name, config in (("streamed", CFG), ("in memory", _in_memory(CFG))):
        heads, _ = train_heads(e, t, caches, dataset, train=config, progress=False)
        recall[name] = recall_at_1(heads["mlp"], vx, vy)
    assert len(spy.made) == 1
    # orders differ (shard blocks vs a plain permutation); the quality does not
    assert recall["in memory"] > 0.5 and abs(recall["streamed"] - recall["in memory"]) < 0.1, recall


def test_closed_form_heads_fit_from_the_shards_as_in_memory(text_world, spy: type[Spy]) -> None:
    t, e, caches, dataset = text_world
    kinds = ("procrustes", "linear", "relative")
    options = {"projectors": kinds, "relative": {"anchors": 64, "k": 8, "power": 4.0}, "progress": False}
    streamed, _ = train_heads(e, t, caches, dataset, train=CFG, **options)
    (pairs,) = spy.made
    assert pairs.gathers >= 3  # a chunked pass each for Procrustes and least squares, the anchors for relative
    in_memory, _ = train_heads(e, t, caches, dataset, train=_in_memory(CFG), **options)
    for kind in kinds:
        sa, sb = streamed[kind].state_dict(), in_memory[kind].state_dict()
        for k in sa:
            torch.testing.assert_close(sa[k], sb[k], atol=1e-5, rtol=1e-4, msg=f"{kind}.{k}")
    assert all(torch.equal(streamed["relative"].state_dict()[k], in_memory["relative"].state_dict()[k])
               for k in streamed["relative"].state_dict())


def random_map(seed: int) -> LinearMap:
    """A fixed random linear head E (16-d) → T (12-d)."""
    head = LinearMap(16, 12)
    with torch.no_grad():
        head.weight.copy_(torch.randn(16, 12, generator=torch.Generator().manual_seed(seed)))
    return head.eval()


def test_a_bound_space_side_streams_its_leaves_rows_combined_batch_by_batch(text_world, spy: type[Spy],
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    t, e, caches, dataset = text_world
    lines = []
    monkeypatch.setattr(fit, "note", lambda message, show=True: lines.append(message))
    bound = BoundSpace(t, [e], "combination", {"E": random_map(0)}, lambdas={"text": 0.5})
    heads, _ = train_heads(e, bound, caches, dataset, train=CFG.model_copy(update={"epochs": 1}), progress=False)
    (pairs,) = spy.made
    assert "mlp" in heads and pairs.gathers > 0 and pairs.dims == (16, 12)
    assert any("read from the cache shards" in line for line in lines), lines
    assert pairs.lru.max_held_bytes <= CFG.stream_mb * 2**20  # both leaves of the bound side, within budget
    # its rows are the bound space's own embeddings of the same items, in the same order
    parts = _pair_parts(e, bound, caches, dataset, "train", choose_targets("auto", bound, caches, dataset))
    x, y, _ = _tensors(e, bound, caches, parts)
    idx = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(0))[:100]
    gx, gy = pairs.gather(idx)
    torch.testing.assert_close(gx, x[idx], rtol=0, atol=0)
    torch.testing.assert_close(gy, y[idx], rtol=1e-6, atol=1e-6)  # combined per batch instead of all at once
    # a run's key covers how the bound space combines (its heads), so a resumed run sees another bond
    other = BoundSpace(t, [e], "combination", {"E": random_map(1)}, lambdas={"text": 0.5})
    keys = [_streamed(e, space, caches, parts, 1.0)[0].key_tensors() for space in (bound, bound, other)]
    assert all(torch.equal(a, b) for a, b in zip(keys[0], keys[1]))
    assert not all(torch.equal(a, b) for a, b in zip(keys[0], keys[2]))


def test_pairs_fall_back_to_tensors_with_a_status_line_when_a_leaf_cache_is_not_on_disk(text_world) -> None:
    from memory_cache import MemoryCache

    t, e, caches, dataset = text_world
    parts = _pair_parts(e, t, caches, dataset, "train", choose_targets("auto", t, caches, dataset))
    in_memory = CacheSet({"T": MemoryCache({"text": {}}), "E": caches.caches["E"]})
    source, why = _streamed(e, t, in_memory, parts, 1.0)
    assert source is None and why == "the cache of 'T' is not an embedding cache on disk"


def test_pseudo_pairs_stream_from_the_shards_and_each_member_trains_on_its_own_subset(
        text_world, spy: type[Spy], monkeypatch: pytest.MonkeyPatch) -> None:
    t, e, caches, dataset = text_world
    # the text-only fixture mines text for text, which recipes refuse (each seed retrieves itself):
    # built unchecked, it still gives the three kinds of blocks whose streaming is tested here
    specs = [PseudoDataset(seed="text", k=3).model_copy(update={"partners": ["text"]}), PseudoDataset(seed="text")]
    blocks, _ = pseudo_parts(specs[0], e, t, caches, dataset, "train", "E")
    assert [b.weights is None for b in blocks] == [True, False, True]  # own, mined means, mirror
    source, why = _streamed(e, t, caches, blocks, 1.0)
    x, y = block_pairs(blocks, e, t, caches)
    gx, gy = source.gather(torch.randperm(len(source), generator=torch.Generator().manual_seed(0)))
    assert why == "" and len(source) == len(x) == 3 * N_TRAIN
    order = torch.randperm(len(source), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(gx, x[order], rtol=0, atol=0)
    torch.testing.assert_close(gy, y[order], rtol=0, atol=1e-6)  # the means computed per batch
    # a bond: one member per pseudo dataset, each trained from its own subset of the pooled pairs
    kwargs = {"lambdas": {"text": 0.5}, "tune": False, "projector": "mlp", "pseudo": specs, "progress": False}
    streamed = train_bond(t, [e], "combination", caches, dataset, train=CFG, **kwargs)
    _, pairs = spy.made  # the source above, then the bond's
    assert len(pairs) == 4 * N_TRAIN and [len(rows) for rows, _ in pairs.views] == [3 * N_TRAIN, N_TRAIN]
    assert pairs.lru.max_held_bytes <= CFG.stream_mb * 2**20
    # the in-memory bond, each member in its subset's shard-block order, gives the same members bit for bit
    views = {CFG.seed + i: view for i, (_, view) in enumerate(pairs.views)}
    same_order = lambda n, seed, epoch: views[seed].epoch_order(seed, epoch)  # noqa: E731
    monkeypatch.setattr(trainer, "epoch_order", same_order)
    monkeypatch.setattr(batched, "epoch_order", same_order)
    in_memory = train_bond(t, [e], "combination", caches, dataset, train=_in_memory(CFG), **kwargs)
    a, b = streamed.heads["E"], in_memory.heads["E"]
    assert len(a.members) == 2 and a.sources == b.sources == [["text"], ["text"]]
    for ma, mb in zip(a.members, b.members):
        sa, sb = ma.state_dict(), mb.state_dict()
        for k in sa:
            torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)


def test_mined_partners_in_a_channelled_target_are_averaged_part_by_part(text_world, spy: type[Spy]) -> None:
    """A channelled target embeds text as [√(1 − κ)·b, √κ·e]; a mined partner is a mean of such rows,
    taken part by part, so it keeps both parts' norms however much its neighbours agree in either
    (averaged as one vector, the bond part shrank to 0.52–0.88 of its norm at κ 0.999)."""
    t, e, caches, dataset = text_world
    kappa = 0.7
    target = BoundSpace(t, [e], "combination", {"E": random_map(0)}, lambdas={"text": 0.5}, channels={"text": kappa})
    assert target.blocks == (12, 16)
    spec = PseudoDataset(seed="text", k=5).model_copy(update={"partners": ["text"]})
    blocks, _ = pseudo_parts(spec, e, target, caches, dataset, "train", "E")
    mined = [b for b in blocks if b.weights is not None]
    assert mined and (mined[0].weights.max(dim=1).values < 0.99).any()  # real means of several neighbours
    _, y = block_pairs(mined, e, target, caches)
    torch.testing.assert_close(y[:, :12].norm(dim=-1), torch.full((len(y),), (1 - kappa) ** 0.5), atol=1e-5, rtol=0)
    torch.testing.assert_close(y[:, 12:].norm(dim=-1), torch.full((len(y),), kappa ** 0.5), atol=1e-5, rtol=0)
    source, why = _streamed(e, target, caches, mined, 1.0)  # the shards' means per batch: the same rows
    assert why == ""
    _, gy = source.gather(torch.arange(len(source)))
    torch.testing.assert_close(gy, y, rtol=0, atol=1e-5)


def test_stream_mb_is_checked_and_a_shard_over_the_budget_names_it(text_world) -> None:
    t, e, caches, dataset = text_world
    with pytest.raises(RecipeError, match="train.stream_mb"):
        validate_recipe({**yaml.safe_load(STREAMED_RECIPE), "train": {"stream_mb": 0}})
    with pytest.raises(InputError, match="train.stream_mb: a shard of"):
        train_heads(e, t, caches, dataset, train=CFG.model_copy(update={"stream_mb": 1e-4}), progress=False)


STREAMED_RECIPE = (TINY_RECIPE.replace("name: tiny", "name: tiny_streamed")
                   .replace("mixture: 2, lambdas: {text: 0.5, image: 0.5}, tune: false", "mixture: 2, pairing: all, groups: size_word")
                   .replace("train: {epochs: 3, batch_size: 8, hidden: 16}",
                            "train: {epochs: 2, batch_size: 8, hidden: 16, stream_mb: 1}"))


def test_a_recipe_with_stream_mb_fuses_end_to_end_from_the_shards(tmp_path: Path, spy: type[Spy]) -> None:
    from spacebind.fuse import fuse

    recipe = validate_recipe(yaml.safe_load(STREAMED_RECIPE))
    assert recipe.train.stream_mb == 1
    out = tmp_path / "out"
    fuse(recipe, work=tmp_path / "work", out=out, progress=False)
    assert (out / "model.safetensors").exists() and json.loads((out / "metrics.json").read_text())
    assert "(whole size_word groups)" in (out / "README.md").read_text()  # the recipe's `groups` reached the guard
    (pairs,) = spy.made  # one bond, one expert: its MLP members and Procrustes (`projector: auto`) read it
    assert pairs.gathers > 0
    # the source holds the pairs of the in-memory path, part by part (text, image × text, image) in order
    from toy_experts import multi_expert

    from spacebind.cache import dataset_key

    dataset = Dataset.load(next((tmp_path / "work" / "data").iterdir()))
    u, e = multi_expert("u", 6, ("text", "image"), 0), multi_expert("e", 4, ("text", "image"), 1)  # named by alias
    root = tmp_path / "work" / "cache" / dataset_key(dataset)  # each leaf under `<alias>-<key of the expert>`
    caches = CacheSet({name: EmbeddingCache.open(next(root.glob(f"{name}-*"))) for name in ("u", "e")})
    parts = _pair_parts(e, u, caches, dataset, "train", choose_targets("all", u, caches, dataset))
    assert [(p.source, p.target) for p in parts] == [("text", "text"), ("text", "image"), ("image", "text"), ("image", "image")]
    source, why = _streamed(e, u, caches, parts, 1.0)
    x, y, seen = _tensors(e, u, caches, parts)
    assert why == "" and seen == ["text", "image"] and len(source) == len(x) == 4 * 24
    gx, gy = source.gather(torch.arange(len(source)))
    assert torch.equal(gx, x) and torch.equal(gy, y)


ROUTED_RECIPE = STREAMED_RECIPE.replace("name: tiny_streamed", "name: tiny_routed") + (
    "routed: {experts: [e], mixture: 1, router: {epochs: 2, batch_size: 8, hidden: [8, 4]}}\n")


def test_a_routed_recipe_with_stream_mb_streams_its_router_tuples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`train.stream_mb` reaches the routed stage: its routers train on tuples computed from the shards."""
    from spacebind.bonds import route
    from spacebind.fuse import fuse

    made = []
    original = route.route_data
    monkeypatch.setattr(route, "route_data", lambda *a, **k: made.append(original(*a, **k)) or made[-1])
    out = tmp_path / "out"
    result = fuse(validate_recipe(yaml.safe_load(ROUTED_RECIPE)), work=tmp_path / "work", out=out, progress=False)
    assert isinstance(result.space, route.RoutedSpace) and set(result.space.routers) == {"text", "image"}
    assert [type(d.source).__name__ for d in made] == ["_Streamed", "_Streamed"]  # train and val
    assert all(0 < d.source.lru.max_held_bytes <= 2**20 for d in made)
    assert (out / "model.safetensors").exists()
