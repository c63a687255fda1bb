"""Training a projector on caches larger than memory (`CachePairs`: batches read from the shards).

Embeds a synthetic text manifest with two stub experts (source dim 1024, target dim 1536, float16
shards: 5 KB a pair) into caches of about `--cache-mb` and `--small-mb`, then trains one projector
epoch on each, streaming with a shard budget of `--budget-mb` (the memory limit set for the data:
the default cache is 3× it), each run in its own spawned process at 1 thread. Reports peak resident
memory (total, and above the same process after imports and a warm-up run on two random batches),
the most shard data the LRU held, shard reads, time and pairs/s. Flat peak memory: the two cache sizes give about
the same peak; what still grows with the cache is the pair index (16 B a pair) and the cache
manifests' id lists (printed per pair). `--in-memory` adds the in-memory path on the small cache
for contrast (its data are float32: twice the cache). `--pseudo` adds pseudo pairs streamed as a bond
streams them (each target the softmax-weighted mean of 5 target rows at random positions, a
`MeanSide`) on both caches: mined neighbours sit anywhere in the target cache, so shard reads count
the re-reads that cost when it is larger than the budget. `--bound` adds pairs onto a bound space
(`tgt + c(src)`, a `SpaceSide` combining both caches' rows per batch), as a sequential bond streams them.
Run: python -m benchmarks.train_memory [--cache-mb 600 --small-mb 200 --budget-mb 200 --in-memory --pseudo --bound --json PATH]
(about 5 minutes on 2 shared cores; most of it writing the caches)"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from benchmarks.mining import peak_kb, reset_peak_kb
from benchmarks.search_scale import _spawn
from benchmarks.speed_report import print_report, target, write_json

D_SRC, D_TGT = 1024, 1536
TABLE = 1021  # rows of the synthetic tables: pair i mixes rows i % TABLE and (i // TABLE) % TABLE


@lru_cache(maxsize=4)
def _table(dim: int):
    import torch

    return torch.randn(2, TABLE, dim, generator=torch.Generator().manual_seed(dim))


@lru_cache(maxsize=4)
def _map(d_src: int, d_tgt: int):
    import torch

    return torch.randn(d_src, d_tgt, generator=torch.Generator().manual_seed(d_src + d_tgt)) / d_src**0.5


def _src_rows(index: list[int], dim: int):
    import torch
    import torch.nn.functional as F

    table, i = _table(dim), torch.tensor(index)
    return F.normalize(table[0, i % TABLE] + table[1, (i // TABLE) % TABLE], dim=-1)


def _tgt_rows(index: list[int], d_src: int, d_tgt: int):
    import torch.nn.functional as F

    return F.normalize(_src_rows(index, d_src) @ _map(d_src, d_tgt), dim=-1)


def write_caches(root: Path, n: int, d_src: int = D_SRC, d_tgt: int = D_TGT, shard_size: int = 1024) -> tuple[Any, Any]:
    """Two caches of `n` text items ("p<i>"): `src` (dim `d_src`) and `tgt` (dim `d_tgt`, a fixed
    linear map of the source, normalised), embedded with stub experts through `embed_dataset`;
    returns the two `EmbeddingCache`s."""
    from spacebind.cache.store import embed_dataset
    from spacebind.io.datasets import Manifest
    from spacebind.space import Space

    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    with (data / "manifest.jsonl").open("w", encoding="utf-8") as fh:
        fh.writelines(json.dumps({"id": f"p{i}", "split": "train", "text": f"p{i}"}) + "\n" for i in range(n))

    def index(xs: list[str]) -> list[int]:
        return [int(x[1:]) for x in xs]

    src = Space.from_encoders("src", {"text": lambda xs: _src_rows(index(xs), d_src)}, dim=d_src)
    tgt = Space.from_encoders("tgt", {"text": lambda xs: _tgt_rows(index(xs), d_src, d_tgt)}, dim=d_tgt)
    manifest = Manifest.open(data)
    return tuple(embed_dataset(e, manifest, root / e.name, shard_size=shard_size, batch_size=shard_size, progress=False)
                 for e in (src, tgt))


def _pseudo_pairs(src: Any, tgt: Any, budget_mb: float, k: int = 5) -> Any:
    """Pseudo pairs as a bond streams them: each source item with the normalised softmax-weighted
    mean of k target rows (seeded random neighbours), a `MeanSide` over the target cache."""
    import numpy as np
    import torch

    from spacebind.cache.keys import id_keys
    from spacebind.training.pairs import CachePairs, MeanSide, cache_side

    keys = id_keys(src.ids("text"))
    g = torch.Generator().manual_seed(0)
    neighbours = torch.randint(len(keys), (len(keys), k), generator=g).numpy()
    weights = torch.softmax(torch.randn(len(keys), k, generator=g) / 0.05, dim=1)
    partners = MeanSide(cache_side([(tgt, "text", keys[neighbours.reshape(-1)])]), weights)
    del neighbours
    return CachePairs([(src, "text", np.asarray(keys))], partners, max_mb=budget_mb)


def _bound_pairs(src: Any, tgt: Any, budget_mb: float) -> Any:
    """Pairs onto a bound space as a sequential bond streams them: the target side is
    `tgt + c(src)` (a fixed random linear head src → tgt, λ 0.5), combined per batch from both
    caches (`SpaceSide`)."""
    import torch

    from spacebind.bonds.bind import BoundSpace
    from spacebind.bonds.linear import LinearMap
    from spacebind.space import Space
    from spacebind.training.pairs import CachePairs, SpaceSide

    def stub(name: str, dim: int) -> Any:
        return Space.from_encoders(name, {"text": lambda xs: torch.zeros(len(xs), dim)}, dim=dim)

    head = LinearMap(D_SRC, D_TGT)
    with torch.no_grad():
        head.weight.copy_(_map(D_SRC, D_TGT))
    bound = BoundSpace(stub("tgt", D_TGT), [stub("src", D_SRC)], "combination", {"src": head.eval()},
                       lambdas={"text": 0.5})
    ids = src.ids("text")
    return CachePairs([(src, "text", ids)], SpaceSide(bound, {"src": src, "tgt": tgt}, "text", ids), max_mb=budget_mb)


def _run(root: str, stream: bool, budget_mb: float, batch: int, hidden: int, kind: str, queue: mp.Queue) -> None:
    import torch

    from spacebind.cache.store import EmbeddingCache
    from spacebind.training.pairs import CachePairs
    from spacebind.training.trainer import TrainConfig, train_projector

    torch.set_num_threads(1)
    src, tgt = (EmbeddingCache.open(Path(root) / name) for name in ("src", "tgt"))
    config = TrainConfig(epochs=1, batch_size=batch, hidden=hidden, warmup=0.0)
    os.environ["SPACEBIND_TRAIN_THREADS"] = "1"
    # warm-up: a run on two random batches, so the model, optimiser and torch's first-use memory
    # (kernels paged in, allocator pools) count in the baseline, not in the data's share
    g = torch.Generator().manual_seed(0)
    train_projector(torch.randn(2 * batch, D_SRC, generator=g), torch.randn(2 * batch, D_TGT, generator=g),
                    config=config, progress=False)
    base = reset_peak_kb()
    start = time.perf_counter()
    if kind == "pseudo":
        pairs = _pseudo_pairs(src, tgt, budget_mb)
    elif kind == "bound":
        pairs = _bound_pairs(src, tgt, budget_mb)
    elif stream:
        ids = src.ids("text")
        pairs = CachePairs([(src, "text", ids)], [(tgt, "text", ids)], max_mb=budget_mb)
        del ids
    if stream:
        result = train_projector(pairs, None, config=config, progress=False)
        lru = {"LRU max MB": pairs.lru.max_held_bytes / 2**20, "LRU max shards": pairs.lru.max_held_shards,
               "shard reads": pairs.lru.reads, "shards": len(pairs.src.shards) + len(pairs.tgt.shards),
               "window": pairs.window}
        n = len(pairs)
    else:
        x, y = src.embeddings("text"), tgt.embeddings("text")
        result = train_projector(x, y, config=config, progress=False)
        lru, n = {}, len(x)
    seconds = time.perf_counter() - start
    queue.put({"pairs": n, "seconds": seconds, "pairs/s": n / seconds, "loss": result.history[-1]["loss"],
               "peak MB": peak_kb() / 1024, "baseline MB": base / 1024, "above baseline MB": (peak_kb() - base) / 1024,
               **lru})


KINDS = {"pairs": "streamed", "pseudo": "streamed pseudo (k 5)", "bound": "streamed onto a bound space"}


def measure(cache_mb: float, budget_mb: float, batch: int, hidden: int, shard_size: int, stream: bool,
            tmp: Path, caches: dict[float, Path], kind: str = "pairs") -> dict[str, Any]:
    """Train one epoch on a cache of about `cache_mb` (written once under `tmp`) in a spawned process
    (`kind`: paired rows, pseudo pairs whose targets are means of 5 rows, or a bound-space target)."""
    n = int(cache_mb * 2**20 / (2 * (D_SRC + D_TGT)))
    path = KINDS[kind] if stream else "in memory"
    row: dict[str, Any] = {"cache MB": cache_mb, "path": path, "budget MB": budget_mb if stream else None}
    if cache_mb not in caches:
        start = time.perf_counter()
        write_caches(tmp / f"c{n}", n, shard_size=shard_size)
        row["write s"] = time.perf_counter() - start
        caches[cache_mb] = tmp / f"c{n}"
    on_disk = sum(p.stat().st_size for p in caches[cache_mb].rglob("*.safetensors")) / 2**20
    row.update({"cache MB": on_disk, "cache/budget": on_disk / budget_mb})
    row.update(_spawn(_run, str(caches[cache_mb]), stream, budget_mb, batch, hidden, kind))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-mb", type=float, default=600.0, help="size of the large cache (both sides)")
    parser.add_argument("--small-mb", type=float, default=200.0, help="size of the small cache (both sides)")
    parser.add_argument("--budget-mb", type=float, default=200.0, help="shard data held at most while training")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--shard-size", type=int, default=1024)
    parser.add_argument("--in-memory", action="store_true", help="also train in memory on the small cache")
    parser.add_argument("--pseudo", action="store_true",
                        help="also stream pseudo pairs (targets: means of 5 rows, as mined partners) on both caches")
    parser.add_argument("--bound", action="store_true",
                        help="also stream pairs onto a bound space (tgt + c(src), combined per batch) on both caches")
    parser.add_argument("--json", type=Path, default=None)
    a = parser.parse_args()
    start = time.perf_counter()
    caches: dict[float, Path] = {}
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(mb, a.budget_mb, a.batch, a.hidden, a.shard_size, True, Path(tmp), caches)
                for mb in (a.small_mb, a.cache_mb)]
        if a.in_memory:
            rows.append(measure(a.small_mb, a.budget_mb, a.batch, a.hidden, a.shard_size, False, Path(tmp), caches))
        for kind in [k for k in ("pseudo", "bound") if getattr(a, k)]:
            rows += [measure(mb, a.budget_mb, a.batch, a.hidden, a.shard_size, True, Path(tmp), caches, kind)
                     for mb in (a.small_mb, a.cache_mb)]
    small, large = rows[0], rows[1]
    growth = (large["peak MB"] - small["peak MB"]) * 2**20 / max(1, large["pairs"] - small["pairs"])
    columns = ["path", "cache MB", "budget MB", "cache/budget", "pairs", "seconds", "pairs/s", "peak MB",
               "baseline MB", "above baseline MB", "LRU max MB", "LRU max shards", "shard reads", "shards", "loss"]
    targets = [target("cache / budget (large cache)", large["cache/budget"], 3.0, True),
               target("LRU max / budget (large cache)", large["LRU max MB"] / a.budget_mb, 1.0, False),
               target("peak large / peak small cache", large["peak MB"] / small["peak MB"], 1.10, False)]
    print_report(f"one projector epoch on a streamed cache (1 thread, batch {a.batch}, hidden {a.hidden})", rows,
                 columns, targets)
    print(f"peak growth per extra pair: {growth:.0f} B (pair index and manifest ids; shard data stay within the budget)")
    write_json(a.json, {"benchmark": "train_memory", "params": {**vars(a), "json": None}, "rows": rows,
                        "peak_growth_B_per_pair": growth, "threads": 1, "seconds": time.perf_counter() - start,
                        "targets": targets})


if __name__ == "__main__":
    main()
