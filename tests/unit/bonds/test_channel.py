"""A bond's channel: the projected side's own embeddings appended with weight κ per modality
(`[√(1 − κ)·e, √κ·r]`), checked against the formula, the rankings it must keep, and a round trip."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from toy_experts import multi_expert

import spacebind
from spacebind.bonds.bind import BoundSpace
from spacebind.bonds.projector import MLPProjector
from spacebind.errors import InputError

TEXTS = ["a small red cube", "a huge blue cone", "tiny green torus", "a faint hound"]


def spaces() -> tuple[BoundSpace, dict[str, torch.Tensor]]:
    """U (text, image) + c(E (text, audio)) with an MLP head, and leaf embeddings of 4 items."""
    torch.manual_seed(0)
    u = multi_expert("U", 8, ("text", "image", "audio"), 0)
    e = multi_expert("E", 6, ("text", "audio"), 1)
    head = MLPProjector(6, 8, hidden=16).eval()
    space = BoundSpace(u, [e], "combination", {"E": head}, lambdas={"text": 0.3, "audio": 0.6})
    return space, {"U": F.normalize(torch.randn(4, 8), dim=-1), "E": F.normalize(torch.randn(4, 6), dim=-1)}


def test_a_channel_at_zero_is_freebinds_formula_zero_padded() -> None:
    space, leaves = spaces()
    padded = BoundSpace(space.base, space.experts, "combination", space.heads, lambdas=space.lambdas, channels={})
    assert padded.dim == 8 + 6 and space.dim == 8
    for m in ("text", "audio", "image"):
        out = padded.combine(m, leaves)
        torch.testing.assert_close(out[:, :8], space.combine(m, leaves), rtol=0, atol=0)
        assert torch.count_nonzero(out[:, 8:]) == 0


def test_channel_similarities_follow_the_formula_and_keep_the_bonds_rankings() -> None:
    space, leaves = spaces()
    kappa = {"text": 0.4, "audio": 0.7}
    channelled = BoundSpace(space.base, space.experts, "combination", space.heads, lambdas=space.lambdas, channels=kappa)
    fused = {m: channelled.combine(m, leaves) for m in ("text", "audio", "image")}
    bond = {m: space.combine(m, leaves) for m in ("text", "audio", "image")}
    x = {m: space.experts[0].combine(m, leaves) for m in ("text", "audio")}
    for m in fused:
        torch.testing.assert_close(fused[m].norm(dim=-1), torch.ones(4))
    # two modalities with the channel: the κ-weighted ensemble of the bond and the expert
    want = (0.6 * 0.3) ** 0.5 * bond["audio"] @ bond["text"].T + (0.7 * 0.4) ** 0.5 * x["audio"] @ x["text"].T
    torch.testing.assert_close(fused["audio"] @ fused["text"].T, want)
    # image has no channel: its similarities to text are the bond's, scaled, so every ranking is the bond's
    torch.testing.assert_close(fused["image"] @ fused["text"].T, 0.6 ** 0.5 * bond["image"] @ bond["text"].T)
    assert torch.equal((fused["image"] @ fused["text"].T).argsort(dim=1), (bond["image"] @ bond["text"].T).argsort(dim=1))
    # κ = 1 on both: the expert's own similarities exactly
    full = channelled.with_lambdas({}, {"text": 1.0, "audio": 1.0})
    torch.testing.assert_close(full.combine("audio", leaves) @ full.combine("text", leaves).T, x["audio"] @ x["text"].T)


def test_class_centres_keep_each_part_so_the_channel_leaves_other_zero_shot_rankings_alone() -> None:
    from spacebind.evaluation.metrics import class_embeddings

    space, _ = spaces()
    g = torch.Generator().manual_seed(2)
    leaves = {"U": F.normalize(torch.randn(12, 8, generator=g), dim=-1), "E": F.normalize(torch.randn(12, 6, generator=g), dim=-1)}
    image = F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    plain = class_embeddings(space.combine("text", leaves), 4)  # 4 classes × 3 templates
    for kappa in (0.2, 0.9):
        channelled = BoundSpace(space.base, space.experts, "combination", space.heads, lambdas=space.lambdas,
                                channels={"text": kappa})
        centres = class_embeddings(channelled.combine("text", leaves), 4, channelled.blocks)
        assert channelled.blocks == (8, 6)
        torch.testing.assert_close(centres[:, :8].norm(dim=-1), torch.full((4,), (1 - kappa) ** 0.5))
        padded_image = torch.cat([image, torch.zeros(5, 6)], dim=-1)
        torch.testing.assert_close(padded_image @ centres.T, (1 - kappa) ** 0.5 * image @ plain.T)


def test_a_displacement_channel_carries_the_base() -> None:
    torch.manual_seed(1)
    u = multi_expert("U", 8, ("text", "image"), 0)
    e = multi_expert("E", 6, ("text",), 1)
    space = BoundSpace(u, [e], "displacement", {"E": MLPProjector(8, 6, hidden=16).eval()}, channels={"image": 0.5})
    leaves = {"U": F.normalize(torch.randn(3, 8), dim=-1), "E": F.normalize(torch.randn(3, 6), dim=-1)}
    assert space.dim == 6 + 8 and space.channel_modalities() == ["text", "image"]
    out = space.combine("image", leaves)
    torch.testing.assert_close(out[:, 6:], 0.5 ** 0.5 * u.combine("image", leaves))
    assert "⊕ U" in space.formula()


def test_channel_weights_are_checked_and_only_a_channelled_space_takes_them() -> None:
    space, _ = spaces()
    with pytest.raises(InputError, match="no channel"):
        space.with_lambdas({}, {"audio": 0.5})
    with pytest.raises(InputError, match="channel weight for 'audio' is 1.5"):
        BoundSpace(space.base, space.experts, "combination", space.heads, channels={"audio": 1.5})


def test_a_channelled_bond_survives_a_checkpoint_round_trip(tmp_path: Path) -> None:
    space, _ = spaces()
    channelled = BoundSpace(space.base, space.experts, "combination", space.heads, lambdas=space.lambdas,
                            channels={"text": 0.4, "audio": 0.7}, name="fused")
    out = channelled.save(tmp_path / "ckpt")
    loaded = spacebind.load(out, experts={e.name: e for e in channelled.leaves()})
    assert loaded.dim == 14 and loaded.channels == {"text": 0.4, "audio": 0.7}
    for m, inputs in (("text", TEXTS), ("image", [torch.rand(8, 8, 3).numpy()])):
        torch.testing.assert_close(loaded.encode(m, inputs), channelled.encode(m, inputs), rtol=0, atol=0)
    assert "channel text 0.4, audio 0.7" in (out / "README.md").read_text()


def test_a_preset_carries_the_channels_kappa_and_loads_by_name(tmp_path: Path) -> None:
    space, leaves = spaces()
    channelled = BoundSpace(space.base, space.experts, "combination", space.heads, lambdas=space.lambdas,
                            channels={"text": 0.999, "audio": 0.999}, name="fused",
                            presets={"zero_shot": {"audio": 0.8, "channel:audio": 0.3, "channel:text": 0.2}})
    tuned = channelled.with_lambdas("zero_shot")
    assert tuned.lambdas == {"text": 0.3, "audio": 0.8} and tuned.channels == {"text": 0.2, "audio": 0.3}
    want = channelled.with_lambdas({"audio": 0.8}, {"text": 0.2, "audio": 0.3})
    torch.testing.assert_close(tuned.combine("audio", leaves), want.combine("audio", leaves), rtol=0, atol=0)
    assert not torch.allclose(tuned.combine("audio", leaves), channelled.combine("audio", leaves))
    out = channelled.save(tmp_path / "ckpt")
    loaded = spacebind.load(out, experts={e.name: e for e in channelled.leaves()}, preset="zero_shot")
    assert loaded.channels == {"text": 0.2, "audio": 0.3} and loaded.lambdas == tuned.lambdas
    torch.testing.assert_close(loaded.encode("text", TEXTS), tuned.encode("text", TEXTS), rtol=0, atol=0)
    assert "- `zero_shot`: audio 0.8, channel:audio 0.3, channel:text 0.2" in (out / "README.md").read_text()


def test_preset_kappas_are_checked_and_need_a_channel() -> None:
    space, _ = spaces()
    with pytest.raises(InputError, match="channel weight for 'audio' is 1.5"):
        BoundSpace(space.base, space.experts, "combination", space.heads, presets={"p": {"channel:audio": 1.5}})
    plain = BoundSpace(space.base, space.experts, "combination", space.heads, presets={"p": {"channel:audio": 0.5}})
    with pytest.raises(InputError, match=r"no channel to weigh \(κ given for audio\)"):
        plain.with_lambdas("p")


def test_unibind_centres_keep_each_part_of_a_channelled_space() -> None:
    from spacebind.unibind.centres import centres_from

    g = torch.Generator().manual_seed(4)

    def rows(n: int, kappa: float) -> torch.Tensor:  # unit rows [√(1 − κ)·b, √κ·r] with parts of widths 8 and 6
        b, r = F.normalize(torch.randn(n, 8, generator=g), dim=-1), F.normalize(torch.randn(n, 6, generator=g), dim=-1)
        return torch.cat([(1 - kappa) ** 0.5 * b, kappa ** 0.5 * r], dim=-1)

    prompts, means = rows(3, 0.3), rows(3, 0.3)
    descriptions = [rows(5, 0.3) for _ in range(3)]
    centres = centres_from(prompts, descriptions, means, n=2, mix=0.5, blocks=(8, 6))
    torch.testing.assert_close(centres[:, :8].norm(dim=-1), torch.full((3,), 0.7 ** 0.5))
    torch.testing.assert_close(centres.norm(dim=-1), torch.ones(3))
    whole = centres_from(prompts, descriptions, means, n=2, mix=0.5)
    assert not torch.allclose(centres, whole)  # the whole-vector mean lets the parts' norms drift


def test_blocks_follow_nested_bonds_so_every_modality_fills_each_block_or_none_of_it() -> None:
    """A bond on a channelled space keeps the inner blocks: `(U + c(E1) ⊕ E1) + c(E2) ⊕ E2` is
    (U, E1, E2), not (U + E1, E2); so are a displacement's and a routed target's. Images (carried by
    no channel) fill the first block only, text all three, points (E1's) the first two."""
    import numpy as np

    from spacebind.bonds.route import RoutedSpace

    torch.manual_seed(0)
    u = multi_expert("U", 6, ("text", "image", "point"), 0)
    e1, e2 = multi_expert("E1", 5, ("text", "point"), 1), multi_expert("E2", 4, ("text",), 2)
    inner = BoundSpace(u, [e1], "combination", {"E1": MLPProjector(5, 6, hidden=8).eval()}, channels={"text": 0.5, "point": 0.5})
    outer = BoundSpace(inner, [e2], "combination", {"E2": MLPProjector(4, 11, hidden=8).eval()}, channels={"text": 0.5})
    assert inner.blocks == (6, 5) and outer.blocks == (6, 5, 4)
    plain = BoundSpace(inner, [e2], "combination", {"E2": MLPProjector(4, 11, hidden=8).eval()})
    assert plain.blocks == (6, 5)
    displaced = BoundSpace(inner, [e2], "displacement", {"E2": MLPProjector(11, 4, hidden=8).eval()}, channels={"text": 0.5})
    assert displaced.blocks == (4, 6, 5)
    routed = RoutedSpace(inner, [e2], {"E2": MLPProjector(4, 11, hidden=8).eval()})
    assert routed.blocks == (6, 5)
    rng = np.random.default_rng(0)
    inputs = {"text": ["a red kettle", "two dogs"], "image": [rng.random((4, 4, 3)) for _ in range(2)],
              "point": [rng.random((32, 3)).astype(np.float32) for _ in range(2)]}
    filled = {"text": [True, True, True], "image": [True, False, False], "point": [True, True, False]}
    for m, expected in filled.items():
        parts = outer.encode(m, inputs[m]).split(list(outer.blocks), dim=-1)
        assert [bool((p.abs() > 0).all()) for p in parts] == expected, m
        assert [bool((p.abs() > 0).any()) for p in parts] == expected, m
