"""Mixture training: members batched as stacked weights vs trained one by one.

`train_mixture(batched=True)` (the default) against `train_mixture(batched=False)` on the same
in-memory pairs (random unit vectors standing in for cached embeddings), no validation split,
timed in turns (best of `--repeats`), at two shapes:

- small: `--members` members 512→512→512, batch 256 (per-step overhead dominates one by one);
- OmniBind: 1024→2048→1536, batch 4096, a few steps (the matrix products dominate).

`batched_vs_sequential` is the ratio of wall times; `cpu ratio` that of process CPU times (robust
to other load on shared cores, and the same ratio at one thread). Also the largest absolute
difference between the two runs' member weights (running statistics included). Threads are
pinned (`--threads`, default 1) and reported.

Run: python -m benchmarks.speed_mixture [--members 7 --threads 1 --json PATH]"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any
from unittest import mock

import torch
import torch.nn.functional as F

from benchmarks.speed_report import print_report, target, write_json
from spacebind.bonds.mixture import ProjectorMixture, train_mixture
from spacebind.training.threads import TRAIN_THREADS_ENV, cpu_threads
from spacebind.training.trainer import TrainConfig


def _pairs(n: int, d_in: int, d_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return F.normalize(torch.randn(n, d_in, generator=g), dim=-1), F.normalize(torch.randn(n, d_out, generator=g), dim=-1)


def _max_abs_diff(a: ProjectorMixture, b: ProjectorMixture) -> float:
    return max(float((x - y).abs().max()) for ma, mb in zip(a.members, b.members)
               for x, y in zip(ma.state_dict().values(), mb.state_dict().values()))


def measure_shape(name: str, members: int, pairs: int, d_in: int, hidden: int, d_out: int, batch: int,
                  epochs: int, repeats: int) -> dict[str, Any]:
    """Seconds of both paths at one shape, their ratio and the weight difference."""
    src, tgt = _pairs(pairs, d_in, d_out)
    config = TrainConfig(epochs=epochs, batch_size=batch, hidden=hidden)
    out: dict[str, ProjectorMixture] = {}

    def run(batched: bool) -> None:
        out[str(batched)] = train_mixture(src, tgt, n=members, config=config, progress=False, batched=batched)

    wall, cpu = {True: float("inf"), False: float("inf")}, {True: float("inf"), False: float("inf")}
    for _ in range(repeats):  # in turns, the best of each: the least disturbed by other load
        for batched in (True, False):
            start, start_cpu = time.perf_counter(), time.process_time()
            run(batched)
            wall[batched] = min(wall[batched], time.perf_counter() - start)
            cpu[batched] = min(cpu[batched], time.process_time() - start_cpu)
    return {"shape": name, "dims": f"{d_in}→{hidden}→{d_out}", "batch": batch, "members": members,
            "steps/member": (pairs // batch) * epochs, "sequential s": wall[False], "batched s": wall[True],
            "batched_vs_sequential": wall[False] / wall[True], "cpu ratio": cpu[False] / cpu[True],
            "max abs diff": _max_abs_diff(out["True"], out["False"])}


def measure(members: int, threads: int, small_pairs: int, small_epochs: int, omni_pairs: int, omni_epochs: int,
            repeats: int) -> dict[str, Any]:
    """Both shapes at `threads` intra-op threads, with the targets (≥ 2× small, ≥ 1× OmniBind)."""
    # training pins its own thread count (`train_threads`): both settings, for both paths
    with cpu_threads(threads), mock.patch.dict(os.environ, {TRAIN_THREADS_ENV: str(threads)}):
        rows = [measure_shape("small", members, small_pairs, 512, 512, 512, 256, small_epochs, repeats),
                measure_shape("OmniBind", members, omni_pairs, 1024, 2048, 1536, 4096, omni_epochs, repeats)]
    targets = [target("batched vs sequential, small", rows[0]["batched_vs_sequential"], 2.0, True),
               target("batched vs sequential, OmniBind", rows[1]["batched_vs_sequential"], 1.0, True)]
    return {"benchmark": "speed_mixture", "params": {"members": members, "threads": threads, "repeats": repeats,
            "small_pairs": small_pairs, "small_epochs": small_epochs, "omni_pairs": omni_pairs,
            "omni_epochs": omni_epochs}, "rows": rows, "targets": targets,
            "batched_vs_sequential": {r["shape"]: r["batched_vs_sequential"] for r in rows},
            "max_abs_diff": max(r["max abs diff"] for r in rows)}


def report(result: dict[str, Any]) -> None:
    p = result["params"]
    print_report(f"mixture training, {p['members']} members, {p['threads']} thread(s)", result["rows"],
                 ["shape", "dims", "batch", "steps/member", "sequential s", "batched s", "batched_vs_sequential",
                  "cpu ratio", "max abs diff"], result["targets"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="intra-op CPU threads for both paths")
    parser.add_argument("--small-pairs", type=int, default=4096)
    parser.add_argument("--small-epochs", type=int, default=2)
    parser.add_argument("--omni-pairs", type=int, default=8192)
    parser.add_argument("--omni-epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()
    result = measure(args.members, args.threads, args.small_pairs, args.small_epochs, args.omni_pairs,
                     args.omni_epochs, args.repeats)
    report(result)
    write_json(args.json, result)


if __name__ == "__main__":
    main()
