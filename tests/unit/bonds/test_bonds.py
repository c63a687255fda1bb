"""Combination and displacement bonds follow the FreeBind formulas exactly."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from toy_experts import table_expert

from spacebind.bonds.bind import BoundSpace
from spacebind.errors import InputError
from spacebind.space import Space


class UnitLinear(nn.Module):
    """A fixed linear map with unit-norm outputs (stands in for a trained projector)."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x @ self.w, dim=-1)


class Mixture(nn.Module):
    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)


def leaf_embeddings(space: Space, modality: str, n: int = 5) -> dict[str, torch.Tensor]:
    inputs = [str(i) for i in range(n)]
    return {e.name: e.embed_loaded(modality, inputs) for e in space.leaves_for(modality)}


def test_combination_formula_per_modality() -> None:
    u = table_expert("U", 6, ("text", "image", "audio"), 0)
    e = table_expert("E", 4, ("text", "audio", "point"), 1)
    head = UnitLinear(torch.randn(4, 6, generator=torch.Generator().manual_seed(2)))
    bound = BoundSpace(u, [e], "combination", {"E": head}, lambdas={"audio": 0.8, "text": 0.3})
    assert bound.dim == 6 and bound.modalities == ("text", "image", "audio", "point")
    for m, lam in [("audio", 0.8), ("text", 0.3)]:
        leaf = leaf_embeddings(bound, m)
        want = F.normalize((1 - lam) * leaf["U"] + lam * head(leaf["E"]), dim=-1)
        torch.testing.assert_close(bound.combine(m, leaf), want)
    leaf = leaf_embeddings(bound, "image")
    torch.testing.assert_close(bound.combine("image", leaf), leaf["U"])  # only in U: unchanged
    leaf = leaf_embeddings(bound, "point")
    torch.testing.assert_close(bound.combine("point", leaf), head(leaf["E"]))  # only in E: projected


def test_displacement_formula_per_modality() -> None:
    u = table_expert("U", 6, ("text", "image", "audio"), 0)
    e = table_expert("E", 4, ("text", "image"), 1)
    head = UnitLinear(torch.randn(6, 4, generator=torch.Generator().manual_seed(3)))
    bound = BoundSpace(u, [e], "displacement", {"E": head}, lambdas={"image": 0.2, "text": 0.2})
    assert bound.dim == 4
    leaf = leaf_embeddings(bound, "image")
    want = F.normalize(0.2 * head(leaf["U"]) + 0.8 * leaf["E"], dim=-1)
    torch.testing.assert_close(bound.combine("image", leaf), want)
    leaf = leaf_embeddings(bound, "audio")
    torch.testing.assert_close(bound.combine("audio", leaf), head(leaf["U"]))  # only in U: P̄(u)


def test_parallel_combination_averages_all_projectors() -> None:
    u = table_expert("U", 6, ("text", "audio"), 0)
    e1 = table_expert("E1", 4, ("text", "audio"), 1)
    e2 = table_expert("E2", 5, ("text", "audio"), 2)
    g = torch.Generator().manual_seed(4)
    h1 = Mixture([UnitLinear(torch.randn(4, 6, generator=g)) for _ in range(2)])
    h2 = Mixture([UnitLinear(torch.randn(5, 6, generator=g)) for _ in range(2)])
    bound = BoundSpace(u, [e1, e2], "combination", {"E1": h1, "E2": h2}, lambdas={"audio": 0.5})
    leaf = leaf_embeddings(bound, "audio")
    pbar = F.normalize(torch.stack([m(leaf["E1"]) for m in h1.members] + [m(leaf["E2"]) for m in h2.members]).mean(0), dim=-1)
    torch.testing.assert_close(bound.combine("audio", leaf), F.normalize(0.5 * leaf["U"] + 0.5 * pbar, dim=-1))
    assert bound.formula() == "U + c(E1 ∥ E2)"


def test_sequential_bond_encodes_each_expert_once_and_matches_combine() -> None:
    calls: dict[str, int] = {}

    def counting(name: str, dim: int, seed: int, modalities: tuple[str, ...]) -> Space:
        table = torch.randn(64, dim, generator=torch.Generator().manual_seed(seed))

        def enc(xs: list[str]) -> torch.Tensor:
            calls[name] = calls.get(name, 0) + 1
            return table[[int(x) for x in xs]]

        return Space.from_encoders(name, {m: enc for m in modalities}, dim=dim)

    u = counting("U", 6, 0, ("text", "image", "audio"))
    e1 = counting("E1", 4, 1, ("text", "image"))
    e2 = counting("E2", 3, 2, ("text", "audio"))
    d = BoundSpace(u, [e1], "displacement", {"E1": UnitLinear(torch.randn(6, 4))}, lambdas={"text": 0.2})
    c = BoundSpace(d, [e2], "combination", {"E2": UnitLinear(torch.randn(3, 4))}, lambdas={"text": 0.4})
    assert c.formula() == "(U + d(E1)) + c(E2)" and c.dim == 4
    assert [leaf.name for leaf in c.leaves()] == ["U", "E1", "E2"]
    out = c.encode("text", ["1", "2", "3"])
    assert calls == {"U": 1, "E1": 1, "E2": 1}
    assert out.shape == (3, 4)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(out, c.combine("text", leaf_embeddings(c, "text", 4))[1:])


def test_bond_rejects_bad_arguments() -> None:
    u = table_expert("U", 6, ("text",), 0)
    e = table_expert("E", 4, ("text",), 1)
    head = UnitLinear(torch.randn(4, 6))
    with pytest.raises(InputError, match="unknown bond 'combo'"):
        BoundSpace(u, [e], "combo", {"E": head})
    with pytest.raises(InputError, match="lambda for 'text' is 1.5"):
        BoundSpace(u, [e], "combination", {"E": head}, lambdas={"text": 1.5})
    with pytest.raises(InputError, match="no projector for member"):
        BoundSpace(u, [e], "combination", {})
    with pytest.raises(InputError, match="one expert"):
        BoundSpace(u, [e, table_expert("F", 4, ("text",), 2)], "displacement", {"E": head, "F": head})
    bound = BoundSpace(u, [e], "combination", {"E": head})
    with pytest.raises(InputError, match="unknown modality 'audio'"):
        bound.encode("audio", ["1"])


def test_bind_refuses_an_unknown_option_or_projector_before_embedding_anything() -> None:
    calls = []
    u = Space.from_encoders("U", {"text": lambda xs: calls.append(xs) or torch.randn(len(xs), 4)}, dim=4)
    with pytest.raises(InputError, match="unknown option 'mixtur'; did you mean 'mixture'"):
        u.bind(u, data="no-such-dataset", mixtur=3)
    with pytest.raises(InputError, match="unknown projector 'mpl'; expected one of auto, linear, mlp"):
        u.bind(u, data="no-such-dataset", projector="mpl")
    assert not calls


def test_a_lambda_of_a_modality_the_bond_does_not_mix_is_refused() -> None:
    from spacebind.bonds.bind import train_bond

    u = table_expert("U", 6, ("text", "audio", "point"), 0)
    e = table_expert("E", 4, ("text", "audio"), 1)
    with pytest.raises(InputError, match=r"lambdas: λ for point, which the bond does not mix; it mixes audio, text"):
        train_bond(u, [e], "combination", None, None, lambdas={"point": 0.7, "audio": 0.4})
    with pytest.raises(InputError, match=r"presets.p: λ for point"):
        train_bond(u, [e], "combination", None, None, presets={"p": {"point": 0.5, "channel:audio": 0.5}})


def test_pbar_plain_mixes_the_mean_as_it_is_and_a_config_without_pbar_loads_as_it_was_saved() -> None:
    """FreeBind renormalises P̄ before mixing ("unit", the default); OmniBind's anchor mixes the
    plain mean ("plain"). Exports saved before P̄ was renormalised have no `pbar`: they load plain."""
    from spacebind.bonds.bind import _check_bond_options

    u = table_expert("U", 6, ("text", "audio"), 0)
    e = table_expert("E", 4, ("text", "audio"), 1)
    g = torch.Generator().manual_seed(5)
    head = Mixture([UnitLinear(torch.randn(4, 6, generator=g)) for _ in range(3)])
    leaf = leaf_embeddings(BoundSpace(u, [e], "combination", {"E": head}), "audio")
    mean = torch.stack([m(leaf["E"]) for m in head.members]).mean(0)
    for pbar, pbar_used in (("unit", F.normalize(mean, dim=-1)), ("plain", mean)):
        bound = BoundSpace(u, [e], "combination", {"E": head}, lambdas={"audio": 0.1}, pbar=pbar)
        want = F.normalize(0.9 * leaf["U"] + 0.1 * pbar_used, dim=-1)
        torch.testing.assert_close(bound.combine("audio", leaf), want)
    assert BoundSpace(u, [e], "combination", {"E": head}).kind_config()["pbar"] == "unit"
    plain_config = {"bond": "combination", "lambdas": {}, "name": "x",
                    **BoundSpace(u, [e], "combination", {"E": head}, pbar="plain").kind_config()}
    assert "pbar" not in plain_config
    assert BoundSpace.from_config(plain_config, u, [e], {"E": head}).pbar == "plain"
    _check_bond_options({"presets": {"p": {"audio": 0.2}}, "name": "mine", "pbar": "plain"})  # bind() passes them on
    with pytest.raises(InputError, match="pbar 'mean': expected one of unit, plain"):
        BoundSpace(u, [e], "combination", {"E": head}, pbar="mean")
