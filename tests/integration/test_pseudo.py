"""Pseudo datasets: pairs mined inside an expert train one mixture member each."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from spacebind.bonds.fit import train_head
from spacebind.cache import ensure_caches
from spacebind.errors import InputError, RecipeError
from spacebind.experts.registry import EXPERTS
from spacebind.recipe import validate_recipe
from spacebind.retrieval.pseudo import PseudoDataset, pseudo_pairs
from spacebind.training.trainer import TrainConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def spaces(small_world, tmp_path_factory):
    unified, audio_text = EXPERTS.create("world_unified"), EXPERTS.create("world_audio_text")
    caches = ensure_caches([unified, audio_text], small_world, tmp_path_factory.mktemp("c"), progress=False)
    return unified, audio_text, caches


def test_pairs_hold_the_seed_and_its_mined_partner(spaces, small_world, tmp_path: Path) -> None:
    unified, audio_text, caches = spaces
    spec = PseudoDataset(seed="text", partners=["audio"], k=3, mode="top1")
    x, y, sources = pseudo_pairs(spec, audio_text, unified, caches, small_world, "val", "world_audio_text", out=tmp_path)
    seeds = [it.id for it in small_world.select("val", "text")]
    n = len(seeds)
    assert x.shape == (3 * n, audio_text.dim) and y.shape == (3 * n, unified.dim) and sources == ["text", "audio"]
    torch.testing.assert_close(y[:n], caches.embeddings(unified, "text", seeds))  # own-modality pairs
    at = caches.caches["world_audio_text"]
    pool = [it.id for it in small_world.select("val", "audio")]
    best = (at.embeddings("text", seeds) @ at.embeddings("audio", pool).T).argmax(dim=1)
    top = [pool[i] for i in best.tolist()]
    want = F.normalize(caches.embeddings(unified, "audio", top), dim=-1)
    torch.testing.assert_close(y[n:2 * n], want, atol=1e-5, rtol=0)  # top-1 partner in U's space
    # the mirror pairs: the partner seen by the source → the seed in the target, so audio is seen too
    torch.testing.assert_close(x[2 * n:], caches.embeddings(audio_text, "audio", top))
    torch.testing.assert_close(y[2 * n:], caches.embeddings(unified, "text", seeds))
    assert list((tmp_path).iterdir())  # the mining was stored
    only_text = pseudo_pairs(spec, audio_text, unified, caches, small_world, "val", "world_audio_text",
                             admits=lambda source, target: target == "text")
    assert len(only_text[0]) == 2 * n and only_text[2] == ["text", "audio"]
    with pytest.raises(InputError, match="does not cover 'point'"):
        pseudo_pairs(PseudoDataset(seed="point"), audio_text, unified, caches, small_world, "val", "world_audio_text")


def test_one_mixture_member_per_pseudo_dataset(spaces, small_world) -> None:
    unified, audio_text, caches = spaces
    pseudo = [PseudoDataset(seed="text", partners=["audio"]), PseudoDataset(seed="audio", partners=["text"])]
    head, targets = train_head(audio_text, unified, caches, small_world, pseudo=pseudo, miner="world_audio_text",
                               pairing="all", train=TrainConfig(epochs=2, hidden=32), progress=False)
    assert len(head.members) == 2 and targets.kept == list(unified.modalities)
    assert head.sources == [["text", "audio"], ["audio", "text"]]  # every member sees what it projects
    auto, targets = train_head(audio_text, unified, caches, small_world, pseudo=pseudo, miner="world_audio_text",
                               train=TrainConfig(epochs=2, hidden=32), progress=False)
    assert "audio" not in targets.kept and targets.reliability["audio"] < targets.reliability["text"] / 2
    assert auto.sources == [["text", "audio"], ["audio"]]  # the audio seeds' mirror pairs would target U's audio
    with pytest.raises(InputError, match="miner 'nobody' is not an expert"):
        train_head(audio_text, unified, caches, small_world, pseudo=pseudo, miner="nobody", progress=False)


def test_recipe_pseudo_fields_are_checked() -> None:
    raw = yaml.safe_load((ROOT / "recipes" / "demo.yaml").read_text())
    raw["bonds"][1]["pseudo"] = [{"seed": "text", "partners": ["audio"], "miner": "audio_txt"}, {"seed": "audio", "k": 0}]
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw)
    msg = str(info.value)
    assert "bonds.1.pseudo.1.k" in msg and "bonds.1.pseudo.0.miner: 'audio_txt'" in msg
    raw["bonds"][1]["pseudo"] = [{"seed": "text", "partners": ["audio"]}, {"seed": "audio", "partners": ["text"]}]
    with pytest.raises(RecipeError, match="one member each"):  # the demo's mixture is 3
        validate_recipe(raw)
    raw["bonds"][1].pop("mixture")
    assert len(validate_recipe(raw).bonds[1].pseudo) == 2


def test_a_closed_form_head_fits_all_pseudo_pairs_pooled(spaces, small_world) -> None:
    """`projector: auto` fits Procrustes beside the MLP mixture: on pseudo datasets it fits every
    mined pair at once (one map, not one member per dataset)."""
    from spacebind.bonds.linear import fit_procrustes

    unified, audio_text, caches = spaces
    pseudo = [PseudoDataset(seed="text", partners=["audio"]), PseudoDataset(seed="audio", partners=["text"])]
    head, _ = train_head(audio_text, unified, caches, small_world, projector="procrustes", pseudo=pseudo,
                         miner="world_audio_text", pairing="all", progress=False)
    pairs = [pseudo_pairs(spec, audio_text, unified, caches, small_world, "train", "world_audio_text")
             for spec in pseudo]
    pooled = fit_procrustes(torch.cat([x for x, _, _ in pairs]), torch.cat([y for _, y, _ in pairs]))
    torch.testing.assert_close(head.weight, pooled.weight)
