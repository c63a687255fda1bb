"""Scoped control of torch's intra-op CPU thread count."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def cpu_threads(count: int) -> Iterator[None]:
    """Run the block with `count` intra-op threads, then restore the caller's setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
