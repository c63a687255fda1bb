"""Run every speed benchmark in sequence, print their tables and a summary of the targets, and
write all results as one JSON file (default benchmarks/results/speed-<timestamp>.json) so runs
can be compared over time. Sizes are arguments; the defaults finish in a few minutes on a
2-core machine. Run: python -m benchmarks.speed [--json PATH] [--only train retrieval ...]"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any, Callable

import torch
from rich.console import Console
from rich.table import Table

from benchmarks import mining, speed_embed, speed_encode, speed_mixture, speed_retrieval, speed_train


def _benchmarks(args: argparse.Namespace) -> dict[str, tuple[Callable[[], Any], Callable[[Any], None]]]:
    """Name → (measure, report) with the sizes from `args`."""
    return {
        "train": (lambda: speed_train.measure(args.train_pairs, 512, 768, args.train_batch, 1, repeats=2), speed_train.report),
        "embed": (lambda: speed_embed.measure(args.items, "world_image_text", args.seed, 5, 1024), speed_embed.report),
        "retrieval": (lambda: speed_retrieval.measure(args.retrieval_n, 512, 10, args.retrieval_chunk),
                      speed_retrieval.report),
        "mining": (lambda: {"benchmark": "mining", "dim": 512, "k": 10,
                            "rows": mining.measure_all(args.mining_n, args.mining_naive_n, 512, 10, 4096)},
                   lambda r: mining.report(r["rows"], r["dim"], r["k"])),
        "encode": (lambda: speed_encode.measure(args.items // 2, 512, args.seed, 5), speed_encode.report),
        "mixture": (lambda: speed_mixture.measure(args.mixture_members, 1, 4096, 2, 4096, 1, repeats=1),
                    speed_mixture.report),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path, default=None, help="results file (default benchmarks/results/speed-<time>.json)")
    parser.add_argument("--only", nargs="+", choices=["train", "embed", "retrieval", "mining", "encode", "mixture"], default=None)
    parser.add_argument("--train-pairs", type=int, default=25_000)
    parser.add_argument("--train-batch", type=int, default=1024)
    parser.add_argument("--items", type=int, default=2000, help="world items to embed (half of them to encode)")
    parser.add_argument("--seed", type=int, default=11, help="world seed of the embed and encode benchmarks")
    parser.add_argument("--retrieval-n", type=int, default=16_384)
    parser.add_argument("--retrieval-chunk", type=int, default=2048)
    parser.add_argument("--mining-n", type=int, default=30_000)
    parser.add_argument("--mining-naive-n", type=int, default=10_000)
    parser.add_argument("--mixture-members", type=int, default=7, help="mixture members (trained at one thread)")
    args = parser.parse_args()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = args.json or Path(__file__).parent / "results" / f"speed-{stamp}.json"
    results: dict[str, Any] = {"time": stamp, "machine": {"platform": platform.platform(), "threads": torch.get_num_threads(),
                                                          "torch": torch.__version__}, "benchmarks": {}}
    for name, (measure, report) in _benchmarks(args).items():
        if args.only and name not in args.only:
            continue
        start = time.perf_counter()
        result = measure()
        result["wall_seconds"] = time.perf_counter() - start
        report(result)
        results["benchmarks"][name] = result
    summary = Table("benchmark", "target", "measured", "required", "met", "wall s", title="speed targets")
    for name, result in results["benchmarks"].items():
        for t in result.get("targets", []):
            fmt = (lambda v: f"{100 * v:.0f} %") if t["unit"] == "%" else (lambda v: f"{v:.2f}×")
            summary.add_row(name, t["target"], fmt(t["measured"]), f"{t['direction']} {fmt(t['limit'])}",
                            "yes" if t["met"] else "NO", f"{result['wall_seconds']:.0f}")
    Console(width=160).print(summary)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
    Console().print(f"results written to {path}")


if __name__ == "__main__":
    main()
