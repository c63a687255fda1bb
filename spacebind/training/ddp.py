"""Training a head with DistributedDataParallel so that N ranks compute what one process computes
on the same global batch.

Two things besides DDP's gradient averaging are needed for that: batch normalisation must use
the statistics of the global batch (`GlobalBatchNorm1d`: torch's SyncBatchNorm refuses CPU
tensors, this one runs on gloo and NCCL alike), and parameters outside the wrapped module (a
learnable temperature) must have their gradients averaged by hand (`average_gradients`). The
contrastive loss gathers its negatives from every rank (`spacebind.training.losses.info_nce(gather=True)`).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

import torch
import torch.distributed as dist
from torch import nn

from spacebind.training import distributed


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics (and running statistics) are those of the batch
    across all ranks, with gradients flowing through them (two-pass mean and variance). In eval
    mode or in a single process it is BatchNorm1d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not distributed.is_distributed():
            return super().forward(x)
        dims = [0, *range(2, x.ndim)]
        shape = [1, -1] + [1] * (x.ndim - 2)
        count = distributed.all_reduce_sum(torch.tensor(float(x.numel() // x.shape[1]), device=x.device))
        mean = distributed.all_reduce_sum(x.sum(dims)) / count
        centred = x - mean.view(shape)
        var = distributed.all_reduce_sum((centred * centred).sum(dims)) / count
        if self.track_running_stats:
            self._update_running(mean.detach(), var.detach() * count / (count - 1))
        out = centred * torch.rsqrt(var.view(shape) + self.eps)
        return out * self.weight.view(shape) + self.bias.view(shape) if self.affine else out

    @torch.no_grad()
    def _update_running(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        self.num_batches_tracked += 1
        m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        self.running_mean.mul_(1 - m).add_(m * mean)
        self.running_var.mul_(1 - m).add_(m * unbiased_var)


@contextmanager
def distributed_head(head: nn.Module) -> Iterator[nn.Module]:
    """The module to train `head` through: itself in a single process; under torchrun, `head`
    wrapped in DistributedDataParallel with its BatchNorm1d layers computing global-batch
    statistics. `head` keeps its parameters and state-dict keys; its layers are restored on exit."""
    if not distributed.is_distributed():
        yield head
        return
    swapped = [m for m in head.modules() if type(m) is nn.BatchNorm1d]
    for m in swapped:
        m.__class__ = GlobalBatchNorm1d
    try:
        yield nn.parallel.DistributedDataParallel(head, broadcast_buffers=False)
    finally:
        for m in swapped:
            m.__class__ = nn.BatchNorm1d


def average_gradients(params: Iterable[torch.Tensor]) -> None:
    """Average the gradients of parameters DDP does not manage over ranks (no-op in one process)."""
    if not distributed.is_distributed():
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()
