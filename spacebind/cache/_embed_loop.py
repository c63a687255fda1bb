"""The machinery of embedding a dataset fast: input decoding in DataLoader workers while the
expert runs, mixed precision on GPU, and a batch size that halves itself on out-of-memory."""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Literal, Sequence

import torch

from spacebind.errors import InputError
from spacebind.io.datasets import Item
from spacebind.io.inputs import LoadResult, load_inputs_lenient
from spacebind.io.progress import note

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str) -> contextlib.AbstractContextManager[Any]:
    """CUDA autocast to bf16/fp16 for `precision` other than fp32; a no-op without CUDA (CPU
    experts always run in float32).

    Raises:
        InputError: an unknown precision.
    """
    if precision not in PRECISIONS:
        raise InputError(f"precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if precision == "fp32" or not torch.cuda.is_available():
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=_DTYPES[precision])


class AdaptiveBatch:
    """A batch size that halves (down to 1) whenever a batch runs out of memory, and stays halved
    for the rest of the job."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise InputError(f"batch_size must be at least 1, got {size}")
        self.size = size

    def run(self, work: Callable[[int], torch.Tensor]) -> torch.Tensor:
        """`work(batch_size)`, retried with half the batch size after an out-of-memory error."""
        while True:
            try:
                return work(self.size)
            except torch.OutOfMemoryError:
                if self.size == 1:
                    raise
                self.size //= 2
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                note(f"out of memory: batch size lowered to {self.size}")


class _ShardInputs(torch.utils.data.Dataset):
    """Shard i → (shard index, its items' inputs loaded leniently)."""

    def __init__(self, modality: str, shards: Sequence[tuple[int, list[Item]]]) -> None:
        self.modality, self.shards = modality, list(shards)

    def __len__(self) -> int:
        return len(self.shards)

    def __getitem__(self, i: int) -> tuple[int, LoadResult]:
        k, chunk = self.shards[i]
        return k, load_inputs_lenient(self.modality, [it.fields[self.modality] for it in chunk])


def _as_is(sample: Any) -> Any:
    return sample


def loaded_shards(modality: str, shards: Sequence[tuple[int, list[Item]]], workers: int = 0) -> Iterator[tuple[int, LoadResult]]:
    """(shard index, loaded inputs) in order; with `workers` > 0 that many processes decode the
    next shards while the caller encodes the current one."""
    if workers < 0:
        raise InputError(f"workers must be 0 or more, got {workers}")
    loader = torch.utils.data.DataLoader(_ShardInputs(modality, shards), batch_size=None, shuffle=False,
                                         num_workers=workers, collate_fn=_as_is)
    yield from loader
