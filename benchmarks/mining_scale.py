"""Mining at scale with IVF: seeds × pool top-k through spacebind's streamed mining
(`spacebind.retrieval.mining.build_index` + `search`, as `spacebind mine --index ivf` runs them),
on synthetic clustered unit vectors (`benchmarks.search_scale.clustered`).

Reports build and search time, extra and total peak memory, and recall@1 on a sample of seeds
against exact (flat) search. The default pool is 1M items; the default seeds are the largest
number that runs in a few minutes on one thread, and the time for 1M × 1M is extrapolated from
the measured search rate (search time is linear in the seeds at a fixed pool and nprobe; the
arithmetic is printed). In one spawned process; FAISS and torch on `--threads` threads.
Run: python -m benchmarks.mining_scale [--pool 1000000 --seeds 100000 --nlist 2048 --nprobe 16]"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.mining import peak_kb, reset_peak_kb
from benchmarks.search_scale import _setup, _spawn, chunks, clustered
from benchmarks.speed_report import print_report, write_json


def _run(pool_n: int, seeds_n: int, dim: int, clusters: int, nlist: int, nprobe: int, k: int, sample: int,
         threads: int, queue: mp.Queue) -> None:
    import faiss

    from spacebind.retrieval.mining import IndexOptions, build_index, search

    _setup(threads)
    pool = clustered(pool_n, dim, clusters, 0)
    seeds = clustered(seeds_n, dim, clusters, 2)
    base = reset_peak_kb()
    start = time.perf_counter()
    index, _ = build_index(chunks(pool), dim, "ivf", options=IndexOptions(nlist=nlist, nprobe=nprobe, train_size=64 * nlist))
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    _, scores, top = search(index, chunks(seeds, 16_384), k)
    search_s = time.perf_counter() - start
    extra = (peak_kb() - base) / 1024
    exact = faiss.IndexFlatIP(dim)
    exact.add(pool.numpy())
    rows = np.random.default_rng(0).choice(seeds_n, min(sample, seeds_n), replace=False)
    truth = exact.search(np.ascontiguousarray(seeds[rows].numpy()), 1)[1][:, 0]
    recall = float((top[rows, 0].numpy() == truth).mean())
    queue.put({"pool": pool_n, "seeds": seeds_n, "build s": build_s, "search s": search_s,
               "seeds/s": seeds_n / search_s, "recall@1": recall, "extra peak MB": extra, "peak MB": peak_kb() / 1024})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=int, default=1_000_000)
    parser.add_argument("--seeds", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--nlist", type=int, default=2048)
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--sample", type=int, default=1000, help="seeds checked against exact search")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    a = parser.parse_args()
    start = time.perf_counter()
    row = _spawn(_run, a.pool, a.seeds, a.dim, a.clusters, a.nlist, a.nprobe, a.k, a.sample, a.threads)
    total = time.perf_counter() - start
    full_seeds, full_pool = max(a.seeds, 1_000_000), max(a.pool, 1_000_000)
    grow = full_pool / a.pool  # at a fixed nlist and nprobe, a list (and a seed's scan) grows with the pool
    est = row["build s"] * grow + full_seeds / row["seeds/s"] * grow
    arithmetic = (f"{full_seeds:,} seeds × {full_pool:,} pool: build {row['build s']:.0f} s × {grow:g} + {full_seeds:,} / "
                  f"{row['seeds/s']:,.0f} seeds/s × {grow:g} = {est:,.0f} s ({est / 60:.1f} min) on {a.threads} thread(s) "
                  f"(linear in seeds; scans linear in pool at fixed nlist/nprobe); "
                  f"results {full_seeds:,} × {a.k} × (8 + 4) B = {full_seeds * a.k * 12 / 2**20:,.0f} MB")
    result: dict[str, Any] = {"benchmark": "mining_scale", "params": {**vars(a), "json": None}, "rows": [row],
                              "extrapolation": arithmetic, "seconds": total, "targets": []}
    print_report(f"IVF mining (nlist {a.nlist}, nprobe {a.nprobe}, k {a.k}), dim {a.dim}, {a.threads} thread(s)",
                 [row], ["pool", "seeds", "build s", "search s", "seeds/s", "recall@1", "extra peak MB", "peak MB"], [])
    print("extrapolation:", arithmetic)
    write_json(a.json, result)


if __name__ == "__main__":
    main()
