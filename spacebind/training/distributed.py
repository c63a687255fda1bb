"""torch.distributed, set up from the environment torchrun gives each process.

Under `torchrun --nproc-per-node N` (or multi-node torchrun) every process sees RANK, WORLD_SIZE
and LOCAL_RANK; the first call of any helper here joins the process group (NCCL when CUDA is
available, gloo on CPU) and selects the GPU LOCAL_RANK, so `device="cuda"` in a recipe means each
rank's own GPU. Without those variables everything is a single process: rank 0 of 1, barriers
and gathers do nothing. The CLI, `fuse` and the Python API therefore run unchanged under torchrun.
"""
from __future__ import annotations

import atexit
import os
import time
from typing import Callable, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def _env_world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup() -> bool:
    """Join the process group torchrun describes (once); True when running distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if _env_world() <= 1 or not dist.is_available():
        return False
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    atexit.register(_teardown)
    return True


def _teardown() -> None:
    """Leave the group while the interpreter is fully alive. A gloo worker thread drops each
    finished work a moment after the caller's wait returns, and that drop takes the GIL; if it
    comes during interpreter shutdown, the process aborts ("terminate called without an active
    exception", pytorch/pytorch#190489). DDP keeps the group alive past destroy_process_group, so
    its threads cannot be joined: wait for every rank, then give the workers time to go idle."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        time.sleep(_WORKER_DRAIN_SECONDS)


_WORKER_DRAIN_SECONDS = 0.2


def is_distributed() -> bool:
    """Whether this process is one of several (joining the group on first use)."""
    return setup()


def rank() -> int:
    """This process's global rank (0 when not distributed)."""
    return dist.get_rank() if setup() else 0


def world_size() -> int:
    """The number of processes (1 when not distributed)."""
    return dist.get_world_size() if setup() else 1


def is_main() -> bool:
    """True on rank 0: the process that writes shared files, evaluates, exports and prints."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if setup():
        dist.barrier()


def main_first(work: Callable[[], T]) -> T | None:
    """Run `work` on rank 0 while the others wait; its result on rank 0, None elsewhere."""
    result = work() if is_main() else None
    barrier()
    return result


def all_gather(x: torch.Tensor) -> torch.Tensor:
    """Every rank's `x` concatenated along dim 0 in rank order, with gradient: the backward pass
    returns to each rank the sum over ranks of the gradients of its slice. All ranks must pass
    the same shape. In a single process, `x` itself."""
    return _AllGather.apply(x) if setup() else x


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """The sum of `x` over ranks, with gradient (each rank's gradient is the sum of all ranks'
    gradients of the result). In a single process, `x` itself."""
    return _AllReduceSum.apply(x) if setup() else x


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.rows = len(x)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start = dist.get_rank() * ctx.rows
        return grad[start:start + ctx.rows]


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = x.contiguous().clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


def mean_over_ranks(value: float) -> float:
    """The mean of a Python number over ranks (no gradient)."""
    if not setup():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    return float(t) / dist.get_world_size()


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def device() -> torch.device:
    """The device this rank computes on: its own GPU when CUDA is available, else the CPU."""
    setup()
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
