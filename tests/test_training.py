"""Projectors, baselines, mixtures, InfoNCE and the resumable trainer."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from spacebind.bonds.baselines import fit_least_squares, fit_procrustes
from spacebind.bonds.heads import head_from_config
from spacebind.bonds.mixture import ProjectorMixture
from spacebind.bonds.projector import MLPProjector
from spacebind.losses import info_nce
from spacebind.training import TrainConfig, recall_at_1, train_mixture, train_projector


def noisy_pairs(n: int = 1200, din: int = 24, dout: int = 16, noise: float = 0.6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(din, dout, generator=g)
    x = F.normalize(torch.randn(n, din, generator=g), dim=-1)
    y = F.normalize(x @ w + noise * torch.randn(n, dout, generator=g) / math.sqrt(dout), dim=-1)
    return x, y


def test_mlp_projector_matches_reference_shape() -> None:
    head = MLPProjector(24, 16, hidden=32)
    kinds = [type(m).__name__ for m in head.net]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert head.net[0].bias.abs().sum() == 0
    bound = math.sqrt(6 / (24 + 32))  # Xavier-uniform
    assert head.net[0].weight.abs().max() <= bound
    out = head.eval()(torch.randn(5, 24))
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(5))


def test_info_nce_matches_hand_computation() -> None:
    a = F.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8]]), dim=-1)
    b = F.normalize(torch.tensor([[0.8, 0.6], [0.0, 1.0]]), dim=-1)
    s = 10.0
    logits = s * a @ b.T
    row = -(torch.log_softmax(logits, 1).diagonal()).mean()
    col = -(torch.log_softmax(logits.T, 1).diagonal()).mean()
    torch.testing.assert_close(info_nce(a, b, s), (row + col) / 2)
    torch.testing.assert_close(info_nce(a, b, s, symmetric=False), row)


def test_procrustes_recovers_a_rotation_and_lstsq_the_normal_equations() -> None:
    g = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    x = F.normalize(torch.randn(200, 8, generator=g), dim=-1)
    head = fit_procrustes(x, x @ q)
    torch.testing.assert_close(head.weight, q, atol=1e-5, rtol=0)
    y = torch.randn(200, 5, generator=g)
    lin = fit_least_squares(x, y)
    xa = torch.cat([x, torch.ones(200, 1)], 1).double()
    normal = torch.linalg.solve(xa.T @ xa, xa.T @ y.double()).float()
    torch.testing.assert_close(torch.cat([lin.weight, lin.bias[None]]), normal, atol=1e-4, rtol=0)
    ridge = fit_least_squares(x, y, ridge=10.0)
    assert ridge.weight.norm() < lin.weight.norm()


def test_heads_rebuild_from_config() -> None:
    mix = ProjectorMixture([MLPProjector(6, 4, hidden=8), fit_procrustes(torch.randn(20, 6), torch.randn(20, 4))]).eval()
    clone = head_from_config(mix.config)
    clone.load_state_dict(mix.state_dict(), strict=True)
    x = torch.randn(3, 6)
    torch.testing.assert_close(clone(x), mix(x))


CFG = TrainConfig(epochs=8, batch_size=128, hidden=64, lr=2e-3, patience=8)


def test_trainer_learns_and_is_deterministic() -> None:
    x, y = noisy_pairs()
    untrained = recall_at_1(MLPProjector(24, 16, hidden=64), x[1000:], y[1000:])
    a = train_projector(x[:1000], y[:1000], val_src=x[1000:], val_tgt=y[1000:], config=CFG, progress=False)
    b = train_projector(x[:1000], y[:1000], val_src=x[1000:], val_tgt=y[1000:], config=CFG, progress=False)
    assert a.best_val_recall > 0.3 > untrained + 0.2
    assert a.best_val_recall == pytest.approx(recall_at_1(a.head, x[1000:], y[1000:]))
    for pa, pb in zip(a.head.state_dict().values(), b.head.state_dict().values()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    assert [h["epoch"] for h in a.history] == list(range(8))


def test_interrupted_training_resumes_to_the_same_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = noisy_pairs()
    kwargs = dict(val_src=x[1000:], val_tgt=y[1000:], config=CFG, progress=False)
    full = train_projector(x[:1000], y[:1000], **kwargs)
    import spacebind.training as training

    real_recall, calls = training.recall_at_1, {"n": 0}

    def dying_recall(*args, **kw):  # the run is killed during epoch 4
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_recall(*args, **kw)

    monkeypatch.setattr(training, "recall_at_1", dying_recall)
    with pytest.raises(KeyboardInterrupt):
        train_projector(x[:1000], y[:1000], checkpoint_dir=tmp_path, **kwargs)
    monkeypatch.setattr(training, "recall_at_1", real_recall)
    resumed = train_projector(x[:1000], y[:1000], checkpoint_dir=tmp_path, **kwargs)
    assert [h["epoch"] for h in resumed.history] == list(range(8))
    for pa, pb in zip(full.head.state_dict().values(), resumed.head.state_dict().values()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=1e-6)
    monkeypatch.setattr(training, "recall_at_1", lambda *a, **k: pytest.fail("a finished run must not retrain"))
    again = train_projector(x[:1000], y[:1000], checkpoint_dir=tmp_path, **kwargs)
    assert again.best_epoch == resumed.best_epoch
    monkeypatch.setattr(training, "recall_at_1", real_recall)
    with pytest.warns(UserWarning, match="starts over"):
        train_projector(x[:1000], y[:1000], checkpoint_dir=tmp_path, **{**kwargs, "config": CFG.model_copy(update={"epochs": 1})})


def test_early_stopping_on_validation_recall() -> None:
    x, y = noisy_pairs(noise=50.0)  # nothing to learn: validation recall stays at chance
    result = train_projector(x[:1000], y[:1000], val_src=x[1000:], val_tgt=y[1000:], progress=False,
                             config=CFG.model_copy(update={"epochs": 40, "patience": 2}))
    assert len(result.history) < 40
    assert len(result.history) - 1 - result.best_epoch == 2


def test_mixture_beats_its_average_member() -> None:
    x, y = noisy_pairs(n=1400, noise=1.2, seed=3)
    mix = train_mixture(x[:1000], y[:1000], n=4, config=CFG, val_src=x[1000:], val_tgt=y[1000:], progress=False)
    members = [recall_at_1(m, x[1000:], y[1000:]) for m in mix.members]
    assert recall_at_1(mix, x[1000:], y[1000:]) > sum(members) / len(members)
    subsets = [torch.arange(0, 500), torch.arange(500, 1000)]
    halves = train_mixture(x[:1000], y[:1000], n=2, config=CFG, subsets=subsets, progress=False)
    assert len(halves.members) == 2
    with pytest.raises(ValueError, match="2 subsets for 3"):
        train_mixture(x, y, n=3, config=CFG, subsets=subsets)
