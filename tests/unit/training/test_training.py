"""The InfoNCE trainer on cached embeddings: learning, determinism, schedule, resuming, early
stopping, input checks, and mixtures."""
from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from spacebind.bonds.mixture import train_mixture
from spacebind.bonds.projector import MLPProjector
from spacebind.errors import CheckpointError, InputError
from spacebind.training import trainer as training
from spacebind.training.order import block_order
from spacebind.training.state import STATE_FILE
from spacebind.training.threads import cpu_threads
from spacebind.training.trainer import TrainConfig, pair_groups, recall_at_1, train_projector

CFG = TrainConfig(epochs=8, batch_size=128, hidden=64, lr=2e-3, patience=8)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models run far faster on one thread than on cores shared with other jobs."""
    with cpu_threads(1):
        yield


def noisy_pairs(n: int = 1200, din: int = 24, dout: int = 16, noise: float = 0.6, seed: int = 0):
    """tgt = n(src W + noise): a learnable pairing with a known amount of confusion."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(din, dout, generator=g)
    x = F.normalize(torch.randn(n, din, generator=g), dim=-1)
    y = F.normalize(x @ w + noise * torch.randn(n, dout, generator=g) / math.sqrt(dout), dim=-1)
    return x, y


def split(x: torch.Tensor, y: torch.Tensor, n_train: int = 1000) -> dict:
    return {"src": x[:n_train], "tgt": y[:n_train], "val_src": x[n_train:], "val_tgt": y[n_train:]}


def same_weights(a: torch.nn.Module, b: torch.nn.Module, atol: float = 0.0) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=atol, msg=k)


def test_recall_at_1_counts_own_target_hits_in_chunks() -> None:
    tgt = torch.eye(4)
    src = torch.tensor([[1.0, 0, 0, 0], [0, 0.5, 1, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    assert recall_at_1(torch.nn.Identity(), src, tgt, chunk=3) == 0.75  # row 1 retrieves target 2


def test_recall_at_1_counts_rows_sharing_a_side_as_positives() -> None:
    # item k paired across two target modalities: rows (a_k, t_k) and (a_k, u_k); and two
    # captions c, c' mined for one clip v: rows (c, v) and (c', v)
    a0, a1, c, c2 = torch.eye(4)
    t0, u0, t1, u1, v = F.normalize(torch.randn(5, 4, generator=torch.Generator().manual_seed(0)), dim=-1)
    src = torch.stack([a0, a0, a1, a1, c, c2])
    tgt = torch.stack([t0, u0, t1, u1, v, v])
    src_ids, tgt_ids = pair_groups(src, tgt)
    assert src_ids[0] == src_ids[1] and src_ids[2] == src_ids[3] and len(set(src_ids.tolist())) == 4
    assert tgt_ids[4] == tgt_ids[5] and len(set(tgt_ids.tolist())) == 5
    # a head sending a0 to u0 (hit), a1 to t0 (another item's target: miss), both captions to v (hits)
    head = torch.nn.Linear(4, 4, bias=False)
    head.weight.data = torch.stack([u0, t0, v, v]).T
    assert recall_at_1(head, src, tgt) == pytest.approx(4 / 6)
    assert recall_at_1(head, src, tgt, groups=(src_ids, tgt_ids)) == pytest.approx(4 / 6)


def test_trainer_learns_and_is_deterministic() -> None:
    data = split(*noisy_pairs())
    untrained = recall_at_1(MLPProjector(24, 16, hidden=64), data["val_src"], data["val_tgt"])
    rng = torch.get_rng_state()
    a = train_projector(**data, config=CFG, progress=False)
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's global RNG is left alone
    b = train_projector(**data, config=CFG, progress=False)
    assert a.best_val_recall > 0.3 > untrained + 0.2
    assert a.best_val_recall == recall_at_1(a.head, data["val_src"], data["val_tgt"])
    assert not a.head.training
    same_weights(a.head, b.head)
    c = train_projector(**data, config=CFG.model_copy(update={"seed": 1}), progress=False)
    assert not torch.equal(a.head.net[0].weight, c.head.net[0].weight)
    assert [h["epoch"] for h in a.history] == list(range(8))
    assert a.history[-1]["loss"] < a.history[0]["loss"]


def test_every_seed_the_config_admits_trains() -> None:
    x, y = noisy_pairs(n=300)
    config = CFG.model_copy(update={"epochs": 2})
    for seed in (2**50, 2**63 - 1):  # seed · 100003 + epoch overflowed the generator's 64 bits
        mix = train_mixture(x, y, n=2, config=TrainConfig.model_validate({**config.model_dump(), "seed": seed}),
                            progress=False)
        assert len(mix.members) == 2
    assert torch.equal(block_order(torch.arange(4) % 2, 2, 1, 2**63 - 1, 5), block_order(torch.arange(4) % 2, 2, 1,
                                                                                        2**63 - 1, 5))


def test_the_learnt_scale_is_held_at_its_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A loss that always wants a larger scale pushes it past 100 (temperature 0.01); it is clamped
    in place, as in CLIP, so it stays where it still gets a gradient, in sequential and batched training."""
    from spacebind.training import batched

    monkeypatch.setattr(training, "info_nce", lambda pred, tgt, scale, gather=False: (pred * 0).sum() - scale)
    monkeypatch.setattr(batched, "batched_info_nce", lambda pred, tgt, scale: (pred * 0).sum(dim=(1, 2)) - scale)
    x, y = noisy_pairs(n=300)
    config = CFG.model_copy(update={"epochs": 2, "temperature": 0.011, "lr": 0.5})
    train_projector(x, y, config=config, checkpoint_dir=tmp_path / "alone", progress=False)
    train_mixture(x, y, n=2, config=config, checkpoint_dir=tmp_path / "mix", progress=False)
    states = [tmp_path / "alone" / STATE_FILE, *(tmp_path / "mix").glob(f"member*/{STATE_FILE}")]
    assert len(states) == 3
    for state in states:
        assert torch.load(state, weights_only=True)["log_scale"] == pytest.approx(math.log(100.0), abs=1e-6), state


def test_schedule_warms_up_then_decays_and_max_steps_caps_it() -> None:
    x, y = noisy_pairs(n=1000)
    # 7 steps per epoch; 10 steps → 2 epochs, the second one of 3 steps; warmup round(0.2·10) = 2 steps
    config = CFG.model_copy(update={"max_steps": 10, "warmup": 0.2, "learnable_temperature": False})
    result = train_projector(x, y, config=config, progress=False)
    assert len(result.history) == 2 and math.isnan(result.best_val_recall) and result.best_epoch == 1
    after_7 = 0.5 * (1 + math.cos(math.pi * (7 - 2) / 8))  # LambdaLR factor for step 7
    assert result.history[0]["lr"] == pytest.approx(config.lr * after_7)
    assert result.history[1]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert [h["temperature"] for h in result.history] == pytest.approx([0.05, 0.05])
    learnable = train_projector(x, y, config=config.model_copy(update={"learnable_temperature": True}), progress=False)
    assert learnable.history[-1]["temperature"] != pytest.approx(0.05, abs=1e-6)


def test_interrupted_training_resumes_to_the_same_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = split(*noisy_pairs())
    full = train_projector(**data, config=CFG, progress=False)
    real_recall, calls = training.recall_at_1, {"n": 0}

    def dying_recall(*args, **kwargs):  # the run is killed while validating epoch 3
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_recall(*args, **kwargs)

    monkeypatch.setattr(training, "recall_at_1", dying_recall)
    with pytest.raises(KeyboardInterrupt):
        train_projector(**data, config=CFG, checkpoint_dir=tmp_path, progress=False)
    assert torch.load(tmp_path / STATE_FILE, weights_only=True)["state"]["epoch"] == 3
    monkeypatch.setattr(training, "recall_at_1", real_recall)
    resumed = train_projector(**data, config=CFG, checkpoint_dir=tmp_path, progress=False)
    assert resumed.history == full.history and resumed.best_epoch == full.best_epoch
    same_weights(full.head, resumed.head, atol=1e-6)

    monkeypatch.setattr(training, "recall_at_1", lambda *a, **k: pytest.fail("a finished run must not retrain"))
    again = train_projector(**data, config=CFG, checkpoint_dir=tmp_path, progress=False)
    same_weights(again.head, resumed.head)
    assert again.history == resumed.history


def test_a_state_from_another_run_is_set_aside_and_a_damaged_one_is_an_error(tmp_path: Path) -> None:
    x, y = noisy_pairs(n=300)
    short = CFG.model_copy(update={"epochs": 1})
    train_projector(x, y, config=short, checkpoint_dir=tmp_path, progress=False)
    with pytest.warns(UserWarning, match="another config or other data; training starts over"):
        other = train_projector(x, y.flip(0), config=short, checkpoint_dir=tmp_path, progress=False)
    assert len(other.history) == 1
    (tmp_path / STATE_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=f"{STATE_FILE}: unreadable training state"):
        train_projector(x, y, config=short, checkpoint_dir=tmp_path, progress=False)


def test_early_stopping_on_validation_recall() -> None:
    data = split(*noisy_pairs(noise=50.0))  # nothing to learn: validation recall stays near chance
    result = train_projector(**data, config=CFG.model_copy(update={"epochs": 40, "patience": 2}), progress=False)
    assert len(result.history) < 40
    assert len(result.history) - 1 - result.best_epoch == 2
    recalls = [h["val_recall@1"] for h in result.history]
    assert result.best_val_recall == max(recalls) and recalls.index(max(recalls)) == result.best_epoch


def test_bad_pairs_are_rejected_with_what_was_expected() -> None:
    x, y = noisy_pairs(n=20)
    with pytest.raises(InputError, match=r"training pairs: expected paired \[N, d\] tensors, got \(20, 24\) and \(19, 16\)"):
        train_projector(x, y[:19], config=CFG, progress=False)
    with pytest.raises(InputError, match="at least 2 pairs, got 1"):
        train_projector(x[:1], y[:1], config=CFG, progress=False)
    bad = y.clone()
    bad[3, 0] = float("nan")
    with pytest.raises(InputError, match="training pairs: tgt holds NaN"):
        train_projector(x, bad, config=CFG, progress=False)
    with pytest.raises(InputError, match="validation pairs have widths 24/8"):
        train_projector(x, y, val_src=x, val_tgt=y[:, :8], config=CFG, progress=False)


def test_mixture_beats_its_average_member(tmp_path: Path) -> None:
    # few, noisy pairs (least squares reaches 0.73): members differ by seed and their errors average out
    data = split(*noisy_pairs(n=1400, noise=3.0, seed=3))
    val = data["val_src"], data["val_tgt"]
    config = CFG.model_copy(update={"epochs": 20, "lr": 3e-3, "patience": 5})
    mix = train_mixture(**data, n=4, config=config, checkpoint_dir=tmp_path, progress=False)
    members = [recall_at_1(m, *val) for m in mix.members]
    assert len(set(members)) == 4
    assert recall_at_1(mix, *val) > sum(members) / len(members) + 0.05
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"member{i}" for i in range(4)]


def test_mixture_members_train_on_their_own_subsets() -> None:
    x, y = noisy_pairs(n=400)
    subsets = [torch.arange(0, 200), torch.arange(200, 400)]
    halves = train_mixture(x, y, n=2, config=CFG.model_copy(update={"epochs": 2}), subsets=subsets, progress=False)
    alone = train_projector(x[200:], y[200:], config=CFG.model_copy(update={"epochs": 2, "seed": 1}), progress=False)
    same_weights(halves.members[1], alone.head)
    with pytest.raises(InputError, match="2 subsets for 3 mixture members"):
        train_mixture(x, y, n=3, config=CFG, subsets=subsets)


def test_a_warm_started_head_is_part_of_the_run_key_and_val_sides_go_together(tmp_path: Path) -> None:
    """A second run in the same directory from another starting head of the same shape used to get
    the first run's finished weights back; `val_src` without `val_tgt` was silently ignored."""
    from spacebind.bonds.projector import MLPProjector
    from spacebind.errors import InputError

    d = split(*noisy_pairs(n=300, seed=6), n_train=250)
    config = TrainConfig(epochs=1, batch_size=64, hidden=16)
    torch.manual_seed(0)
    first = train_projector(d["src"], d["tgt"], config=config, head=MLPProjector(24, 16, 16), checkpoint_dir=tmp_path,
                            progress=False)
    torch.manual_seed(1)
    start = MLPProjector(24, 16, 16)
    warm = train_projector(d["src"], d["tgt"], config=config, head=start, checkpoint_dir=tmp_path, progress=False)
    assert not torch.equal(first.head.net[0].weight, warm.head.net[0].weight)  # trained from its own start
    with pytest.raises(InputError, match="val_src and val_tgt go together"):
        train_projector(d["src"], d["tgt"], config=config, val_src=d["val_src"], progress=False)


def test_a_state_saved_while_other_parameters_trained_is_not_resumed(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """States saved while the biases before a BatchNorm still trained (before 2026-12-03) hold an
    optimiser of another layout: resuming one crashed the README's demo in a used work directory."""
    from torch import nn

    import spacebind.bonds.projector as projector

    def unfrozen(net: nn.Sequential) -> None:  # the initialisation of every head before then
        for layer in net:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)

    d = split(*noisy_pairs(n=300, seed=7), n_train=250)
    config = TrainConfig(epochs=1, batch_size=64, hidden=16)
    monkeypatch.setattr(projector, "init_linear_layers", unfrozen)
    train_projector(d["src"], d["tgt"], config=config, checkpoint_dir=tmp_path, progress=False)
    monkeypatch.undo()
    with pytest.warns(UserWarning, match="another config or other data; training starts over"):
        fresh = train_projector(d["src"], d["tgt"], config=config, checkpoint_dir=tmp_path, progress=False)
    assert not fresh.head.net[0].bias.requires_grad
