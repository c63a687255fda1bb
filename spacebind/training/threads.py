"""Scoped control of torch's intra-op CPU thread count."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from spacebind.io.files import positive_int_env

TRAIN_THREADS_ENV = "SPACEBIND_TRAIN_THREADS"
TRAIN_THREADS = 2  # float sums, so trained weights, depend on the thread count (docs/decisions.md "Threads")


@contextmanager
def cpu_threads(count: int) -> Iterator[None]:
    """Run the block with `count` intra-op threads, then restore the caller's setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_threads() -> int:
    """Intra-op threads of CPU projector training: `$SPACEBIND_TRAIN_THREADS`, else 2.

    Raises:
        InputError: the variable is not a positive integer.
    """
    return positive_int_env(TRAIN_THREADS_ENV, TRAIN_THREADS)
