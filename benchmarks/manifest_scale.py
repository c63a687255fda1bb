"""Loading and embedding a manifest of millions of items as a stream (`Dataset.load`, then
`embed_dataset` on it, as `spacebind fuse` does).

Writes a manifest of text-only items (no media files) per size, embeds it with a stub text expert
(zeros, dim 8: the cost measured is spacebind's, not a model's) in a spawned process, and reports
time and peak resident memory (total, and above the process after imports). `Dataset.load`
keeps counts per split and modality and the labels, not the items; embedding holds a window of
`STREAM_ITEMS` items; ids stay in the shards (manifest.json keeps counts and checksums)
and duplicate ids are found from an 8-byte hash per line, so what still grows with the manifest
is about 8 bytes an item (the hashes) plus a checksum per shard: "extra B/item" shows it.
Run: python -m benchmarks.manifest_scale [--sizes 1000000,5000000 --shard-size 1024]"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from benchmarks.mining import peak_kb, reset_peak_kb
from benchmarks.search_scale import _spawn
from benchmarks.speed_report import print_report, write_json


def _lines(n: int) -> Iterator[str]:
    for i in range(n):
        yield json.dumps({"id": f"t{i:08d}", "split": "train", "label": f"c{i % 100}", "text": f"caption {i}"}) + "\n"


def _run(data: str, out: str, shard_size: int, queue: mp.Queue) -> None:
    import torch

    from spacebind.cache.store import embed_dataset
    from spacebind.io.datasets import Dataset
    from spacebind.space import Space

    torch.set_num_threads(1)
    expert = Space.from_encoders("stub", {"text": lambda xs: torch.zeros(len(xs), 8)}, dim=8)
    base = reset_peak_kb()
    start = time.perf_counter()
    dataset = Dataset.load(data)
    load_s, load_mb = time.perf_counter() - start, (peak_kb() - base) / 1024
    cache = embed_dataset(expert, dataset, out, shard_size=shard_size, batch_size=shard_size, progress=False)
    seconds = time.perf_counter() - start
    n = cache.count("text")
    queue.put({"items": n, "load s": load_s, "load extra MB": load_mb, "seconds": seconds, "items/s": n / seconds,
               "peak MB": peak_kb() / 1024,
               "extra peak MB": (peak_kb() - base) / 1024, "extra B/item": (peak_kb() - base) * 1024 / n})


def measure(n: int, shard_size: int, tmp: Path) -> dict[str, Any]:
    """Write an `n`-line manifest under `tmp`, embed it in a spawned process; its row."""
    data = tmp / f"m{n}"
    data.mkdir()
    start = time.perf_counter()
    with (data / "manifest.jsonl").open("w", encoding="utf-8") as fh:
        fh.writelines(_lines(n))
    write_s = time.perf_counter() - start
    row = _spawn(_run, str(data), str(tmp / f"cache{n}"), shard_size)
    return {"lines": n, "write s": write_s, **row}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,5000000", help="manifest lines, comma-separated")
    parser.add_argument("--shard-size", type=int, default=1024)
    parser.add_argument("--json", type=Path, default=None)
    a = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(int(n), a.shard_size, Path(tmp)) for n in a.sizes.split(",")]
    columns = ["lines", "write s", "load s", "load extra MB", "seconds", "items/s", "peak MB", "extra peak MB", "extra B/item"]
    print_report(f"a text manifest loaded and embedded (stub expert, shard size {a.shard_size})", rows, columns, [])
    write_json(a.json, {"benchmark": "manifest_scale", "params": {**vars(a), "json": None}, "rows": rows,
                        "seconds": time.perf_counter() - start, "targets": []})


if __name__ == "__main__":
    main()
