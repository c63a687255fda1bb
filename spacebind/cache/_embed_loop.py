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


def effective_precision(precision: str) -> str:
    """The precision an embedding actually runs at: `precision` on CUDA, fp32 without it."""
    return precision if precision != "fp32" and torch.cuda.is_available() else "fp32"


def out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is an allocation failure: CUDA's OutOfMemoryError, or the CPU allocator's
    RuntimeError (torch raises no OutOfMemoryError there)."""
    text = str(exc)
    return isinstance(exc, torch.OutOfMemoryError) or "can't allocate memory" in text or "not enough memory" in text


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
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                if self.size == 1 or not out_of_memory(exc):
                    raise
                self.size //= 2
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                note(f"out of memory: batch size lowered to {self.size}")


class _GroupInputs(torch.utils.data.Dataset):
    """Group i → (shard index, its inputs loaded leniently, whether it ends the shard); a group is at
    most `group` consecutive items of one shard."""

    def __init__(self, modality: str, shards: Sequence[tuple[int, list[Item]]], group: int) -> None:
        self.modality = modality
        self.groups = [(k, chunk[i:i + group], i + group >= len(chunk))
                       for k, chunk in shards for i in range(0, len(chunk), group)]

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> tuple[int, LoadResult, bool]:
        k, items, last = self.groups[i]
        return k, load_inputs_lenient(self.modality, [it.fields[self.modality] for it in items]), last


def _as_is(sample: Any) -> Any:
    return sample


def loaded_shards(modality: str, shards: Sequence[tuple[int, list[Item]]], group: int,
                  workers: int = 0) -> Iterator[tuple[int, Iterator[LoadResult]]]:
    """(shard index, its loaded inputs as consecutive groups of at most `group` items) in order.

    Decoding streams: a group is decoded when the caller asks for it, so with `workers` = 0 at most
    one group's decoded inputs are alive at a time (if the caller drops each group before the next),
    whatever the shard size; `workers` > 0 processes decode ahead, holding up to 2 × `workers` more
    groups (DataLoader prefetch). A shard's group iterator must be exhausted before the next shard's.
    """
    if workers < 0:
        raise InputError(f"workers must be 0 or more, got {workers}")
    if group < 1:
        raise InputError(f"group must be at least 1, got {group}")
    loader = torch.utils.data.DataLoader(_GroupInputs(modality, shards, group), batch_size=None, shuffle=False,
                                         num_workers=workers, collate_fn=_as_is)
    flat = iter(loader)
    for k, _ in shards:
        yield k, _shard_groups(flat)


def _shard_groups(flat: Iterator[tuple[int, LoadResult, bool]]) -> Iterator[LoadResult]:
    """The groups of one shard from the flat group stream, holding none of them while the next decodes."""
    while True:
        _, result, last = next(flat)
        yield result
        del result
        if last:
            return
