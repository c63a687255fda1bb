"""Projector heads: the reference MLP, the training-free baselines, mixtures, rebuilding from
config, and the InfoNCE loss."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from spacebind.bonds.heads import head_from_config
from spacebind.bonds.linear import LinearMap, fit_least_squares, fit_procrustes
from spacebind.bonds.mixture import ProjectorMixture
from spacebind.bonds.projector import MLPProjector
from spacebind.errors import CheckpointError, InputError
from spacebind.training.losses import info_nce


def unit_rows(n: int, d: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_mlp_projector_has_the_reference_shape_and_init() -> None:
    torch.manual_seed(0)
    head = MLPProjector(24, 16, hidden=32)
    assert [type(m).__name__ for m in head.net] == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert head.net[0].weight.shape == (32, 24) and head.net[3].weight.shape == (16, 32)
    assert head.net[0].bias.abs().sum() == 0 and head.net[3].bias.abs().sum() == 0
    bound = math.sqrt(6 / (24 + 32))  # Xavier-uniform limit of the first layer
    assert bound * 0.9 < head.net[0].weight.abs().max() <= bound
    assert head.config == {"type": "mlp", "in_dim": 24, "out_dim": 16, "hidden": 32}
    x = torch.randn(6, 24)
    out = head.eval()(x)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(6))
    # eval mode uses running statistics: a row's output does not depend on the rest of the batch
    torch.testing.assert_close(head(x[:2]), out[:2])


def test_info_nce_matches_a_hand_computation() -> None:
    a = F.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8]]), dim=-1)
    b = F.normalize(torch.tensor([[0.8, 0.6], [0.0, 1.0]]), dim=-1)
    # similarities a·b: [[0.8, 0], [0.96, 0.8]], scale 10
    row = (-math.log(math.exp(8) / (math.exp(8) + 1)) - math.log(math.exp(8) / (math.exp(9.6) + math.exp(8)))) / 2
    col = (-math.log(math.exp(8) / (math.exp(8) + math.exp(9.6))) - math.log(math.exp(8) / (1 + math.exp(8)))) / 2
    assert info_nce(a, b, 10.0, symmetric=False).item() == pytest.approx(row, rel=1e-5)
    assert info_nce(a, b, 10.0).item() == pytest.approx((row + col) / 2, rel=1e-5)
    scale = torch.tensor(10.0, requires_grad=True)
    info_nce(a, b, scale).backward()
    assert scale.grad is not None and scale.grad.item() != 0


def test_procrustes_recovers_a_rotation_exactly() -> None:
    x = unit_rows(200, 8, 1)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(2)))
    head = fit_procrustes(x, x @ q)
    torch.testing.assert_close(head.weight, q, atol=1e-5, rtol=0)
    torch.testing.assert_close(head(x), x @ q, atol=1e-5, rtol=0)
    assert head.config == {"type": "procrustes", "in_dim": 8, "out_dim": 8}


@pytest.mark.parametrize(("din", "dout"), [(8, 5), (5, 8)])
def test_procrustes_is_the_semi_orthogonal_optimum(din: int, dout: int) -> None:
    x, y = unit_rows(100, din, 3), unit_rows(100, dout, 4)
    w = fit_procrustes(x, y).weight.double()
    k = min(din, dout)
    gram = w.T @ w if din > dout else w @ w.T  # the k orthonormal columns (or rows)
    torch.testing.assert_close(gram, torch.eye(k, dtype=torch.float64), atol=1e-5, rtol=0)
    m = x.double().T @ y.double()
    # max over semi-orthogonal W of tr(Wᵀ M) is the nuclear norm of M
    assert torch.trace(w.T @ m).item() == pytest.approx(torch.linalg.svdvals(m).sum().item(), rel=1e-5)


def test_least_squares_solves_the_normal_equations_and_recovers_an_affine_map() -> None:
    x = unit_rows(200, 8, 5)
    g = torch.Generator().manual_seed(6)
    y = torch.randn(200, 5, generator=g)
    lin = fit_least_squares(x, y)
    xa = torch.cat([x, torch.ones(200, 1)], 1).double()
    normal = torch.linalg.solve(xa.T @ xa, xa.T @ y.double()).float()
    torch.testing.assert_close(torch.cat([lin.weight, lin.bias[None]]), normal, atol=1e-5, rtol=0)
    w, b = torch.randn(8, 5, generator=g), torch.randn(5, generator=g)
    exact = fit_least_squares(x, x @ w + b)
    torch.testing.assert_close(exact.weight, w, atol=1e-4, rtol=0)
    torch.testing.assert_close(exact.bias, b, atol=1e-4, rtol=0)
    torch.testing.assert_close(exact(x), F.normalize(x @ w + b, dim=-1), atol=1e-5, rtol=0)
    ridge = fit_least_squares(x, y, ridge=10.0)
    reg = 10.0 * torch.eye(9, dtype=torch.float64)
    reg[-1, -1] = 0
    expected = torch.linalg.solve(xa.T @ xa + reg, xa.T @ y.double()).float()
    torch.testing.assert_close(torch.cat([ridge.weight, ridge.bias[None]]), expected, atol=1e-5, rtol=0)
    assert ridge.weight.norm() < lin.weight.norm()


def test_baselines_reject_unpaired_inputs() -> None:
    with pytest.raises(InputError, match=r"\(10, 4\) and \(9, 3\)"):
        fit_least_squares(torch.randn(10, 4), torch.randn(9, 3))
    with pytest.raises(InputError, match="paired"):
        fit_procrustes(torch.randn(10), torch.randn(10, 3))


def test_mixture_averages_unit_outputs_without_renormalising() -> None:
    torch.manual_seed(0)
    members = [MLPProjector(6, 4, hidden=8).eval() for _ in range(3)]
    mix = ProjectorMixture(members)
    x = torch.randn(5, 6)
    torch.testing.assert_close(mix(x), sum(m(x) for m in members) / 3)
    assert (mix(x).norm(dim=-1) < 1 - 1e-3).all()
    with pytest.raises(InputError, match="at least one member"):
        ProjectorMixture([])


def test_every_head_rebuilds_from_its_config() -> None:
    torch.manual_seed(0)
    mlp = MLPProjector(6, 4, hidden=8)
    mlp.train()(torch.randn(16, 6))  # move the BatchNorm running statistics off their init
    heads = [mlp.eval(), fit_least_squares(torch.randn(20, 6), torch.randn(20, 4)),
             fit_procrustes(torch.randn(20, 6), torch.randn(20, 4))]
    mix = ProjectorMixture([*heads, ProjectorMixture(heads[:2])]).eval()
    x = torch.randn(3, 6)
    for head in [*heads, mix]:
        clone = head_from_config(head.config)
        assert not clone.training and clone.config == head.config
        clone.load_state_dict(head.state_dict(), strict=True)
        torch.testing.assert_close(clone(x), head(x), rtol=0, atol=0)
    assert isinstance(head_from_config({"type": "linear", "in_dim": 2, "out_dim": 3}), LinearMap)


def test_head_from_config_names_what_is_wrong() -> None:
    with pytest.raises(CheckpointError, match="unknown head type 'transformer'"):
        head_from_config({"type": "transformer"})
    with pytest.raises(CheckpointError, match="lacks the field 'hidden'"):
        head_from_config({"type": "mlp", "in_dim": 2, "out_dim": 3})
