"""order.py: `block_order` visits the shards in a (seed, epoch)-shuffled order,
cut into blocks of `window` shards: which shards share a block, and which block comes first,
change with the epoch (not always shards 0..window-1 first, in id order)."""
from __future__ import annotations

import torch

from spacebind.training.order import block_order

SHARDS, WINDOW, PER = 12, 3, 4


def blocks(order: torch.Tensor, shard: torch.Tensor) -> list[frozenset[int]]:
    s = shard[order]
    return [frozenset(s[i:i + WINDOW * PER].tolist()) for i in range(0, len(s), WINDOW * PER)]


def test_block_order_shuffles_which_shards_share_a_block_and_which_comes_first() -> None:
    shard = torch.arange(SHARDS).repeat_interleave(PER)[torch.randperm(SHARDS * PER, generator=torch.Generator().manual_seed(0))]
    firsts, groupings = set(), set()
    for epoch in range(8):
        order = block_order(shard, SHARDS, WINDOW, seed=0, epoch=epoch)
        assert sorted(order.tolist()) == list(range(len(shard)))
        bs = blocks(order, shard)
        assert all(len(b) == WINDOW for b in bs) and frozenset().union(*bs) == frozenset(range(SHARDS))
        firsts.add(bs[0])
        groupings.add(frozenset(bs))
    assert len(firsts) > 1  # the first block's shards change with the epoch
    assert len(groupings) > 1  # so does the partition of shards into blocks
