"""A routed space's channel: each pair specialist's own embedding appended with weight κ, checked
against the formula and the rankings it must keep, and κ chosen on val (`choose_channels`): a
specialist better than the mixture keeps ranking its pair, a worse one drops out, a tie keeps the
prior."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from memory_cache import MemoryCache

from spacebind import Dataset, Space
from spacebind.bonds.lambdas import CHANNEL_PRIOR, choose_channels
from spacebind.bonds.linear import LinearMap
from spacebind.bonds.route import RoutedSpace
from spacebind.bonds.router import mix
from spacebind.cache import CacheSet
from spacebind.errors import InputError
from spacebind.io.datasets import Item

DIM = 16
MODS = ("image", "text", "audio")


def identity() -> LinearMap:
    head = LinearMap(DIM, DIM)
    with torch.no_grad():
        head.weight.copy_(torch.eye(DIM))
    return head.eval()


def leaf(name: str, modalities: tuple[str, ...]) -> Space:
    return Space.from_encoders(name, {m: (lambda xs: torch.zeros(len(xs), DIM)) for m in modalities}, dim=DIM)


def routed_space() -> RoutedSpace:
    """Target T (image, text, audio: every modality, so no specialist) with the specialists IT
    (image, text) and AT (audio, text) remapped by identity heads."""
    it, at = leaf("IT", ("image", "text")), leaf("AT", ("audio", "text"))
    return RoutedSpace(leaf("T", MODS), [it, at], {"IT": identity(), "AT": identity()})


def unit(n: int, g: torch.Generator) -> torch.Tensor:
    return F.normalize(torch.randn(n, DIM, generator=g), dim=-1)


def leaf_embeddings(n: int = 5, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return {m: {"T": unit(n, g), **({"IT": unit(n, g)} if m != "audio" else {}),
                **({"AT": unit(n, g)} if m != "image" else {})} for m in MODS}


def test_channel_leaves_are_the_pair_specialists() -> None:
    space = routed_space()
    assert [leaf.name for leaf in space.channel_leaves()] == ["IT", "AT"]  # T covers every modality
    with pytest.raises(InputError, match="'T' cannot carry a channel; the pair specialists that can: IT, AT"):
        space.with_channels({"T": 0.5})
    with pytest.raises(InputError, match="κ of 'IT' is 1.0; expected a value in \\[0, 1\\)"):
        space.with_channels({"IT": 1.0})
    with pytest.raises(InputError, match="routed space: it has no λ"):
        space.with_channels({"IT": 0.5}).with_lambdas({"text": 0.5})


def test_channel_similarities_follow_the_formula_and_keep_other_rankings() -> None:
    space = routed_space()
    leaves = leaf_embeddings()
    kappa = 0.7
    channelled = space.with_channels({"IT": kappa})
    assert channelled.dim == 2 * DIM and channelled.blocks == (DIM, DIM) and space.dim == DIM
    assert channelled.formula().endswith(" ⊕ IT")
    routed = {m: space.combine(m, leaves[m]) for m in MODS}
    fused = {m: channelled.combine(m, leaves[m]) for m in MODS}
    for m in MODS:
        torch.testing.assert_close(fused[m].norm(dim=-1), torch.ones(5))
    # a pair IT covers: (1 − κ)·routed + κ·IT's own similarities
    want = (1 - kappa) * routed["image"] @ routed["text"].T + kappa * leaves["image"]["IT"] @ leaves["text"]["IT"].T
    torch.testing.assert_close(fused["image"] @ fused["text"].T, want)
    # audio has no channel: its similarities to text are the routed ones, scaled, so every ranking is kept
    torch.testing.assert_close(fused["audio"] @ fused["text"].T, (1 - kappa) ** 0.5 * routed["audio"] @ routed["text"].T)
    # κ → 1 ranks image↔text as IT does
    near_one = space.with_channels({"IT": 0.99999})
    sims = near_one.combine("image", leaves["image"]) @ near_one.combine("text", leaves["text"]).T
    assert torch.equal(sims.argmax(dim=1), (leaves["image"]["IT"] @ leaves["text"]["IT"].T).argmax(dim=1))
    # κ = 0 is OmniBind's formula, zero padded; the uniform mixture keeps the channel
    padded = space.with_channels({"IT": 0.0, "AT": 0.0})
    for m in MODS:
        out = padded.combine(m, leaves[m])
        torch.testing.assert_close(out[:, :DIM], routed[m], rtol=0, atol=0)
        assert torch.count_nonzero(out[:, DIM:]) == 0
    assert channelled.uniform().channels == {"IT": kappa}
    # the channel parts apply to any mixture of the candidates (the benchmark's domain oracle uses them)
    for m in MODS:
        candidates = channelled.candidates(m, leaves[m])
        uniform = torch.full(candidates.shape[:2], 1 / candidates.shape[1])
        torch.testing.assert_close(channelled.with_channel_parts(m, mix(candidates, uniform), leaves[m]),
                                   channelled.uniform().combine(m, leaves[m]))


def world(n_val: int = 60, seed: int = 1, it_noise: float = 0.0, at_noise: float = 5.0):
    """Val items with image, text and audio. The target T aligns audio and text (not image); IT
    aligns image and text up to `it_noise`; AT's audio and text share `1/at_noise` of a direction."""
    g = torch.Generator().manual_seed(seed)
    items, table = [], {"T": {m: {} for m in MODS}, "IT": {"image": {}, "text": {}}, "AT": {"audio": {}, "text": {}}}
    for i in range(n_val):
        items.append(Item(f"v{i}", "val", None, {m: f"v{i}.{m}" for m in MODS}, {}))
        u, d, a = (F.normalize(torch.randn(DIM, generator=g), dim=-1) for _ in range(3))
        noise = lambda scale: scale * F.normalize(torch.randn(DIM, generator=g), dim=-1)  # noqa: E731
        table["T"]["text"][f"v{i}"] = F.normalize(u + 0.6 * d, dim=-1)
        table["T"]["audio"][f"v{i}"] = F.normalize(u + noise(0.3), dim=-1)
        table["T"]["image"][f"v{i}"] = F.normalize(torch.randn(DIM, generator=g), dim=-1)
        table["IT"]["image"][f"v{i}"] = F.normalize(d + noise(it_noise), dim=-1)
        table["IT"]["text"][f"v{i}"] = F.normalize(d + noise(it_noise), dim=-1)
        table["AT"]["audio"][f"v{i}"] = F.normalize(a + noise(at_noise), dim=-1)
        table["AT"]["text"][f"v{i}"] = F.normalize(a + noise(at_noise), dim=-1)
    caches = CacheSet({name: MemoryCache(t) for name, t in table.items()})
    return routed_space(), caches, Dataset.of_items(Path("."), items, classes=[])


def test_val_keeps_a_better_specialist_and_drops_a_worse_one(tmp_path: Path) -> None:
    space, caches, dataset = world()
    chosen = choose_channels(space, caches, dataset)
    record = chosen.choices["channels"]["specialists"]
    # IT ranks image↔text perfectly where the mixture does not: it keeps its pair at the prior
    assert record["IT"]["kappa"] == {"IT": CHANNEL_PRIOR}
    # AT's own audio↔text is weak, the mixture's (through T) good: AT's κ falls, beyond the noise
    assert record["AT"]["kappa"]["AT"] <= 0.2 and record["AT"]["confidence"] >= 0.9
    assert chosen.channels["IT"] == CHANNEL_PRIOR and chosen.channels.get("AT", 0.0) <= 0.2
    assert "⊕ IT" in chosen.formula() and chosen.name == chosen.formula()  # a default name follows the channel
    named = RoutedSpace(space.base, space.experts, space.heads, name="mine", channels={"IT": 0.5})
    assert named.with_channels(None).name == "mine"
    assert set(record["IT"]["margins"]) == {"image→text R@1", "text→image R@1"}
    card = (chosen.save(tmp_path / "fused") / "README.md").read_text()
    assert "channel of IT (text, image) on the val split: κ IT 0.999; kept the prior 0.999" in card
    assert f"channel of AT (text, audio) on the val split: κ AT {record['AT']['kappa']['AT']:g}; moved from" in card


def test_a_tie_keeps_the_prior() -> None:
    # AT as good as the mixture on audio↔text (both perfect): no κ beats the prior, nothing moves
    space, caches, dataset = world(at_noise=0.0)
    for name in ("text", "audio"):
        caches.caches["AT"].table[name] = dict(caches.caches["T"].table["audio"])
    chosen = choose_channels(space, caches, dataset)
    assert chosen.channels == {"IT": CHANNEL_PRIOR, "AT": CHANNEL_PRIOR}
    assert chosen.choices["channels"]["specialists"]["AT"]["confidence"] == 0.0


def test_without_val_items_of_a_specialists_pair_the_space_is_unchanged() -> None:
    space, caches, dataset = world()
    empty = Dataset.of_items(Path("."), [Item("x", "train", None, {"text": "x"}, {})], classes=[])
    assert choose_channels(space, caches, empty) is space


def test_presets_hold_the_channels_kappa_only() -> None:
    space = routed_space().with_channels({"IT": 0.999, "AT": 0.1})
    assert space.settings() == ["channel:IT", "channel:AT"] and space.setting_value("channel:AT") == 0.1
    with pytest.raises(InputError, match="has no parameter 'channel:T'"):
        space.setting_value("channel:T")
    tuned = space.with_presets({"best:image-text": {"channel:IT": 0.5}})
    assert tuned.with_lambdas("best:image-text").channels == {"IT": 0.5, "AT": 0.1}
    assert tuned.with_lambdas({"channel:AT": 0.3}).presets == tuned.presets  # same channel leaves: presets kept
    assert tuned.with_channels({"IT": 0.5}).presets == {}  # another layout: they no longer apply
    with pytest.raises(InputError, match="no preset 'nope'; known: best:image-text"):
        tuned.with_lambdas("nope")
    for bad in ({"text": 0.5}, {"channel:T": 0.5}):
        with pytest.raises(InputError, match="it may set only the channel's κ \\(channel:IT, channel:AT\\)"):
            space.with_presets({"x": bad})
