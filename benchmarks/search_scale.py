"""Search at scale: spacebind's `search` vs bare FAISS on the same index, per index kind.

Synthetic clustered unit vectors (N items, dim `--dim`, `--clusters` centres, noise 0.5) stand
in for a fused space's embeddings. Per kind (flat, ivf, hnsw, pq, ivfpq, each in its own spawned
process so its peak memory is its own): the index is built by spacebind's builder
(`spacebind.retrieval.mining.build_index`, which `spacebind index` uses), then `--timed`
queries are searched in one batch through `spacebind.search.search_batch` (a SearchIndex with N
item records; FAISS rows mapped to item ids) and through the bare FAISS `index.search`, in
`--rounds` interleaved rounds (order flipped each round); medians of queries/s and of the
per-round ratio. Also per round: the batch with its `Hit` records built ("ratio with Hits") and
up to 200 queries one at a time through `search` vs `index.search` of one row ("one-by-one
ratio": the per-call Python overhead). Recall@10 against exact search, build time, extra peak
memory. HNSW builds are slow on one thread, so HNSW runs on `--hnsw-n` items (the others on N).
FAISS and torch on `--threads` threads (default 1).
Run: python -m benchmarks.search_scale [--n 1000000 --dim 256 --hnsw-n 100000 --json out.json]"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.mining import peak_kb, reset_peak_kb
from benchmarks.speed_report import print_report, write_json

KINDS = ("flat", "ivf", "hnsw", "pq", "ivfpq")


def clustered(n: int, dim: int, clusters: int, seed: int, noise: float = 0.5) -> torch.Tensor:
    """Unit vectors around `clusters` random centres (fixed by dim and clusters), in 64k-row blocks."""
    centres = torch.randn(clusters, dim, generator=torch.Generator().manual_seed(12345))
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(n, dim)
    for i in range(0, n, 65_536):
        m = min(65_536, n - i)
        rows = centres[torch.randint(0, clusters, (m,), generator=g)] + noise * torch.randn(m, dim, generator=g)
        out[i:i + m] = F.normalize(rows, dim=1)
    return out


def chunks(x: torch.Tensor, size: int = 65_536):
    for i in range(0, len(x), size):
        yield [str(j) for j in range(i, min(i + size, len(x)))], x[i:i + size]


def _setup(threads: int) -> None:
    import faiss

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)


def _exact(n: int, dim: int, clusters: int, queries: int, threads: int, queue: mp.Queue) -> None:
    import faiss

    _setup(threads)
    x, q = clustered(n, dim, clusters, 0), clustered(queries, dim, clusters, 1)
    index = faiss.IndexFlatIP(dim)
    index.add(x.numpy())
    queue.put(index.search(q.numpy(), 10)[1])


def _median(values: list[float]) -> float:
    return float(np.median(values))


def _kind(kind: str, n: int, dim: int, clusters: int, queries: int, timed: int, threads: int, rounds: int, opts: dict[str, int],
          truth: np.ndarray, queue: mp.Queue) -> None:
    from spacebind.retrieval.mining import IndexOptions, build_index
    from spacebind.search import SearchIndex, search, search_batch

    _setup(threads)
    x, q = clustered(n, dim, clusters, 0), clustered(queries, dim, clusters, 1)
    base = reset_peak_kb()
    start = time.perf_counter()
    index, ids = build_index(chunks(x), dim, kind, options=IndexOptions(**opts))  # type: ignore[arg-type]
    build_s = time.perf_counter() - start
    del x
    items = [{"id": i, "split": "test", "label": None, "input": f"item/{i}.png"} for i in ids]
    sindex = SearchIndex(Path("."), {"space": {"dim": dim}}, {"image": index}, {"image": items})
    sindex.ids_array("image")  # built once per loaded index, like the FAISS index itself
    qn = np.ascontiguousarray(q.numpy())
    found = index.search(qn, 10)[1]  # type: ignore[attr-defined]
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, found)]))
    qt, qnt = q[:timed], qn[:timed]
    single = min(timed, 200)  # one-at-a-time calls: fewer, they only show the per-call overhead

    runs = {  # who → (queries timed, call)
        "ours": (timed, lambda: search_batch(sindex, qt, 10)),
        "bare": (timed, lambda: index.search(qnt, 10)),  # type: ignore[attr-defined]
        "ours+hits": (timed, lambda: list(search_batch(sindex, qt, 10))),
        "ours 1": (single, lambda: [search(sindex, q[i], 10) for i in range(single)]),
        "bare 1": (single, lambda: [index.search(qn[i:i + 1], 10) for i in range(single)]),  # type: ignore[attr-defined]
    }
    qps: dict[str, list[float]] = {who: [] for who in runs}
    out: dict[str, Any] = {}
    for r in range(rounds):  # interleaved (ours, bare, …), order flipped every round: other processes' load hits both alike
        for who in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            count, call = runs[who]
            start = time.perf_counter()
            out[who] = call()
            qps[who].append(count / (time.perf_counter() - start))
    same = float(np.mean(out["ours"].rows == out["bare"][1]))
    ratio = [a / b for a, b in zip(qps["ours"], qps["bare"])]
    ratio_hits = [a / b for a, b in zip(qps["ours+hits"], qps["bare"])]
    ratio_1 = [a / b for a, b in zip(qps["ours 1"], qps["bare 1"])]
    queue.put({"kind": kind, "N": n, "build s": build_s, "spacebind q/s": _median(qps["ours"]), "faiss q/s": _median(qps["bare"]),
               "ratio": _median(ratio), "ratios": ratio, "ratio with Hits": _median(ratio_hits),
               "one-by-one ratio": _median(ratio_1), "one-by-one spacebind q/s": _median(qps["ours 1"]),
               "one-by-one faiss q/s": _median(qps["bare 1"]), "recall@10": recall,
               "extra peak MB": (peak_kb() - base) / 1024, "peak MB": peak_kb() / 1024, "same hits": same,
               "timed queries": timed, "options": opts})


def _spawn(target: Any, *args: Any) -> Any:
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def measure(n: int, hnsw_n: int, dim: int, clusters: int, queries: int, timed: int, threads: int,
            kinds: list[str], opts: dict[str, dict[str, int]], rounds: int = 3) -> dict[str, Any]:
    """Every kind's row; exact ground truth per size in its own process."""
    truth = {size: _spawn(_exact, size, dim, clusters, queries, threads) for size in {n if k != "hnsw" else hnsw_n for k in kinds}}
    rows = []
    for kind in kinds:
        size = hnsw_n if kind == "hnsw" else n
        timed_k = min(timed, 200) if kind in ("flat", "pq") else timed  # exhaustive kinds: ~0.1 s a query at 1M
        rows.append(_spawn(_kind, kind, size, dim, clusters, queries, timed_k, threads, rounds, opts[kind], truth[size]))
        print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)
    return {"benchmark": "search_scale", "params": {"n": n, "hnsw_n": hnsw_n, "dim": dim, "clusters": clusters,
            "recall queries": queries, "timed queries": timed, "threads": threads, "rounds": rounds},
            "rows": rows, "targets": []}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--hnsw-n", type=int, default=100_000, help="items for the HNSW row (its build is slow)")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=1000, help="queries for recall@10")
    parser.add_argument("--timed", type=int, default=1000, help="queries timed per batch (200 for flat and pq; "
                        "at most 200 of them also one at a time)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds; medians reported")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--hnsw-m", type=int, default=16)
    parser.add_argument("--ef-search", type=int, default=64)
    parser.add_argument("--pq-m", type=int, default=32)
    parser.add_argument("--json", type=Path, default=None)
    a = parser.parse_args()
    train = 64 * a.nlist
    opts = {"flat": {}, "ivf": {"nlist": a.nlist, "nprobe": a.nprobe, "train_size": train},
            "hnsw": {"hnsw_m": a.hnsw_m, "ef_construction": 40, "ef_search": a.ef_search},
            "pq": {"pq_m": a.pq_m, "pq_bits": 8, "train_size": train},
            "ivfpq": {"nlist": a.nlist, "nprobe": a.nprobe, "pq_m": a.pq_m, "pq_bits": 8, "train_size": train}}
    start = time.perf_counter()
    result = measure(a.n, a.hnsw_n, a.dim, a.clusters, a.queries, a.timed, a.threads, a.kinds.split(","), opts, a.rounds)
    result["seconds"] = time.perf_counter() - start
    ratios = [r["ratio"] for r in result["rows"]]
    result["targets"] = [{"target": f"spacebind/FAISS q/s batched, {r['kind']}", "measured": r["ratio"], "limit": 0.9, "unit": "×",
                          "direction": ">=", "met": r["ratio"] >= 0.9} for r in result["rows"]] if ratios else []
    p = result["params"]
    print_report(f"batched search (search_batch vs index.search), N {p['n']:,} (hnsw {p['hnsw_n']:,}), dim {p['dim']}, "
                 f"{p['threads']} thread(s), median of {p['rounds']} interleaved rounds, {result['seconds']:.0f} s",
                 result["rows"], ["kind", "N", "build s", "spacebind q/s", "faiss q/s", "ratio", "ratio with Hits",
                                  "one-by-one ratio", "recall@10", "extra peak MB", "peak MB"],
                 result["targets"])
    write_json(a.json, result)


if __name__ == "__main__":
    main()
