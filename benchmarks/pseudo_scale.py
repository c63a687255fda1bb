"""Pseudo-pair building at scale: peak memory of `spacebind.retrieval.pseudo.pseudo_pairs` over
unpaired pools of N text-only and N audio-only items (issue 18: memory must not grow with
per-item Python objects).

Setup (not measured): a stream of N text-only and N audio-only train items (made on the fly,
as `Manifest.iter_items` gives them, nothing loaded), and two synthetic float16 caches in the cache format (`AT`, the miner and
source space, and `U`, the target), of `--dim` dimensions, written shard by shard. The measured
run, in a spawned process on `--threads` torch/FAISS threads, is one `pseudo_pairs` of the pseudo
dataset text → audio (k = `--k`), the mining on an IVF index (`--nlist`, `--nprobe`: exact mining
of 1M × 1M does not fit in minutes on one thread; the index kind does not change what is held per
item). It prints the peak RSS, the peak above the process's baseline after imports, the bytes of
the pairs returned (own, partner and mirror pairs: 3N rows of 2 × dim float32, which any
implementation returns), and the rest per item.

The dataset handed to `pseudo_pairs` is that stream with a `select` added (a list of the
split's items of a modality, for implementations that call it; the implementation since issue 18
does not): a loaded `Dataset` would hold every item regardless.
Run: python -m benchmarks.pseudo_scale [--sizes 200000 1000000 --dim 32 --json out.json]"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.mining import peak_kb, reset_peak_kb
from benchmarks.speed_report import print_report, write_json

SHARD = 4096


def _write_world(root: Path, n: int, dim: int) -> None:
    """Caches AT and U of n text-only then n audio-only items (ids t…, a…), shard by shard."""
    import torch

    from spacebind.cache import store
    from spacebind.io.files import save_tensors
    from spacebind.io.files import write_json as write_manifest

    root.mkdir(parents=True, exist_ok=True)
    dataset_sha = "synthetic"
    g = np.random.default_rng(0)
    for expert in ("AT", "U"):
        out = root / "caches" / expert
        header: dict[str, Any] = {"format": store.FORMAT, "expert": expert, "source": expert, "kwargs": {},
                                  "checkpoint": None, "sha256": None, "dim": dim, "dataset": str(root),
                                  "dataset_sha256": dataset_sha, "shard_size": SHARD, "splits": None,
                                  "modalities": {}}
        for m, prefix in (("text", "t"), ("audio", "a")):
            (out / m).mkdir(parents=True, exist_ok=True)
            entry: dict[str, Any] = {"shards": [], "bad": []}
            for k, a in enumerate(range(0, n, SHARD)):
                ids = [f"{prefix}{i:08d}" for i in range(a, min(n, a + SHARD))]
                x = g.standard_normal((len(ids), dim), dtype=np.float32)
                x /= np.linalg.norm(x, axis=1, keepdims=True)
                data = torch.from_numpy(x).to(torch.float16)
                meta = {"ids": json.dumps(ids), "planned": store._digest(ids), "bad": "[]"}
                meta["sha256"] = store._content_sha256(data, meta)
                path = out / m / f"shard-{k:05d}.safetensors"
                save_tensors(path, {"embeddings": data}, metadata=meta)
                entry["shards"].append({"file": f"{m}/{path.name}", "n": len(ids), "sha256": meta["sha256"],
                                        "ids_sha256": hashlib.sha256(meta["ids"].encode()).hexdigest()})
            header["modalities"][m] = entry
        write_manifest(out / "manifest.json", header)


class _Streamed:
    """The manifest's items made on the fly (parsing 2M lines with path checks takes ~10 min a pass
    on this machine, the same for any implementation)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def iter_items(self):  # noqa: ANN201
        from spacebind.io.datasets import Item

        for i in range(self.n):
            yield Item(f"t{i:08d}", "train", None, {"text": f"caption {i}"})
        for i in range(self.n):
            yield Item(f"a{i:08d}", "train", None, {"audio": f"/data/audio/{i}.wav"})


def _run(root: str, n: int, dim: int, k: int, nlist: int, nprobe: int, threads: int, queue: mp.Queue) -> None:
    from functools import partial

    import torch

    import spacebind.retrieval.pseudo as pseudo
    from spacebind.cache import CacheSet, EmbeddingCache
    from spacebind.retrieval.mining import IndexOptions, mine
    from spacebind.space import Space
    from spacebind.training.threads import cpu_threads

    torch.set_num_threads(threads)
    import faiss

    faiss.omp_set_num_threads(threads)
    spaces = {name: Space.from_encoders(name, {"text": None, "audio": None}, dim=dim) for name in ("AT", "U")}
    pseudo.mine = partial(mine, index="ivf", options=IndexOptions(nlist=nlist, nprobe=nprobe, train_size=64 * nlist))
    base = reset_peak_kb()
    start = time.perf_counter()
    with cpu_threads(threads):
        caches = CacheSet({name: EmbeddingCache.open(Path(root) / "caches" / name) for name in spaces})
        spec = pseudo.PseudoDataset(seed="text", partners=["audio"], k=k)
        x, y, sources = pseudo.pseudo_pairs(spec, spaces["AT"], spaces["U"], caches, _Streamed(n), "train", "AT")
    seconds = time.perf_counter() - start
    peak = peak_kb() / 1024
    pairs_mb = (x.nbytes + y.nbytes) / 2**20
    extra = peak - base / 1024
    queue.put({"items": 2 * n, "pairs": len(x), "seconds": seconds, "peak MB": peak, "extra peak MB": extra,
               "pairs MB": pairs_mb, "rest B/item": (extra - pairs_mb) * 2**20 / (2 * n), "sources": "+".join(sources)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000, 1_000_000],
                        help="items per modality (N text-only + N audio-only)")
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--nprobe", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=None, help="where to write the synthetic data (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None)
    a = parser.parse_args()
    from benchmarks.search_scale import _spawn

    rows = []
    start = time.perf_counter()
    for n in a.sizes:
        tmp = Path(tempfile.mkdtemp(prefix="pseudo_scale-", dir=a.dir))
        try:
            t = time.perf_counter()
            _write_world(tmp / "w", n, a.dim)
            setup = time.perf_counter() - t
            row = _spawn(_run, str(tmp / "w"), n, a.dim, a.k, a.nlist, a.nprobe, a.threads)
            rows.append({**row, "setup s": setup})
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    cols = ["items", "pairs", "seconds", "peak MB", "extra peak MB", "pairs MB", "rest B/item"]
    print_report(f"pseudo_pairs text→audio over unpaired pools, dim {a.dim}, k {a.k}, IVF nlist {a.nlist} "
                 f"nprobe {a.nprobe}, {a.threads} thread(s)", rows, cols, [])
    if len(rows) > 1:
        (r0, r1) = rows[0], rows[-1]
        slope = ((r1["extra peak MB"] - r1["pairs MB"]) - (r0["extra peak MB"] - r0["pairs MB"])) * 2**20 / (r1["items"] - r0["items"])
        print(f"marginal memory besides the pairs: {slope:.0f} B per item ({r0['items']:,} → {r1['items']:,} items)")
    write_json(a.json, {"benchmark": "pseudo_scale", "params": {**vars(a), "json": None, "dir": None}, "rows": rows,
                        "seconds": time.perf_counter() - start, "targets": []})


if __name__ == "__main__":
    main()
