"""The (seed, epoch)-determined orders in which training visits its rows."""
from __future__ import annotations

import torch


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of a run's (seed, epoch) batch order; every seed a config admits (< 2**63) fits."""
    return torch.Generator().manual_seed((seed * 100_003 + epoch) % 2**64)


def block_order(shard: torch.Tensor, shards: int, window: int, seed: int, epoch: int) -> torch.Tensor:
    """The (seed, epoch)-determined order of rows whose shards are `shard` (of `shards` in all): the
    shards in a shuffled order, cut into blocks of `window`, rows shuffled within a block."""
    g = epoch_generator(seed, epoch)
    rank = torch.empty(shards, dtype=torch.int64)
    rank[torch.randperm(shards, generator=g)] = torch.arange(shards)
    rows = torch.randperm(len(shard), generator=g)
    block = rank[shard[rows]] // window
    return rows[torch.sort(block, stable=True).indices]


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The (seed, epoch)-determined order of `n` training rows in one epoch."""
    return torch.randperm(n, generator=epoch_generator(seed, epoch))
