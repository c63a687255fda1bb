"""Any-query and composable retrieval (OmniBind): index → search round trips, weights, index/space
mismatch, and a composed audio + class-name query against each query alone, on a small world with
a fused space covering audio, text and point: `(unified + c(audio_text)) + c(point_text)`."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import spacebind
from spacebind.cache import dataset_key, ensure_caches
from spacebind.cli import app
from spacebind.errors import CheckpointError, InputError
from spacebind.fuse import fuse
from spacebind.recipe import validate_recipe
from spacebind.retrieval.mining import IndexOptions
from spacebind.search import build_index, compose, compose_query, load_index, search, space_fingerprint

RECIPE = {
    "name": "audio_text_point",
    "experts": {"unified": "world_unified", "audio_text": "world_audio_text", "point_text": "world_point_text"},
    "base": "unified",
    "bonds": [
        # FreeBind's formula (MLP projectors, no channel): the composition figures below were measured on it
        {"type": "combination", "expert": "audio_text", "lambdas": {"audio": 0.5, "text": 0.1}, "pairing": "all",
         "projector": "mlp", "channel": False},
        {"type": "combination", "expert": "point_text", "lambdas": {"point": 0.5, "text": 0.1}, "pairing": "all",
         "projector": "mlp", "channel": False},
    ],
    "train": {"epochs": 20, "batch_size": 256, "hidden": 512},
    "evaluate": {"split": "test", "ks": [1]},
}


@pytest.fixture(scope="module")
def fused(small_world, tmp_path_factory, one_thread):
    """The fused export, its leaf caches, and a CLI-built index of every modality of the test split."""
    root = tmp_path_factory.mktemp("search")
    raw = {**RECIPE, "data": {"path": str(small_world.root)}, "export": {"out": str(root / "export")}}
    result = fuse(validate_recipe(raw), work=root / "work", progress=False)
    cache_dir = result.work / "cache" / dataset_key(small_world)
    ran = CliRunner().invoke(app, ["index", str(result.out), str(small_world.root), "--out", str(root / "index"),
                                   "--split", "test", "--cache-dir", str(cache_dir)])
    assert ran.exit_code == 0, ran.output
    return result, small_world, cache_dir, root / "index"


def test_index_round_trip_finds_each_item_first_for_its_own_embedding(fused) -> None:
    result, world, cache_dir, index_dir = fused
    loaded = spacebind.load(result.out)
    assert space_fingerprint(loaded) == space_fingerprint(result.space)
    index = load_index(index_dir, loaded)
    assert index.manifest["space"]["fused"] == str(result.out.resolve()) and index.dim == result.space.dim
    assert set(index.modalities) == {"text", "image", "audio", "point"}
    caches = ensure_caches([result.space], world, cache_dir, progress=False)
    for m in index.modalities:
        items = world.select("test", m)
        assert [it["id"] for it in index.items[m]] == [it.id for it in items]
        emb = caches.embeddings(result.space, m, [it.id for it in items])
        for item, q in zip(items, emb):
            hits = search(index, q, k=10, modalities=[m])
            assert hits[0].score == pytest.approx(1.0, abs=1e-3)
            # ties: equal captions, and captions whose only differing word is a held-out synonym
            # (every world text tower maps "faint hound, large" and "faint lantern, large" alike)
            tied = [h.id for h in hits if h.score >= hits[0].score - 1e-5]
            assert item.id in tied and (m == "text" or tied == [item.id]), (m, item.id, hits[:3])


def test_streamed_and_ivf_indexes_match_the_exact_one(fused, tmp_path: Path) -> None:
    result, world, cache_dir, index_dir = fused
    exact = load_index(index_dir)
    small = build_index(result.space, world, tmp_path / "s", modalities=["audio"], split="test", chunk_size=64,
                        cache_dir=cache_dir, progress=False)
    ivf = build_index(result.space, world, tmp_path / "i", modalities=["audio"], split="test", kind="ivf",
                      options=IndexOptions(nlist=8, nprobe=8), chunk_size=100, cache_dir=cache_dir, progress=False)
    assert small.items == {"audio": exact.items["audio"]} and ivf.manifest["kind"] == "ivf"
    q = result.space.encode("text", ["a dog barking"])[0]
    want = [(h.id, round(h.score, 5)) for h in search(exact, q, 10, ["audio"])]
    for other in (small, ivf):  # all IVF lists probed: exact
        assert [(h.id, round(h.score, 5)) for h in search(other, q, 10)] == want
    # IVF trains on the first train_size items across chunks (not the first chunk alone): an
    # nlist above the whole collection is refused
    with pytest.raises(InputError, match="nlist=100000 needs at least 100000"):
        build_index(result.space, world, tmp_path / "x", modalities=["audio"], split="test", kind="ivf",
                    options=IndexOptions(nlist=100_000), chunk_size=100, cache_dir=cache_dir, progress=False)


def test_compose_is_the_renormalised_weighted_sum_and_checks_weights(fused) -> None:
    result, world, _, _ = fused
    wav = world.select("test", "audio")[0].fields["audio"]
    text, audio = result.space.encode("text", ["kettle"])[0], result.space.encode("audio", [wav])[0]
    got = compose_query(result.space, {"text": ["kettle"], "audio": [wav]}, [2.0, 0.5])
    want = (2.0 * text + 0.5 * audio) / (2.0 * text + 0.5 * audio).norm()
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(compose_query(result.space, {"text": ["kettle"]}), text)
    with pytest.raises(InputError, match=r"weights: 1 given for 2 queries \(audio:.*wav, text:kettle\)"):
        compose_query(result.space, {"audio": [wav], "text": ["kettle"]}, [1.0])
    with pytest.raises(InputError, match="cancel out"):
        compose([text, text], [1.0, -1.0])
    with pytest.raises(InputError, match="not a finite number"):
        compose([text], [float("nan")])
    with pytest.raises(InputError, match="unknown modality 'audi'"):
        compose_query(result.space, {"audi": [wav]})


def test_cli_search_prints_the_top_k_of_the_composed_query(fused) -> None:
    result, world, _, index_dir = fused
    item = world.select("test", "audio")[0]
    runner = CliRunner()
    ran = runner.invoke(app, ["search", str(result.out), str(index_dir), "--audio", item.fields["audio"],
                              "--text", item.label, "--weights", "1,0.5", "-k", "4", "--target", "point"])
    assert ran.exit_code == 0, ran.output
    space = spacebind.load(result.out)
    hits = search(load_index(index_dir), compose_query(space, {"text": [item.label], "audio": [item.fields["audio"]]}, [1, 0.5]), 4, ["point"])
    rows = [line for line in ran.output.splitlines() if "s7-test-" in line]
    assert [r.split("│")[2].strip() for r in rows] == [h.id for h in hits]
    assert f"{hits[0].score:.4f}" in rows[0] and hits[0].label in rows[0]
    bad = runner.invoke(app, ["search", str(result.out), str(index_dir), "--text", "kettle", "--weights", "1,2"])
    assert bad.exit_code == 2 and "weights: 2 given for 1 queries (text:kettle)" in bad.output
    bad = runner.invoke(app, ["search", str(result.out), str(index_dir), "--text", "kettle", "--weights", "1;2"])
    assert bad.exit_code == 2 and "--weights '1;2'" in bad.output


def test_an_index_refuses_another_space(fused, tmp_path: Path) -> None:
    result, world, _, index_dir = fused
    other_lambda = result.space.with_lambdas({"point": 0.9})  # same heads, other embeddings
    with pytest.raises(CheckpointError, match="was built with space 'audio_text_point' .* fingerprint"):
        load_index(index_dir, other_lambda)
    with pytest.raises(CheckpointError, match=r"\(dim 64, .*not with 'world_audio_text' \(dim 40"):
        load_index(index_dir, spacebind.experts.registry.EXPERTS.create("world_audio_text"))
    other_lambda.save(tmp_path / "other")
    ran = CliRunner().invoke(app, ["search", str(tmp_path / "other"), str(index_dir), "--text", "kettle"])
    assert ran.exit_code == 2 and "rebuild the index" in ran.output
    with pytest.raises(InputError, match="not a spacebind index"):
        load_index(tmp_path)


def test_audio_plus_class_name_finds_the_right_point_cloud_more_often_than_either_alone(fused) -> None:
    """Precision@k by class over the test split's audio clips, retrieving the test point clouds."""
    result, world, _, index_dir = fused
    index = load_index(index_dir)
    clips = world.select("test", "audio")
    audio = result.space.encode("audio", [it.fields["audio"] for it in clips])
    names = result.space.encode("text", world.class_names)
    text = torch.stack([names[world.class_names.index(it.label)] for it in clips])

    def precision(queries: torch.Tensor, k: int) -> float:
        return sum(sum(h.label == it.label for h in search(index, q, k, ["point"])) / k
                   for it, q in zip(clips, queries)) / len(clips)

    # Measured P@1 / P@5, world experts v2, pre-BatchNorm biases frozen, training on 1 thread
    # (2026-12-03, later): seed 7: audio 0.690 / 0.601, class name 0.713 / 0.735, both (1, 1) 0.803 /
    # 0.721, (1, 0.5) 0.733 / 0.697; seed 8: audio 0.720 / 0.611, class name 0.710 / 0.616, both
    # 0.727 / 0.676, (1, 0.5) 0.767 / 0.674. (In the suite's run of seed 7, class name 0.753 and
    # (1, 0.5) 0.760 at P@1.) The top hit of the composed query is right more often than either
    # cue's on both seeds; five deep, the class name alone (the same query for every clip of a
    # class) beats it on seed 7, so P@5 is held only to the audio query's. The light composition's
    # margin over the best cue, +0.02 or more before the biases were frozen, is +0.007 to +0.020 on
    # seed 7 now: it is held to beating both cues, not to a margin (decisions.md).
    top_audio, top_text = precision(audio, 1), precision(text, 1)
    assert precision(compose([audio, text]), 1) > max(top_audio, top_text), (top_audio, top_text)
    assert precision(compose([audio, text]), 5) > precision(audio, 5) + 0.02
    light = precision(compose([audio, text], [1.0, 0.5]), 1)
    assert light > max(top_audio, top_text), (light, top_audio, top_text)
