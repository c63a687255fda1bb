"""Mining speed and memory: FAISS over streamed chunks vs a naive full-matrix top-k, same run.

Each method runs in its own process so its peak resident memory is its own. The naive method
materialises the whole [N, M] similarity matrix, so it runs on a size that fits; FAISS also runs
at the full size (default 100k × 100k, dim 512). Run: python -m benchmarks.mining"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table


def _vectors(n: int, dim: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _chunks(x: torch.Tensor, size: int):
    for i in range(0, len(x), size):
        yield [str(j) for j in range(i, min(i + size, len(x)))], x[i:i + size]


def peak_kb() -> int:
    """This process's peak resident memory in KiB (VmHWM on Linux, else ru_maxrss)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def reset_peak_kb() -> int:
    """Reset the peak to the current resident memory where Linux allows it (clear_refs 5), so
    earlier peaks (imports in a spawned child) do not hide the work's; returns the new peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return peak_kb()


def _run(method: str, n: int, dim: int, k: int, chunk: int, queue: mp.Queue) -> None:
    from spacebind.retrieval.mining import build_index, search

    queries, pool = _vectors(n, dim, 0), _vectors(n, dim, 1)
    base = reset_peak_kb()
    start = time.perf_counter()
    if method == "naive":
        top = torch.topk(queries @ pool.T, k, dim=1).indices
    else:
        index, _ = build_index(_chunks(pool, chunk), dim)
        top = search(index, _chunks(queries, chunk), k)[2]
    seconds = time.perf_counter() - start
    peak_mb = (peak_kb() - base) / 1024
    queue.put({"method": method, "n": n, "seconds": seconds, "extra_peak_mb": peak_mb, "check": int(top[:, 0].sum())})


def measure(method: str, n: int, dim: int, k: int, chunk: int) -> dict:
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=_run, args=(method, n, dim, k, chunk, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def measure_all(n: int, naive_n: int, dim: int, k: int, chunk: int) -> list[dict]:
    """Naive and FAISS at `naive_n`, FAISS at `n`, each in its own process."""
    rows = [measure("naive", naive_n, dim, k, chunk), measure("faiss", naive_n, dim, k, chunk),
            measure("faiss", n, dim, k, chunk)]
    assert rows[0]["check"] == rows[1]["check"], "FAISS and the naive top-1 disagree"
    return rows


def report(rows: list[dict], dim: int, k: int) -> None:
    """The table of `measure_all`'s rows, with time ratios against the naive method."""
    table = Table("method", "N = M", "seconds", "extra peak MB", "vs naive (time)", title=f"mining top-{k}, dim {dim}")
    for r in rows:
        ratio = f"{r['seconds'] / rows[0]['seconds']:.2f}×" if r["n"] == rows[0]["n"] else "–"
        table.add_row(r["method"], f"{r['n']:,}", f"{r['seconds']:.1f}", f"{r['extra_peak_mb']:.0f}", ratio)
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--naive-n", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--chunk", type=int, default=4096)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    rows = measure_all(args.n, args.naive_n, args.dim, args.k, args.chunk)
    report(rows, args.dim, args.k)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
