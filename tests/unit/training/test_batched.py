"""Batched training of mixture members: the same members as one-by-one training, resumable."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_training import noisy_pairs, split

from spacebind.bonds.mixture import train_mixture
from spacebind.errors import InputError
from spacebind.training import trainer as training
from spacebind.training.batched import train_projectors
from spacebind.training.state import STATE_FILE
from spacebind.training.trainer import TrainConfig, TrainResult, train_projector

# Bit-identical on the CPU here (1 and 2 threads) at this shape. The tolerance is for float noise
# from BLAS kernels that split bmm and mm differently; the biases before a BatchNorm (zero gradient
# in exact arithmetic) are frozen, so AdamW cannot turn that noise into steps of the learning rate.
TOL = {"rtol": 1e-5, "atol": 1e-5}
CFG = TrainConfig(epochs=12, batch_size=128, hidden=64, lr=2e-3, patience=2)
SUBSETS = [torch.arange(0, 1000), torch.arange(100, 700), torch.arange(700, 960)]  # 7, 4 and 2 steps an epoch


def data() -> dict:
    """Learnable pairs, but for rows 700–999 whose targets are shuffled: member 2 learns nothing and stops early."""
    d = split(*noisy_pairs(n=1400, noise=1.0, seed=3))
    d["tgt"][700:] = d["tgt"][700:][torch.randperm(300, generator=torch.Generator().manual_seed(0))]
    return d


def sequential(d: dict, config: TrainConfig = CFG, checkpoint: Path | None = None) -> list[TrainResult]:
    return [train_projector(d["src"][rows], d["tgt"][rows], config=config.model_copy(update={"seed": i}),
                            val_src=d["val_src"], val_tgt=d["val_tgt"], progress=False,
                            checkpoint_dir=checkpoint / f"member{i}" if checkpoint else None)
            for i, rows in enumerate(SUBSETS)]


def same_results(a: list[TrainResult], b: list[TrainResult]) -> None:
    for x, y in zip(a, b, strict=True):
        assert x.best_epoch == y.best_epoch and len(x.history) == len(y.history)
        for hx, hy in zip(x.history, y.history):
            torch.testing.assert_close(torch.tensor(list(hx.values())), torch.tensor(list(hy.values())),
                                       equal_nan=True, **TOL)
        sx, sy = x.head.state_dict(), y.head.state_dict()
        assert sx.keys() == sy.keys()
        for k in sx:
            torch.testing.assert_close(sx[k], sy[k], msg=k, **TOL)


def test_batched_members_equal_sequential_ones_with_uneven_subsets_and_early_stopping() -> None:
    d = data()
    alone = sequential(d)
    batched = train_projectors(d["src"], d["tgt"], configs=[CFG.model_copy(update={"seed": i}) for i in range(3)],
                               rows=SUBSETS, val_src=d["val_src"], val_tgt=d["val_tgt"], progress=False)
    stopped = [len(r.history) < CFG.epochs for r in alone]
    assert sum(stopped) == 1, [len(r.history) for r in alone]  # one member stops early, the others run on
    same_results(alone, batched)
    mix = train_mixture(d["src"], d["tgt"], n=3, config=CFG, subsets=SUBSETS, val_src=d["val_src"],
                        val_tgt=d["val_tgt"], progress=False)
    for member, result in zip(mix.members, batched):
        assert type(member) is type(result.head) and not member.training
        torch.testing.assert_close(member.state_dict(), result.head.state_dict(), rtol=0, atol=0)


def test_each_member_selects_its_epoch_on_its_own_validation_pairs() -> None:
    """A pseudo dataset's member is chosen on that dataset's val pairs (the inputs it projects)."""
    d = data()
    vals = [(d["val_src"][:150], d["val_tgt"][:150]), None, (d["val_src"][150:], d["val_tgt"][150:])]
    alone = [train_projector(d["src"][rows], d["tgt"][rows], config=CFG.model_copy(update={"seed": i}),
                             val_src=v[0] if v else None, val_tgt=v[1] if v else None, progress=False)
             for i, (rows, v) in enumerate(zip(SUBSETS, vals))]
    val_src = [v[0] if v else torch.empty(0) for v in vals]
    val_tgt = [v[1] if v else torch.empty(0) for v in vals]
    for batched in (True, False):
        mix = train_mixture(d["src"], d["tgt"], n=3, config=CFG, subsets=SUBSETS, val_src=val_src,
                            val_tgt=val_tgt, progress=False, batched=batched)
        for member, result in zip(mix.members, alone):
            torch.testing.assert_close(member.state_dict(), result.head.state_dict(), **TOL)
    pooled = sequential(d)
    assert [r.best_epoch for r in alone] != [r.best_epoch for r in pooled]  # the choice of val set matters here
    assert len(alone[1].history) == CFG.epochs and alone[1].best_epoch == CFG.epochs - 1  # no val: the last epoch
    with pytest.raises(InputError, match="got 2 validation sets for 3 members"):
        train_mixture(d["src"], d["tgt"], n=3, config=CFG, subsets=SUBSETS, val_src=val_src[:2],
                      val_tgt=val_tgt[:2], progress=False)


def test_members_of_other_batch_sizes_epochs_and_temperatures_still_match() -> None:
    d = data()
    rows = [torch.arange(0, 500), torch.arange(0, 100), torch.arange(200, 700)]  # 100 rows: a batch of 100
    configs = [CFG.model_copy(update={"seed": 5, "max_steps": 9}), CFG.model_copy(update={"seed": 6}),
               CFG.model_copy(update={"seed": 7, "learnable_temperature": False, "lr": 1e-3})]
    batched = train_projectors(d["src"], d["tgt"], configs=configs, rows=rows, progress=False)
    alone = [train_projector(d["src"][r], d["tgt"][r], config=c, progress=False) for r, c in zip(rows, configs)]
    assert len(alone[0].history) == 3  # 4 steps an epoch, capped at 9
    same_results(alone, batched)


def test_a_killed_batched_run_resumes_batched_or_sequential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = data()
    full = sequential(d)
    real_recall, calls = training.recall_at_1, {"n": 0}

    def dying_recall(*args, **kwargs):  # killed while validating member 1's epoch 3: member 0 saved epoch 3
        calls["n"] += 1
        if calls["n"] == 11:
            raise KeyboardInterrupt
        return real_recall(*args, **kwargs)

    def mixture(checkpoint: Path, batched: bool = True):
        return train_mixture(d["src"], d["tgt"], n=3, config=CFG, subsets=SUBSETS, val_src=d["val_src"],
                             val_tgt=d["val_tgt"], checkpoint_dir=checkpoint, progress=False, batched=batched)

    for resume_batched in (True, False):
        out = tmp_path / str(resume_batched)
        calls["n"] = 0
        monkeypatch.setattr(training, "recall_at_1", dying_recall)
        with pytest.raises(KeyboardInterrupt):
            mixture(out)
        epochs = [torch.load(out / f"member{i}" / STATE_FILE, weights_only=True)["state"]["epoch"] for i in range(3)]
        assert epochs == [4, 3, 3]
        monkeypatch.setattr(training, "recall_at_1", real_recall)
        resumed = mixture(out, batched=resume_batched)
        for member, result in zip(resumed.members, full):
            torch.testing.assert_close(member.state_dict(), result.head.state_dict(), **TOL)
    # a finished batched run is read back, not retrained
    monkeypatch.setattr(training, "recall_at_1", lambda *a, **k: pytest.fail("a finished run must not retrain"))
    again = mixture(tmp_path / "True")
    for member, result in zip(again.members, full):
        torch.testing.assert_close(member.state_dict(), result.head.state_dict(), **TOL)


def test_members_match_sequential_ones_in_eval_mode_at_shapes_whose_rounding_differs() -> None:
    """At (batch 8, hidden 8) bmm and mm round differently. While the biases before a BatchNorm were
    trained, AdamW turned that noise into a random walk of the biases (and the running means after
    them): eval outputs differed by up to 0.009 and the biases by 0.15. Frozen, they stay zero."""
    d = split(*noisy_pairs(n=300, noise=1.0, seed=4))
    config = TrainConfig(epochs=6, batch_size=8, hidden=8, lr=2e-3)
    rows = [torch.arange(0, 200), torch.arange(50, 250)]
    alone = [train_projector(d["src"][r], d["tgt"][r], config=config.model_copy(update={"seed": i}), progress=False)
             for i, r in enumerate(rows)]
    batched = train_projectors(d["src"], d["tgt"], configs=[config.model_copy(update={"seed": i}) for i in range(2)],
                               rows=rows, progress=False)
    for a, b in zip(alone, batched):
        for head in (a.head, b.head):
            assert not head.net[0].bias.requires_grad and not head.net[3].bias.requires_grad
            assert not head.net[0].bias.any() and not head.net[3].bias.any()
        torch.testing.assert_close(a.head(d["val_src"]), b.head(d["val_src"]), rtol=0, atol=1e-4)


def test_members_whose_batch_sizes_differ_but_whose_batches_do_not_train_together() -> None:
    """batch_size 16 on 8 rows and batch_size 8 on 100 rows both take batches of 8: one group, each
    member sliced by its own step size (the first member's batch size used to slice both)."""
    d = split(*noisy_pairs(n=300, noise=1.0, seed=5))
    configs = [TrainConfig(epochs=2, batch_size=16, hidden=8, seed=0), TrainConfig(epochs=2, batch_size=8, hidden=8, seed=1)]
    rows = [torch.arange(8), torch.arange(100)]
    for order in ([0, 1], [1, 0]):
        batched = train_projectors(d["src"], d["tgt"], configs=[configs[i] for i in order], rows=[rows[i] for i in order],
                                   progress=False)
        for i, result in zip(order, batched):
            alone = train_projector(d["src"][rows[i]], d["tgt"][rows[i]], config=configs[i], progress=False)
            assert len(result.history) == len(alone.history)
            torch.testing.assert_close(result.head(d["val_src"]), alone.head(d["val_src"]), rtol=0, atol=1e-4)
