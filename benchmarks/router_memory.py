"""Router training with its tuples held in memory against streamed from cache shards (`router.stream_mb`).

Two stub experts, a target T and a member E (both `--dim`), embed `--items` paired text + audio
train items and `--val` val items into float16 caches (synthetic rows: T's are seeded
random unit vectors, E's a fixed linear map of them plus noise; an item's audio row is its text
row mixed with a per-modality offset; each audio file carries its item index as its first sample).
A routed space T + r(E) with a fixed linear head E → T has two candidates per modality. One
router epoch runs in a spawned process at 1 thread per path: candidates held (`stream_mb` unset)
and streamed at `--budget-mb`. Reports peak resident memory above the process after imports and
a warm-up (what the data costs), the most shard data the LRU held, shard reads, seconds and
tuples/s; the streamed path's peak should stay near the budget while the held path's grows with
the items (candidates float32 [n, 2, dim] and router inputs [n, 2·dim] per modality).
Run: python -m benchmarks.router_memory [--items 30000 --dim 768 --budget-mb 32 --json PATH]
(about 3 minutes on 2 shared cores, most of it writing the caches)"""
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

TABLE = 4099  # rows of the synthetic table: item i mixes rows i % TABLE and (i // TABLE) % TABLE


@lru_cache(maxsize=2)
def _synthetic(dim: int) -> tuple[Any, Any, Any]:
    """The seeded table of rows, the audio offset and the orthogonal map from T's rows to E's."""
    import torch

    g = torch.Generator().manual_seed(dim)
    return (torch.randn(2, TABLE, dim, generator=g), torch.randn(dim, generator=g),
            torch.linalg.qr(torch.randn(dim, dim, generator=g))[0])


def _rows(index: list[int], dim: int, modality: str, member: bool) -> Any:
    import torch
    import torch.nn.functional as F

    table, offset, mapping = _synthetic(dim)
    i = torch.tensor(index)
    rows = F.normalize(table[0, i % TABLE] + table[1, (i // TABLE) % TABLE], dim=-1)
    if modality == "audio":
        rows = F.normalize(rows + 0.5 * offset / offset.norm(), dim=-1)
    if member:
        noise = torch.randn(len(index), dim, generator=torch.Generator().manual_seed(len(index)))
        rows = F.normalize(rows @ mapping + 0.1 * noise / dim**0.5, dim=-1)
    return rows


def _experts(dim: int) -> tuple[Any, Any]:
    from spacebind.space import Space

    def encoders(member: bool) -> dict[str, Any]:
        return {"text": lambda xs: _rows([int(x[1:]) for x in xs], dim, "text", member),
                "audio": lambda xs: _rows([int(round(float(a.samples[0]))) for a in xs], dim, "audio", member)}

    return (Space.from_encoders("T", encoders(False), dim=dim), Space.from_encoders("E", encoders(True), dim=dim))


def write_data(root: Path, items: int, val: int, dim: int, shard_size: int) -> None:
    """The manifest (train and val items with text and audio), the audio files and both caches."""
    import numpy as np
    import soundfile as sf

    from spacebind.cache.store import embed_dataset
    from spacebind.io.datasets import Manifest

    data = root / "data"
    (data / "audio").mkdir(parents=True, exist_ok=True)
    with (data / "manifest.jsonl").open("w", encoding="utf-8") as fh:
        for i in range(items + val):
            sf.write(data / "audio" / f"{i}.wav", np.full(16, float(i), dtype=np.float32), 16_000, subtype="FLOAT")
            split = "train" if i < items else "val"
            fh.write(json.dumps({"id": f"p{i}", "split": split, "text": f"p{i}", "audio": f"audio/{i}.wav"}) + "\n")
    manifest = Manifest.open(data)
    for expert in _experts(dim):
        embed_dataset(expert, manifest, root / expert.name, shard_size=shard_size, batch_size=shard_size,
                      progress=False)


def _routed(dim: int) -> Any:
    import torch

    from spacebind.bonds.linear import LinearMap
    from spacebind.bonds.route import RoutedSpace

    target_space, member = _experts(dim)
    head = LinearMap(dim, dim)
    with torch.no_grad():
        head.weight.copy_(_synthetic(dim)[2].T)  # E's rows are T's times an orthogonal M: x Mᵀ maps them back
    return RoutedSpace(target_space, [member], {"E": head.eval()})


def _run(root: str, dim: int, budget_mb: float | None, batch: int, queue: mp.Queue) -> None:
    import torch

    from spacebind.bonds import route
    from spacebind.bonds.route import RouterConfig, train_routers
    from spacebind.cache.cache_set import CacheSet
    from spacebind.cache.store import EmbeddingCache
    from spacebind.io.datasets import Dataset

    torch.set_num_threads(1)
    os.environ["SPACEBIND_TRAIN_THREADS"] = "1"
    space = _routed(dim)
    caches = CacheSet({name: EmbeddingCache.open(Path(root) / name) for name in ("T", "E")})
    dataset = Dataset.load(Path(root) / "data")
    config = RouterConfig(epochs=1, batch_size=batch, hidden=[256, 64], warmup=0.0, stream_mb=budget_mb)
    made: list[Any] = []
    original = route.route_data
    route.route_data = lambda *a, **k: made.append(original(*a, **k)) or made[-1]
    # warm-up on the val split alone: model, optimiser, FAISS and torch's first-use memory in the baseline
    warm = route.route_data(space, caches, dataset, "val", stream_mb=budget_mb)
    route.router_loss(space, {}, warm, torch.arange(min(batch, len(warm))), config)
    made.clear()
    base = reset_peak_kb()
    start = time.perf_counter()
    train_routers(space, caches, dataset, config, progress=False)
    seconds = time.perf_counter() - start
    train = made[0]
    lru = getattr(train.source, "lru", None)
    queue.put({"tuples": len(train), "seconds": seconds, "tuples/s": len(train) / seconds,
               "peak MB": peak_kb() / 1024, "baseline MB": base / 1024, "above baseline MB": (peak_kb() - base) / 1024,
               "LRU max MB": lru.max_held_bytes / 2**20 if lru else None, "shard reads": lru.reads if lru else None})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=30_000, help="paired train items")
    parser.add_argument("--val", type=int, default=2000, help="paired val items (held either way: recall@1 needs them)")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--budget-mb", type=float, default=32.0, help="shard data held at most when streamed")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--shard-size", type=int, default=1024)
    parser.add_argument("--json", type=Path, default=None)
    a = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        write_data(Path(tmp), a.items, a.val, a.dim, a.shard_size)
        written = time.perf_counter() - t
        cache_mb = sum(p.stat().st_size for p in Path(tmp).rglob("*.safetensors")) / 2**20
        rows = []
        for path, budget in (("held in memory", None), ("streamed", a.budget_mb)):
            row = {"path": path, "budget MB": budget, "cache MB": cache_mb}
            row.update(_spawn(_run, tmp, a.dim, budget, a.batch))
            rows.append(row)
    held, streamed = rows
    columns = ["path", "budget MB", "cache MB", "tuples", "seconds", "tuples/s", "peak MB", "baseline MB",
               "above baseline MB", "LRU max MB", "shard reads"]
    targets = [target("streamed / held: data memory above baseline", streamed["above baseline MB"] /
                      max(1e-9, held["above baseline MB"]), 0.5, False),
               target("LRU max / budget", streamed["LRU max MB"] / a.budget_mb, 1.0, False),
               target("streamed / held: tuples per second", streamed["tuples/s"] / held["tuples/s"], 0.5, True)]
    print_report(f"one router epoch, tuples held vs streamed (1 thread, {a.items} items, dim {a.dim}, "
                 f"caches written in {written:.0f} s)", rows, columns, targets)
    write_json(a.json, {"benchmark": "router_memory", "params": {**vars(a), "json": None}, "rows": rows,
                        "threads": 1, "seconds": time.perf_counter() - start, "targets": targets})


if __name__ == "__main__":
    main()
