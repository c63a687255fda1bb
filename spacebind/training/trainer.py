"""InfoNCE training of projectors on cached embeddings.

AdamW (weight decay on weight matrices only), linear warmup then cosine decay per step, a fixed or
learnable temperature, early stopping on validation recall@1, and resumable by epoch (see
`spacebind.training.state`). The target space is frozen: targets are fixed unit vectors. Training
runs on the device of `src`; on the CPU with a pinned intra-op thread count (`$SPACEBIND_TRAIN_THREADS`,
default 2), so the weights do not depend on the caller's `torch.set_num_threads`. The pairs are
tensors in memory, or a `spacebind.training.pairs.CachePairs` that reads each batch from the cache
shards (caches larger than memory; its own shard-block epoch order). The bonds build that source
when `TrainConfig.stream_mb` is set (`spacebind.bonds.fit`); `train_projector` itself trains on
whatever it is given, so `stream_mb` changes nothing here (nor the state's fingerprint).

Under torchrun the head trains with DistributedDataParallel (see `spacebind.training.ddp`): every rank
holds all pairs, takes its equal slice of each global batch (same order and size as a single
process), and the InfoNCE uses the negatives of all ranks, so N ranks train the weights one process
would (up to float rounding). Each rank runs on its own GPU (or the CPU), and only rank 0 writes
the resumable state.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from spacebind.errors import InputError
from spacebind.io.progress import track
from spacebind.training import distributed
from spacebind.training.ddp import average_gradients, distributed_head
from spacebind.training.losses import info_nce
from spacebind.training.order import epoch_order
from spacebind.training.state import STATE_FILE, fingerprint, load_state, save_state
from spacebind.training.threads import cpu_threads, train_threads

if TYPE_CHECKING:
    from spacebind.training.pairs import CachePairs

MAX_LOGIT_SCALE = 100.0  # CLIP's clamp: the temperature never drops below 0.01


MAX_SEED = 2**63  # seeds are non-negative and fit a signed 64-bit integer (torch, numpy)


class TrainConfig(BaseModel):
    """Projector training settings (the recipe's `train:` section); the defaults are measured
    choices (docs/decisions.md)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(256, ge=2)
    lr: float = Field(3e-3, gt=0, allow_inf_nan=False, description="peak AdamW learning rate")
    weight_decay: float = Field(1e-4, ge=0, allow_inf_nan=False, description="AdamW decay of weight matrices (not biases, norms, temperature)")
    warmup: float = Field(0.05, ge=0, lt=1, allow_inf_nan=False, description="fraction of all steps with linear warmup")
    temperature: float = Field(0.05, ge=1.0 / MAX_LOGIT_SCALE, allow_inf_nan=False, description="initial softmax temperature")
    learnable_temperature: bool = True
    patience: int = Field(5, ge=1, description="epochs without a val recall@1 gain before stopping")
    seed: int = Field(0, ge=0, lt=MAX_SEED)
    hidden: int = Field(2048, ge=1, description="projector hidden width")
    max_steps: int | None = Field(None, ge=1, description="cap on optimiser steps (the schedule spans the cap)")
    stream_mb: float | None = Field(
        None, gt=0, allow_inf_nan=False,
        description="read the training pairs from the cache shards, at most this many MB of float16 shards held "
                    "(caches larger than memory; its own shard-block batch order); None: pairs in memory")


# settings that do not change what a run computes from its data: left out of its state's fingerprint
# (a shard source's fingerprint covers its shards and window instead)
UNFINGERPRINTED = frozenset({"stream_mb"})


@dataclass
class TrainResult:
    """A trained head (best validation weights, eval mode) and its per-epoch history
    (`epoch`, `loss`, `val_recall@1`, `lr`, `temperature`)."""

    head: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_val_recall: float = float("nan")


def pair_groups(src: torch.Tensor, tgt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids of identical rows of `src` and of `tgt` (pairs often share a side: several captions
    mined for one clip, or one item paired across several modalities)."""
    return torch.unique(src, dim=0, return_inverse=True)[1], torch.unique(tgt, dim=0, return_inverse=True)[1]


@torch.no_grad()
def recall_at_1(head: nn.Module, src: torch.Tensor, tgt: torch.Tensor, chunk: int = 4096,
                groups: tuple[torch.Tensor, torch.Tensor] | None = None) -> float:
    """Fraction of pairs i whose head(src[i]) retrieves, among all tgt rows, a row j that is
    tgt[i] itself or a positive of it: tgt[j] == tgt[i] or src[j] == src[i] (see `pair_groups`,
    computed when `groups` is None). Without repeated rows this is plain recall@1.

    Memory is bounded by `chunk` × len(tgt); the head's train/eval mode is restored."""
    src_ids, tgt_ids = groups if groups is not None else pair_groups(src, tgt)
    was_training = head.training
    head.eval()
    hits = 0
    for start in range(0, len(src), chunk):
        j = (head(src[start:start + chunk]) @ tgt.T).argmax(dim=1)
        own = slice(start, start + len(j))
        hits += int(((tgt_ids[j] == tgt_ids[own]) | (src_ids[j] == src_ids[own])).sum())
    head.train(was_training)
    return hits / len(src) if len(src) else float("nan")


def _checked(name: str, src: torch.Tensor, tgt: torch.Tensor, min_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """src/tgt as float32 on src's device, after shape and finiteness checks."""
    if src.ndim != 2 or tgt.ndim != 2 or len(src) != len(tgt):
        raise InputError(f"{name}: expected paired [N, d] tensors, got {tuple(src.shape)} and {tuple(tgt.shape)}")
    if len(src) < min_rows:
        raise InputError(f"{name}: expected at least {min_rows} pairs, got {len(src)}")
    src, tgt = src.float().contiguous(), tgt.float().to(src.device).contiguous()
    for side, t in (("src", src), ("tgt", tgt)):
        if not torch.isfinite(t).all():
            raise InputError(f"{name}: {side} holds NaN or infinite values")
    return src, tgt


def adamw(params: Iterable[torch.Tensor], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only (not on biases, norms or a temperature)."""
    params = [p for p in params if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


def warmup_cosine(optimizer: torch.optim.Optimizer, total: int, warmup: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over the first `warmup` fraction of `total` steps, then cosine decay to 0."""
    warm = max(1, round(total * warmup)) if warmup > 0 else 0

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _scale(log_scale: torch.Tensor) -> torch.Tensor:
    return log_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()


@torch.no_grad()
def clamp_scale(log_scale: torch.Tensor) -> None:
    """Hold the learnt log scale at CLIP's cap after a step, in place (as CLIP does): a value left
    above it would get no gradient through `_scale` and could never come back."""
    log_scale.clamp_(max=math.log(MAX_LOGIT_SCALE))


@dataclass
class _Run:
    """One projector's training run: its head, temperature, optimiser, schedule and resumable state."""

    head: nn.Module
    log_scale: torch.Tensor
    optimizer: torch.optim.AdamW
    scheduler: torch.optim.lr_scheduler.LambdaLR
    steps_per_epoch: int
    total_steps: int
    n_epochs: int
    path: Path | None
    key: str
    state: dict[str, Any]

    def epoch_steps(self, epoch: int) -> int:
        """Optimiser steps in `epoch` (the last one may be cut short by `max_steps`)."""
        return min(self.steps_per_epoch, self.total_steps - epoch * self.steps_per_epoch)

    def result(self) -> TrainResult:
        """The best weights (eval mode) and the history."""
        self.head.load_state_dict(self.state["best"])
        return TrainResult(self.head.eval(), self.state["history"], self.state["best_epoch"], self.state["best_val"])


def _is_source(src: Any) -> bool:
    """Whether `src` is a pair source read from cache shards (`spacebind.training.pairs`), not a tensor."""
    from spacebind.training.pairs import CachePairs  # the cache imports the training package: a top-level import cycles

    return isinstance(src, CachePairs)


def _layout(src: torch.Tensor | CachePairs, tgt: torch.Tensor | None) -> tuple[int, int, torch.device]:
    """The training pairs' widths and device (a shard source trains on the CPU, or the rank's device)."""
    if _is_source(src):
        return *src.dims, distributed.device() if distributed.is_distributed() else torch.device("cpu")
    return src.shape[1], tgt.shape[1], src.device


def _checked_val(val_src: torch.Tensor | None, val_tgt: torch.Tensor | None, src: torch.Tensor | CachePairs,
                 tgt: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The validation pairs, checked against the training pairs' widths, or None without any.

    Raises:
        InputError: one side given without the other, or pairs of other widths."""
    if (val_src is None) != (val_tgt is None):
        raise InputError("validation pairs: val_src and val_tgt go together; give both or neither")
    if val_src is None or val_tgt is None or len(val_src) == 0:
        return None
    d_in, d_out, device = _layout(src, tgt)
    val = _checked("validation pairs", val_src.to(device), val_tgt, min_rows=1)
    if val[0].shape[1] != d_in or val[1].shape[1] != d_out:
        raise InputError(f"validation pairs have widths {val[0].shape[1]}/{val[1].shape[1]}, "
                         f"training pairs {d_in}/{d_out}")
    return val


def _start_run(src: torch.Tensor | CachePairs, tgt: torch.Tensor | None, val: tuple[torch.Tensor, torch.Tensor] | None,
               config: TrainConfig, checkpoint_dir: Path | None, head: nn.Module | None) -> _Run:
    """A run set up from scratch, or from its saved state in `checkpoint_dir` (`src` a tensor
    paired with `tgt`, or a shard source with `tgt` None)."""
    d_in, d_out, device = _layout(src, tgt)
    given = [] if head is None else [t.detach().cpu() for t in head.state_dict().values()]  # a warm start's weights
    if head is None:
        from spacebind.bonds.projector import MLPProjector  # bonds build on this trainer: a top-level import cycles

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            head = MLPProjector(d_in, d_out, config.hidden)
    head = head.to(device)
    log_scale = torch.tensor(math.log(1.0 / config.temperature), device=device)
    log_scale.requires_grad_(config.learnable_temperature)
    optimizer = adamw([*head.parameters(), log_scale], config.lr, config.weight_decay)
    steps_per_epoch = max(1, len(src) // config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    n_epochs = math.ceil(total_steps / steps_per_epoch)
    scheduler = warmup_cosine(optimizer, total_steps, config.warmup)
    state: dict[str, Any] = {"epoch": 0, "history": [], "best_val": -1.0, "best_epoch": -1, "best": None, "done": False}

    path = checkpoint_dir / STATE_FILE if checkpoint_dir is not None else None
    # the fingerprint hashes all the data (about a second per GB; a shard source: its shards'
    # checksums and rows): only a resumable run needs it
    data = src.key_tensors() if _is_source(src) else [src, tgt]
    # the head's trained parameters fix the optimiser's layout: a state saved when other ones trained
    # (the biases before a BatchNorm did until 2026-12-03) is another run's, not one to resume
    trained = [name for name, p in head.named_parameters() if p.requires_grad]
    key = (fingerprint(config.model_dump(exclude=set(UNFINGERPRINTED)),
                       {"head": getattr(head, "config", repr(head)), "trained": trained},
                       [*data, *(val or (None, None)), *given])
           if path is not None else "")
    saved = load_state(path, key) if path is not None else None
    if saved is not None:
        head.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        with torch.no_grad():
            log_scale.copy_(saved["log_scale"])
        state = saved["state"]
    return _Run(head, log_scale, optimizer, scheduler, steps_per_epoch, total_steps, n_epochs, path, key, state)


def _end_epoch(run: _Run, epoch: int, loss: float, val: tuple[torch.Tensor, torch.Tensor] | None,
               val_groups: tuple[torch.Tensor, torch.Tensor] | None, patience: int) -> bool:
    """Validate, record and save epoch `epoch` of `run`; whether the run is done."""
    state = run.state
    # every rank holds the same weights, so each computes the same recall and stopping decision
    recall = recall_at_1(run.head, *val, groups=val_groups) if val is not None else float("nan")
    state["history"].append({"epoch": epoch, "loss": loss, "val_recall@1": recall, "lr": run.scheduler.get_last_lr()[0],
                             "temperature": float(1.0 / _scale(run.log_scale.detach()))})
    if val is None or recall > state["best_val"]:
        state.update(best_val=recall, best_epoch=epoch,
                     best={k: v.detach().clone() for k, v in run.head.state_dict().items()})
    state["epoch"] = epoch + 1
    state["done"] = epoch + 1 == run.n_epochs or epoch - state["best_epoch"] >= patience
    if run.path is not None and distributed.is_main():
        save_state(run.path, run.key, {"model": run.head.state_dict(), "optimizer": run.optimizer.state_dict(),
                                       "scheduler": run.scheduler.state_dict(), "log_scale": run.log_scale.detach(),
                                       "state": state})
    return state["done"]


def train_projector(
    src: torch.Tensor | CachePairs,
    tgt: torch.Tensor | None,
    *,
    config: TrainConfig,
    val_src: torch.Tensor | None = None,
    val_tgt: torch.Tensor | None = None,
    checkpoint_dir: Path | None = None,
    head: nn.Module | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train `head` (default: a seeded MLPProjector) so head(src[i]) retrieves tgt[i] (InfoNCE).

    Args:
        src, tgt: paired rows [N, d_in] and [N, d_out]; tgt rows are unit vectors of the frozen target.
            Or `src` a `spacebind.training.pairs.CachePairs` and `tgt` None: batches are read from
            the cache shards (at most its `max_mb` held) in its shard-block epoch order, on the CPU
            (the rank's device under torchrun); validation pairs stay tensors.
        config: the training settings.
        val_src, val_tgt: validation pairs; with them the best epoch by recall@1 is kept and
            training stops after `config.patience` epochs without gain. Without them, the last epoch.
        checkpoint_dir: where to save the state after every epoch. A rerun of the same run resumes
            (bit-identical to an uninterrupted run on CPU); a finished run returns its stored
            result without training; another run's state is ignored with a warning.
        head: a module to train instead of the default projector.
        progress: show a progress bar.

    Raises:
        InputError: mis-shaped, too few or non-finite pairs; under torchrun, a global batch the
            ranks cannot split evenly.
    """
    if _is_source(src):
        if tgt is not None or len(src) < 2:
            raise InputError(f"training pairs: a shard source takes no tgt tensor and needs at least 2 pairs, "
                             f"got {len(src)} pairs{' and a tgt tensor' if tgt is not None else ''}")
    else:
        if distributed.is_distributed():
            src = src.to(distributed.device())
        src, tgt = _checked("training pairs", src, tgt, min_rows=2)
    world = distributed.world_size()
    if min(config.batch_size, len(src)) % world:
        raise InputError(f"train.batch_size: a global batch of {min(config.batch_size, len(src))} pairs does not "
                         f"split evenly over {world} ranks; use a multiple of {world}")
    val = _checked_val(val_src, val_tgt, src, tgt)
    val_groups = pair_groups(*val) if val is not None else None
    run = _start_run(src, tgt, val, config, checkpoint_dir, head)
    epochs = range(run.state["epoch"], run.n_epochs) if not run.state["done"] else range(0)
    pinned = cpu_threads(train_threads()) if run.log_scale.device.type == "cpu" else contextlib.nullcontext()
    with pinned, distributed_head(run.head) as model:
        for epoch in track(epochs, "training projector", show=progress and len(epochs) > 0, unit="epochs"):
            loss = _train_epoch(model, run.log_scale, run.optimizer, run.scheduler, src, tgt, config, epoch,
                                run.epoch_steps(epoch))
            if _end_epoch(run, epoch, loss, val, val_groups, config.patience):
                break
    return run.result()


def _train_epoch(head: nn.Module, log_scale: torch.Tensor, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, src: torch.Tensor | CachePairs,
                 tgt: torch.Tensor | None, config: TrainConfig, epoch: int, steps: int) -> float:
    """One epoch of `steps` full batches in a (seed, epoch)-determined order; the mean loss.
    Under torchrun each rank takes its slice of every global batch (see `info_nce(gather=True)`).
    A shard source (`tgt` None) gives its own epoch order and reads each batch from its shards."""
    head.train()
    device = log_scale.device
    source = _is_source(src)
    order = src.epoch_order(config.seed, epoch) if source else epoch_order(len(src), config.seed, epoch).to(device)
    world, rank = distributed.world_size(), distributed.rank()
    total = torch.zeros((), device=device)
    for step in range(steps):
        batch = order[step * config.batch_size:(step + 1) * config.batch_size]
        idx = batch.view(world, -1)[rank]
        x, y = (t.to(device) for t in src.gather(idx)) if source else (src[idx], tgt[idx])
        loss = info_nce(head(x), y, _scale(log_scale), gather=world > 1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients([log_scale])
        optimizer.step()
        clamp_scale(log_scale)
        scheduler.step()
        total += loss.detach()
    return distributed.mean_over_ranks(float(total) / steps)
