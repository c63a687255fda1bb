"""Relative representations (ASIF) as a training-free projector: the formula, the ASIF score
identity, rebuilding from config, and a fused checkpoint round trip."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from toy_experts import multi_expert

import spacebind
from spacebind.bonds.bind import BoundSpace
from spacebind.bonds.heads import head_from_config
from spacebind.bonds.relative import fit_relative, sparsify
from spacebind.errors import InputError


def unit_rows(n: int, d: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_sparsify_keeps_the_top_k_clamped_and_powered() -> None:
    r = torch.tensor([[0.9, -0.5, 0.3, 0.6], [-0.2, -0.1, -0.3, 0.5]])
    out = sparsify(r, k=2, power=2.0)
    torch.testing.assert_close(out, torch.tensor([[0.81, 0.0, 0.0, 0.36], [0.0, 0.0, 0.0, 0.25]]))


def test_relative_map_is_the_asif_score_through_the_anchor_pairing() -> None:
    src, tgt = unit_rows(40, 6, 0), unit_rows(40, 9, 1)
    head = fit_relative(src, tgt, anchors=25, k=5, power=3.0, seed=2)
    x, y = unit_rows(7, 6, 3), unit_rows(11, 9, 4)
    a_s, a_t = head.src_anchors, head.tgt_anchors
    # the formula by hand: n(topk₅(x Aₛᵀ)³ Aₜ)
    rel = x @ a_s.T
    keep = rel >= rel.topk(5, dim=1).values[:, -1:]
    by_hand = F.normalize(torch.where(keep, rel.clamp_min(0) ** 3, 0.0) @ a_t, dim=-1)
    torch.testing.assert_close(head(x), by_hand)
    # ASIF compares x's sparse relative vector with y's relative vector against the partner anchors
    asif = head.relative(x) @ (y @ a_t.T).T
    torch.testing.assert_close(head(x) @ y.T, asif / (head.relative(x) @ a_t).norm(dim=1, keepdim=True))
    # anchors are paired rows of the fitting data
    rows = torch.cdist(a_s, src).argmin(dim=1)
    torch.testing.assert_close(a_t, tgt[rows])
    assert head.config == {"type": "relative", "in_dim": 6, "out_dim": 9, "anchors": 25, "k": 5, "power": 3.0}


def test_relative_map_retrieves_the_partner_of_a_noisy_anchor() -> None:
    src = unit_rows(300, 16, 5)
    tgt = F.normalize(src @ torch.randn(16, 12, generator=torch.Generator().manual_seed(6)), dim=-1)
    head = fit_relative(src, tgt, anchors=300, k=8)
    queries = F.normalize(src[:50] + 0.05 * unit_rows(50, 16, 7), dim=-1)
    assert ((head(queries) @ tgt.T).argmax(dim=1) == torch.arange(50)).float().mean() > 0.9


def test_relative_rebuilds_from_config_and_rejects_bad_input() -> None:
    head = fit_relative(unit_rows(30, 4, 0), unit_rows(30, 5, 1), anchors=10, k=3)
    twin = head_from_config(head.config)
    twin.load_state_dict(head.state_dict(), strict=True)
    x = unit_rows(6, 4, 2)
    torch.testing.assert_close(twin(x), head(x), rtol=0, atol=0)
    with pytest.raises(InputError, match="paired"):
        fit_relative(unit_rows(3, 4, 0), unit_rows(4, 4, 0))
    with pytest.raises(InputError, match="k ≥ 1"):
        fit_relative(unit_rows(3, 4, 0), unit_rows(3, 4, 0), k=0)


def test_a_relative_bond_survives_a_checkpoint_round_trip(tmp_path: Path) -> None:
    u, e = multi_expert("U", 8, ("text", "image"), 0), multi_expert("E", 6, ("text", "image"), 1)
    head = fit_relative(unit_rows(50, 6, 3), unit_rows(50, 8, 4), anchors=20, k=4)
    space = BoundSpace(u, [e], "combination", {"E": head}, lambdas={"text": 0.3})
    loaded = spacebind.load(space.save(tmp_path / "ckpt"), experts={x.name: x for x in space.leaves()})
    texts = ["a small red cube", "a huge blue cone"]
    torch.testing.assert_close(loaded.encode("text", texts), space.encode("text", texts), rtol=0, atol=0)
    assert loaded.heads["E"].config == head.config
