"""Batched training of several MLP projectors of one shape, as one set of stacked weights [n, ...].

Member i trains as `train_projector` trains it alone, up to float rounding: its own seeded initial
weights, rows, (seed, epoch) batch order, temperature, AdamW moments and step count, learning-rate
schedule, BatchNorm running statistics, early stopping and state file (the same file, format and
fingerprint as a sequential run, so each path resumes the other's). The members' matrix products
run as one `torch.baddbmm` / `torch.bmm` each (BatchNorm and the cross-entropies member by member,
on slices) and their AdamW steps as one foreach call per operation; the backward pass
runs once, on the sum of the members' losses, which gives each member its own gradient (members
share no parameters). On the CPU the result is bit-identical to sequential training (measured
at 1 and 2 threads; other BLAS kernels may round bmm and mm differently).

Members may differ in steps per epoch (row subsets of different sizes), epochs (`max_steps`) and
stopping epoch: each step trains only the members with a step left in the epoch (their rows of the
stacked weights gathered; the others get no gradient, decay, AdamW step or BatchNorm update), and
a member that stops early leaves the batch. Members whose batches differ in size (a subset smaller
than the batch size) or in hidden width train in separate batches.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from spacebind.errors import InputError
from spacebind.io.progress import track
from spacebind.training.order import epoch_order
from spacebind.training.threads import cpu_threads, train_threads
from spacebind.training.trainer import (
    TrainConfig,
    TrainResult,
    _checked,
    _checked_val,
    _end_epoch,
    _Run,
    _scale,
    _start_run,
    clamp_scale,
    pair_groups,
)

# stacked as [n, in, out]: the weight gradient of bmm(x, w) then comes out in the weight's own layout
TRANSPOSED = frozenset({"net.0.weight", "net.3.weight"})


def member_layout(name: str, t: torch.Tensor) -> torch.Tensor:
    """One member's slice `t` of the stacked tensor `name` in the member's own layout, or back (a view)."""
    return t.T if name in TRANSPOSED else t


class BatchedMLP:
    """The weights and BatchNorm statistics of n `MLPProjector`s of one shape, stacked on a first
    dimension (linear weights transposed, see `TRANSPOSED`)."""

    def __init__(self, heads: Sequence[nn.Module]) -> None:
        states = [h.state_dict() for h in heads]
        learned = {name for name, p in heads[0].named_parameters() if p.requires_grad}
        self.frozen = {name for name, p in heads[0].named_parameters() if not p.requires_grad}  # `init_linear_layers`
        stacked = {k: torch.stack([member_layout(k, s[k]) for s in states]) for k in states[0]}
        self.params = {k: t.requires_grad_(True) for k, t in stacked.items() if k in learned}
        self.buffers = {k: t for k, t in stacked.items() if k not in learned}  # and the frozen parameters
        norm = heads[0].net[1]
        self.momentum, self.eps = norm.momentum, norm.eps

    def member_state(self, i: int) -> dict[str, torch.Tensor]:
        """Member i's state dict (views into the stack)."""
        return {k: member_layout(k, t[i].detach()) for k, t in {**self.params, **self.buffers}.items()}

    def __call__(self, x: torch.Tensor, members: torch.Tensor | None) -> torch.Tensor:
        """Training-mode unit outputs [k, batch, out] of `members` (None: all) for their inputs x [k, batch, in]."""
        p = self.params if members is None else {k: t[members] for k, t in self.params.items()}
        p = {**p, **{k: self.buffers[k] if members is None else self.buffers[k][members] for k in self.frozen}}
        h = self._norm(self._linear(x, "net.0", p), "net.1", p, members).relu()
        return F.normalize(self._norm(self._linear(h, "net.3", p), "net.4", p, members), dim=-1)

    @staticmethod
    def _linear(x: torch.Tensor, name: str, p: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.baddbmm(p[f"{name}.bias"].unsqueeze(1), x, p[f"{name}.weight"])

    def _norm(self, h: torch.Tensor, name: str, p: dict[str, torch.Tensor], members: torch.Tensor | None) -> torch.Tensor:
        """Per-member BatchNorm, member by member on contiguous slices: the sequential kernels and
        rounding (one F.batch_norm over [batch, n·channels] needs transposed copies, and a
        non-contiguous gradient sums the bias gradients in another order), and no slower."""
        mean, var = self.buffers[f"{name}.running_mean"], self.buffers[f"{name}.running_var"]
        if members is not None:
            mean, var = mean[members], var[members]
        weight, bias = p[f"{name}.weight"], p[f"{name}.bias"]
        out = torch.stack([F.batch_norm(x, mean[i], var[i], weight[i], bias[i], training=True,
                                        momentum=self.momentum, eps=self.eps) for i, x in enumerate(h.unbind(0))])
        if members is not None:
            self.buffers[f"{name}.running_mean"][members] = mean
            self.buffers[f"{name}.running_var"][members] = var
        self.buffers[f"{name}.num_batches_tracked"][slice(None) if members is None else members] += 1
        return out


def batched_info_nce(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Each member's symmetric InfoNCE (see `info_nce`) for a, b [k, batch, d] and logit_scale [k]: shape [k]."""
    logits = logit_scale.view(-1, 1, 1) * torch.bmm(a, b.transpose(1, 2))
    labels = torch.arange(a.shape[1], device=a.device)
    # member by member: a batched cross-entropy's mean rounds differently from the sequential one's
    return torch.stack([0.5 * (F.cross_entropy(m, labels) + F.cross_entropy(m.T, labels)) for m in logits])


class BatchedAdamW:
    """AdamW over stacked parameters, each member with its own step count, learning rate and weight
    decay, read from its run's own optimiser (which its own scheduler drives). Torch's single-tensor
    AdamW arithmetic on each member's slices, issued as one foreach call per operation."""

    def __init__(self, params: dict[str, torch.Tensor], runs: Sequence[_Run]) -> None:
        self.params, self.runs = params, runs
        self.names = [self._names(run) for run in runs]
        self.groups = {name: g for _, name, g in self.names[0]}
        group = runs[0].optimizer.param_groups[0]
        self.beta1, self.beta2 = group["betas"]
        self.eps = group["eps"]
        self.steps = [0.0] * len(runs)
        self.exp_avg = {k: torch.zeros_like(p) for k, p in params.items()}
        self.exp_avg_sq = {k: torch.zeros_like(p) for k, p in params.items()}
        with torch.no_grad():
            for i, run in enumerate(runs):
                for param, name, _ in self.names[i]:
                    if param in run.optimizer.state:  # a resumed run
                        saved = run.optimizer.state[param]
                        self.steps[i] = float(saved["step"])
                        self.exp_avg[name][i] = member_layout(name, saved["exp_avg"])
                        self.exp_avg_sq[name][i] = member_layout(name, saved["exp_avg_sq"])
                # an AdamW step without gradients changes nothing; it tells the scheduler its optimiser has stepped
                run.optimizer.step()

    @staticmethod
    def _names(run: _Run) -> list[tuple[torch.Tensor, str, int]]:
        """The run's optimised tensors in its optimiser's order, with their names in the stack and their group."""
        names = {id(p): k for k, p in run.head.named_parameters()} | {id(run.log_scale): "log_scale"}
        return [(p, names[id(p)], g) for g, group in enumerate(run.optimizer.param_groups) for p in group["params"]]

    @torch.no_grad()
    def step(self, members: list[int]) -> None:
        """One AdamW step of `members` (their gradients are in the stacked parameters' `.grad`)."""
        params, grads, exp_avgs, exp_avg_sqs, decays, step_sizes, bias_sqrts = [], [], [], [], [], [], []
        for i in members:
            self.steps[i] += 1
            bias_correction1, bias_correction2 = 1 - self.beta1 ** self.steps[i], 1 - self.beta2 ** self.steps[i]
            for name, param in self.params.items():
                group = self.runs[i].optimizer.param_groups[self.groups[name]]
                params.append(param[i])
                grads.append(param.grad[i])
                exp_avgs.append(self.exp_avg[name][i])
                exp_avg_sqs.append(self.exp_avg_sq[name][i])
                decays.append(1 - group["lr"] * group["weight_decay"])
                step_sizes.append(-group["lr"] / bias_correction1)
                bias_sqrts.append(bias_correction2 ** 0.5)
        torch._foreach_mul_(params, decays)
        torch._foreach_lerp_(exp_avgs, grads, 1 - self.beta1)
        torch._foreach_mul_(exp_avg_sqs, self.beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - self.beta2)
        denoms = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denoms, bias_sqrts)
        torch._foreach_add_(denoms, self.eps)
        torch._foreach_addcdiv_(params, exp_avgs, denoms, step_sizes)

    def member_state(self, i: int) -> None:
        """Write member i's moments and step count into its run's optimiser."""
        for param, name, _ in self.names[i]:
            self.runs[i].optimizer.state[param] = {
                "step": torch.tensor(self.steps[i]),
                "exp_avg": member_layout(name, self.exp_avg[name][i]).clone(memory_format=torch.contiguous_format),
                "exp_avg_sq": member_layout(name, self.exp_avg_sq[name][i]).clone(memory_format=torch.contiguous_format)}


def train_projectors(
    src: torch.Tensor,
    tgt: torch.Tensor,
    *,
    configs: Sequence[TrainConfig],
    rows: Sequence[torch.Tensor | slice],
    val_src: torch.Tensor | Sequence[torch.Tensor | None] | None = None,
    val_tgt: torch.Tensor | Sequence[torch.Tensor | None] | None = None,
    checkpoint_dirs: Sequence[Path | None] | None = None,
    progress: bool = True,
) -> list[TrainResult]:
    """Train one MLP projector per config on the pairs `rows[i]`, batched (see the module docstring).

    Result i is what `train_projector(src[rows[i]], tgt[rows[i]], config=configs[i], val_src=val_src[i],
    val_tgt=val_tgt[i], checkpoint_dir=checkpoint_dirs[i])` returns, up to float rounding; the same
    input checks and errors. `val_src` / `val_tgt`: one validation set for every member, or a list
    with one per member (see `per_member`).
    """
    dirs = list(checkpoint_dirs) if checkpoint_dirs is not None else [None] * len(configs)
    val_srcs, val_tgts = per_member(val_src, len(configs)), per_member(val_tgt, len(configs))
    vals, val_groups, groups = [], [], {}
    runs, indices = [], []
    for config, r, directory, vs, vt in zip(configs, rows, dirs, val_srcs, val_tgts):
        # checked (and fingerprinted) member by member, as the sequential path does
        s, t = _checked("training pairs", src[r], tgt[r], min_rows=2)
        vals.append(_checked_val(vs, vt, s, t))
        runs.append(_start_run(s, t, vals[-1], config, directory, None))
        indices.append(torch.arange(len(src))[r].to(s.device))
        if vals[-1] is not None and id(vs) not in groups:  # members sharing a val set share its groups
            groups[id(vs)] = pair_groups(*vals[-1])
        val_groups.append(groups[id(vs)] if vals[-1] is not None else None)
    src, tgt = src.float().contiguous(), tgt.float().to(src.device).contiguous()
    batches: dict[tuple[int, int, bool], list[int]] = {}
    for i, config in enumerate(configs):
        shape = (min(config.batch_size, len(indices[i])), config.hidden, config.learnable_temperature)
        batches.setdefault(shape, []).append(i)
    pinned = cpu_threads(train_threads()) if src.device.type == "cpu" else contextlib.nullcontext()
    with pinned:  # as train_projector: weights independent of the caller's thread count
        for members in batches.values():
            _train_batch([runs[i] for i in members], [configs[i] for i in members], [indices[i] for i in members],
                         src, tgt, [vals[i] for i in members], [val_groups[i] for i in members], progress)
    return [run.result() for run in runs]


def per_member(value: torch.Tensor | Sequence[torch.Tensor | None] | None, n: int) -> list[torch.Tensor | None]:
    """One validation tensor (or None) per member: a list as given (one per member), else `value` n times."""
    if isinstance(value, torch.Tensor) or value is None:
        return [value] * n
    if len(value) != n:
        raise InputError(f"got {len(value)} validation sets for {n} members; expected one per member")
    return list(value)


def _train_batch(runs: list[_Run], configs: list[TrainConfig], rows: list[torch.Tensor], src: torch.Tensor,
                 tgt: torch.Tensor, vals: list[tuple[torch.Tensor, torch.Tensor] | None],
                 val_groups: list[tuple[torch.Tensor, torch.Tensor] | None], progress: bool) -> None:
    """Train `runs` (equal shapes and batch sizes) together to their end, epoch by epoch."""
    model = BatchedMLP([run.head for run in runs])
    log_scale = torch.stack([run.log_scale.detach() for run in runs]).requires_grad_(runs[0].log_scale.requires_grad)
    params = {**model.params, "log_scale": log_scale} if log_scale.requires_grad else dict(model.params)
    optimizer = BatchedAdamW(params, runs)
    live = [run for run in runs if not run.state["done"]]
    total = max((run.n_epochs for run in live), default=0) - min((run.state["epoch"] for run in live), default=0)
    for epoch, members in track(_rounds(runs), f"training {len(runs)} projectors", total=total,
                                show=progress and total > 0, unit="epochs"):
        losses = _train_epoch(model, log_scale, params, optimizer, runs, configs, rows, members, src, tgt, epoch)
        for i, loss in zip(members, losses):
            runs[i].head.load_state_dict(model.member_state(i))
            with torch.no_grad():
                runs[i].log_scale.copy_(log_scale[i])
            optimizer.member_state(i)
            _end_epoch(runs[i], epoch, loss, vals[i], val_groups[i], configs[i].patience)


def _rounds(runs: list[_Run]) -> Iterator[tuple[int, list[int]]]:
    """(epoch, members) to train next, until every run is done: the runs at the earliest epoch (a
    run killed while saving its members can leave them an epoch apart)."""
    while live := [i for i, run in enumerate(runs) if not run.state["done"]]:
        epoch = min(runs[i].state["epoch"] for i in live)
        yield epoch, [i for i in live if runs[i].state["epoch"] == epoch]


def _train_epoch(model: BatchedMLP, log_scale: torch.Tensor, params: dict[str, torch.Tensor], optimizer: BatchedAdamW,
                 runs: list[_Run], configs: list[TrainConfig], rows: list[torch.Tensor], members: list[int],
                 src: torch.Tensor, tgt: torch.Tensor, epoch: int) -> list[float]:
    """One epoch of `members`, each in its own (seed, epoch) order; their mean losses."""
    orders = {i: rows[i][epoch_order(len(rows[i]), configs[i].seed, epoch).to(rows[i].device)] for i in members}
    steps = {i: runs[i].epoch_steps(epoch) for i in members}
    first = members[0]
    size = min(configs[first].batch_size, len(rows[first]))  # a batch's rows: equal in the group (`train_projectors`)
    totals = torch.zeros(len(runs), device=src.device)
    for step in range(max(steps.values())):
        active = [i for i in members if step < steps[i]]
        which = None if len(active) == len(runs) else torch.tensor(active, device=src.device)
        batch = torch.stack([orders[i][step * size:(step + 1) * size] for i in active])
        scale = _scale(log_scale if which is None else log_scale[which])
        loss = batched_info_nce(model(src[batch], which), tgt[batch], scale)
        for p in params.values():
            p.grad = None
        loss.sum().backward()
        optimizer.step(active)
        clamp_scale(log_scale)
        for i in active:
            runs[i].scheduler.step()
        totals[active] += loss.detach()
    return [float(totals[i]) / steps[i] for i in members]
