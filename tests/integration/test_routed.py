"""OmniBind's routed space on the small held-out world (seed 7): routers against the uniform mixture
and the best single expert, audio↔point retrieval no expert covers, the routing formula,
deterministic router training, and the save → load round trip."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

import spacebind
from spacebind.bonds.lambdas import CHANNEL_PRIOR
from spacebind.bonds.route import RoutedSpace, RouterConfig, train_routers
from spacebind.bonds.router import Router
from spacebind.cache import dataset_key, ensure_caches
from spacebind.errors import CheckpointError, InputError, RecipeError
from spacebind.evaluation.evaluate import evaluate_space
from spacebind.evaluation.report import task_scores
from spacebind.evaluation.sweep import sweep_checkpoint
from spacebind.fuse import fuse
from spacebind.modalities import modality_pairs
from spacebind.recipe import validate_recipe

ROOT = Path(__file__).resolve().parents[2]
MODALITIES = ("text", "image", "audio", "point")


def world_recipe(data: Path, out: Path) -> dict:
    """recipes/omnibind_world.yaml on a given dataset, one projector per mixture (test speed)."""
    raw = yaml.safe_load((ROOT / "recipes" / "omnibind_world.yaml").read_text())
    raw["data"] = {"path": str(data)}
    raw["train"] = {"epochs": 20, "batch_size": 256, "hidden": 512}
    raw["bonds"][0]["mixture"] = raw["routed"]["mixture"] = 1
    raw["export"] = {"out": str(out)}
    return raw


def mean_r1(scores: dict[str, float]) -> float:
    """Mean R@1 over every modality pair and direction of the world; a pair a space lacks counts 0."""
    keys = [f"{a}→{b} R@1" for x, y in modality_pairs(MODALITIES) for a, b in ((x, y), (y, x))]
    return sum(scores.get(k, 0.0) for k in keys) / len(keys)


@pytest.fixture(scope="module")
def fused(small_world, tmp_path_factory, one_thread):
    raw = world_recipe(small_world.root, tmp_path_factory.mktemp("export") / "omnibind")
    result = fuse(validate_recipe(raw), work=tmp_path_factory.mktemp("work"), progress=False)
    caches = ensure_caches([result.space], small_world, result.work / "cache" / dataset_key(small_world), progress=False)
    return result, caches


def scores(space, caches, dataset) -> dict[str, float]:
    return task_scores(evaluate_space(space, "fused", caches, dataset, "test", [1]))


def test_routed_beats_uniform_which_beats_the_best_single_expert(fused, small_world) -> None:
    result, caches = fused
    space = result.space
    assert isinstance(space, RoutedSpace)
    assert space.with_channels(None).formula() == "(image_text + c(unified)) + r(audio_text ∥ point_text ∥ unified)"
    assert space.routes("text") == ["image_text + c(unified)", "audio_text", "point_text", "unified"]
    routed, uniform = mean_r1(scores(space, caches, small_world)), mean_r1(scores(space.uniform(), caches, small_world))
    experts: dict[str, dict[str, float]] = {}
    for r in result.records:
        if r["role"] in ("base", "expert"):
            experts.setdefault(r["model"], {}).update(task_scores([r]))
    best_single = max(mean_r1(s) for s in experts.values())
    # Measured (world experts v1) on this world (seed 7), both with the channel chosen on val: routed 0.1961, uniform
    # 0.1894 (without the channel 0.1858 and 0.1778), best single expert (unified) 0.0586. The
    # router's gain over the uniform mixture is small here (reference scales: s = 1 outside text
    # keeps every weight within a factor e of the others). benchmarks/omnibind.py,
    # seeds 11 / 12 (2,000 training items, 3 projectors each): routed 13.72 / 14.48 against
    # uniform 13.30 / 13.97 and the best single expert 3.95 / 4.35.
    assert routed >= uniform
    assert uniform > 2.5 * best_single


def test_the_channel_keeps_each_specialist_pair_at_least_as_good_as_its_expert(fused, small_world) -> None:
    result, caches = fused
    space = result.space
    s = scores(space, caches, small_world)
    experts: dict[str, dict[str, float]] = {}
    for r in result.records:
        if r["role"] in ("base", "expert"):
            experts.setdefault(r["model"], {}).update(task_scores([r]))
    assert set(space.choices["channels"]["specialists"]) == {"image_text", "audio_text", "point_text"}
    # measured (world experts v1) (seed 7, test): image↔text .203 / .207 and audio↔text .360 / .333, each equal to its
    # expert (κ kept at the prior); point↔text .197 / .200 against point_text's .183 / .180, point
    # zero-shot .613 against .387 (κ moved off the prior). Without the channel the fused audio↔text
    # was .317 / .290, below audio_text.
    # Measured after the pre-BatchNorm biases were frozen (2026-12-03, 1 training thread): seed 7,
    # κ image_text 0.7, point_text 0.6 (moved on val): image↔text .203 / .197 against .193 / .207,
    # point↔text .220 / .200 against .223 / .180 (in the suite's run text→point .200 against .223);
    # seed 8: every pair equal to its expert or above (point↔text .247 / .210 against .190 / .190).
    # A κ moved on 150 val items can cost a few of 300 test items: the bar is the noise of that
    # difference (about 0.03 here), not 0.01 (decisions.md).
    for name, m in (("image_text", "image"), ("audio_text", "audio"), ("point_text", "point")):
        for task in (f"text→{m} R@1", f"{m}→text R@1"):
            assert s[task] >= experts[name][task] - 0.03, (name, task, s[task], experts[name][task])


def test_sweeping_the_channel_saves_presets_that_load(fused, small_world, tmp_path) -> None:
    result, _ = fused
    out = tmp_path / "fused"
    shutil.copytree(result.out, out)
    with pytest.raises(InputError, match="routed space: it has no λ; sweep its channel's κ"):
        sweep_checkpoint(out, small_world.root, held_out=None)
    swept = sweep_checkpoint(out, small_world.root, modalities=["channel:image_text"], grid=[0.0, 0.5, 1.0], held_out=None)
    assert swept.modalities == ["channel:image_text"] and swept.grid == [0.0, 0.5, CHANNEL_PRIOR]
    best = swept.best["image→text R@1"]["channel:image_text"]
    loaded = spacebind.load(out, preset="best:image-text")
    assert loaded.channels == {**result.space.channels, "image_text": best}
    assert (out / "sweep.png").is_file()
    plain = result.space.with_channels(None).save(tmp_path / "plain")
    with pytest.raises(InputError, match="holds no bond with λ or κ: nothing to sweep"):
        sweep_checkpoint(plain, small_world.root, channel=True, held_out=None)


def test_audio_point_retrieval_far_above_chance(fused, small_world) -> None:
    result, caches = fused
    s = scores(result.space, caches, small_world)
    chance = 1 / len(small_world.select("test"))
    # measured (world experts v1) 0.160 / 0.157 (chance 0.0033); no expert covers both audio and point but the unified one (0.020 / 0.027)
    assert s["audio→point R@1"] > 30 * chance and s["point→audio R@1"] > 30 * chance


def test_route_weights_follow_the_formula(fused, small_world) -> None:
    space = fused[0].space
    items = small_world.select("test")[:5]
    for m in MODALITIES:
        inputs = [it.fields[m] for it in items]
        w = space.route_weights(m, inputs)
        assert w.shape == (5, len(space.routes(m)))
        torch.testing.assert_close(w.sum(dim=1), torch.ones(5))
        leaf = {e.name: e.encode(m, inputs) for e in space.leaves_for(m)}
        r = torch.cat([leaf[n] for n in space.inputs[m]], dim=1)
        with torch.no_grad():
            expected = torch.softmax(space.scales[m] * torch.sigmoid(space.routers[m].net(r)), dim=1)
            cands = [space.base.combine(m, leaf)] if m in space.base.modalities else []
            cands += [space.heads[e.name](e.combine(m, leaf)) for e in space.experts if m in e.modalities]
        torch.testing.assert_close(w, expected)
        fused_m = torch.nn.functional.normalize(sum(w[:, [k]] * c for k, c in enumerate(cands)), dim=-1)
        torch.testing.assert_close(space.with_channels(None).encode(m, inputs), fused_m)
        torch.testing.assert_close(space.encode(m, inputs)[:, :space.base.dim].norm(dim=-1) ** 2,
                                   torch.full((5,), 1 / (1 + sum(k / (1 - k) for n, k in space.channels.items()
                                                                 if m in space._leaf(n).modalities))))
    assert space.scales == {"text": 10.0, "image": 1.0, "audio": 1.0, "point": 1.0}
    assert space.routes("point") == ["image_text + c(unified)", "point_text", "unified"]


def test_an_untrained_router_is_the_uniform_mixture(fused, small_world) -> None:
    space = fused[0].space
    routers = {f"router.{m}": Router(space.router_input_dim(m), len(space.routes(m)), [16, 8]).eval() for m in MODALITIES}
    fresh = RoutedSpace(space.base, space.experts, {**space.uniform().heads, **routers}, channels=space.channels)
    texts = [it.fields["text"] for it in small_world.select("test")[:4]]
    torch.testing.assert_close(fresh.route_weights("text", texts), torch.full((4, 4), 0.25))
    torch.testing.assert_close(fresh.encode("text", texts), space.uniform().encode("text", texts))


def test_router_training_is_deterministic(fused, small_world) -> None:
    result, caches = fused
    uniform = result.space.uniform()
    config = RouterConfig(epochs=3, seed=5)
    a, b = (train_routers(uniform, caches, small_world, config, progress=False) for _ in range(2))
    for key, value in a.heads.items():
        for name, tensor in value.state_dict().items():
            assert torch.equal(tensor, b.heads[key].state_dict()[name]), f"{key}.{name}"
    other = train_routers(uniform, caches, small_world, config.model_copy(update={"seed": 6}), progress=False)
    assert not torch.equal(a.routers["text"].net[0].weight, other.routers["text"].net[0].weight)


def test_save_load_round_trip_gives_identical_outputs(fused, small_world, tmp_path) -> None:
    result = fused[0]
    loaded = spacebind.load(result.out)
    assert isinstance(loaded, RoutedSpace) and loaded.formula() == result.space.formula()
    assert loaded.scales == result.space.scales and loaded.inputs == result.space.inputs
    assert loaded.channels == result.space.channels and loaded.choices == result.space.choices
    items = small_world.select("test")[:6]
    for m in MODALITIES:
        inputs = [it.fields[m] for it in items]
        assert torch.equal(loaded.encode(m, inputs), result.space.encode(m, inputs))
        assert torch.equal(loaded.route_weights(m, inputs), result.space.route_weights(m, inputs))
    # strict: a checkpoint without the text router's weights is refused, naming the keys
    from exports import reseal
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "copy"
    copy.mkdir()
    for f in ("config.json",):
        (copy / f).write_text((result.out / f).read_text())
    tensors = {k: v for k, v in load_file(str(result.out / "model.safetensors")).items() if ".router.text." not in k}
    save_file(tensors, str(copy / "model.safetensors"))
    with pytest.raises(CheckpointError, match="does not belong with"):  # not the weights the config was saved with
        spacebind.load(copy)
    reseal(copy)
    with pytest.raises(CheckpointError, match=r"missing keys \[.*router\.text\.net"):
        spacebind.load(copy)


def test_routed_recipe_errors_name_their_fields(small_world, tmp_path) -> None:
    raw = world_recipe(small_world.root, tmp_path / "out")
    raw["routed"]["experts"] = ["audio_txt", "point_text", "point_text"]
    raw["routed"]["scales"] = {"txt": 10}
    raw["routed"]["inputs"] = {"text": ["imagetext"]}
    raw["routed"]["router"]["decoupling"] = -1
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw)
    message = str(info.value)
    assert "routed.experts.0: 'audio_txt' is not one of the recipe's experts" in message and "'audio_text'" in message
    assert "routed.experts.2: expert 'point_text' is listed twice" in message
    assert "routed.scales: unknown modality 'txt'" in message
    assert "routed.inputs.text.0: 'imagetext'" in message
    assert "routed.router.decoupling" in message


def test_omnibind_from_unpaired_pools(tmp_path_factory, one_thread) -> None:
    """recipes/omnibind_world_pools.yaml on a small held-out world (seed 7) whose train split is
    four unimodal pools: projectors learn from pseudo pairs, routers from mined tuples only, and
    the remapped mixture beats the target it was built on."""
    from spacebind.bonds.route import route_data

    raw = yaml.safe_load((ROOT / "recipes" / "omnibind_world_pools.yaml").read_text())
    raw["data"] = {"world": {"seed": 7, "train": 800, "val": 150, "test": 300, "unpaired": True}}
    raw["train"] = {"epochs": 20, "batch_size": 256, "hidden": 512}
    raw["export"] = {"out": str(tmp_path_factory.mktemp("export") / "pools")}
    result = fuse(validate_recipe(raw), work=tmp_path_factory.mktemp("work"), progress=False)
    dataset = spacebind.Dataset.load(next((result.work / "data").iterdir()))
    assert all(sum(m in it.fields for m in MODALITIES) == 1 for it in dataset.select("train"))
    caches = ensure_caches([result.space], dataset, result.work / "cache" / dataset_key(dataset), progress=False)
    tuples = route_data(result.space.uniform(), caches, dataset, "train")
    assert tuples.mined == len(tuples) == 800  # no paired train item: every tuple is mined
    routed = mean_r1(scores(result.space, caches, dataset))
    uniform = mean_r1(scores(result.space.uniform(), caches, dataset))
    anchor = mean_r1(scores(result.space.base, caches, dataset))
    # measured (world experts v1) on held-out seeds 11 / 12 (2,000 train items): anchor 4.9 / 4.9, uniform 7.6 / 7.4,
    # routed 8.3 / 7.4 (docs/decisions.md: routers from unpaired pools)
    assert uniform > 1.3 * anchor and routed > 1.3 * anchor


def test_routers_train_from_the_cache_shards_within_their_budget(fused, small_world, monkeypatch) -> None:
    """`router.stream_mb`: the tuples' candidates come from the leaves' cache shards batch by batch
    (one shard LRU within the budget), the same tuples and candidates as in memory; the routers it
    trains (its own shard-block order) are as good as those trained in memory."""
    from spacebind.bonds import route

    result, caches = fused
    uniform = result.space.uniform()
    largest = max(f.nbytes for leaf in uniform.leaves() for m in leaf.modalities
                  for f in route.cache_side([(caches.caches[leaf.name], m, caches.caches[leaf.name].ids(m)[:1])]).shards)
    budget = 1.5 * largest / 2**20  # one shard at a time: every other shard is read again when needed
    held, streamed = (route.route_data(uniform, caches, small_world, "train", stream_mb=mb) for mb in (None, budget))
    assert (streamed.keys == held.keys).all() and streamed.mined == held.mined
    assert all(torch.equal(streamed.rows[m], held.rows[m]) for m in held.rows)
    batch = torch.arange(0, len(held), 7)
    for m in held.rows:
        rows = held.rows[m][batch]
        rows = rows[rows >= 0]
        for a, b in zip(streamed.gather(m, rows), held.gather(m, rows)):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert streamed.source.lru.max_held_bytes <= budget * 2**20 and streamed.source.lru.reads > 1
    order = streamed.order(0, 0)
    assert sorted(order.tolist()) == list(range(len(held)))
    with pytest.raises(InputError, match=r"routed.router.stream_mb: a shard of .* MB does not fit"):
        route.route_data(uniform, caches, small_world, "train", stream_mb=0.5 * largest / 2**20)

    made = []
    original = route.route_data
    monkeypatch.setattr(route, "route_data", lambda *a, **k: made.append(original(*a, **k)) or made[-1])
    config = RouterConfig(epochs=4, seed=5)
    in_memory = train_routers(uniform, caches, small_world, config, progress=False)
    from_shards = train_routers(uniform, caches, small_world, config.model_copy(update={"stream_mb": budget}),
                                progress=False)
    assert [type(d.source).__name__ for d in made] == ["_Held", "_Held", "_Streamed", "_Streamed"]
    assert all(d.source.lru.max_held_bytes <= budget * 2**20 for d in made[2:])
    a, b = (mean_r1(scores(s, caches, small_world)) for s in (in_memory, from_shards))
    # shard blocks change the batch order, not the quality (measured (world experts v1): 0.1783 in memory, 0.1775 streamed)
    assert abs(a - b) < 0.01, (a, b)

