"""Quality of the procedural-world experts on a held-out world: retrieval R@1 both ways on every
pair each expert covers, and zero-shot acc1. Run: python -m benchmarks.world_experts [--seed 5]"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rich.console import Console

from spacebind.cache import ensure_caches
from spacebind.evaluation.evaluate import evaluate_space
from spacebind.evaluation.report import records_table
from spacebind.experts.registry import EXPERTS
from spacebind.io.datasets import Dataset
from spacebind.world.generate import generate_world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=5, help="held-out instance seed of the test world")
    parser.add_argument("--test", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_world(Path(tmp) / "world", seed=args.seed, sizes={"test": args.test}, progress=False)
        dataset = Dataset.load(root)
        records, times = [], {}
        for name in EXPERTS.list("world_*"):
            start = time.perf_counter()
            expert = EXPERTS.create(name)
            times[name] = time.perf_counter() - start
            caches = ensure_caches([expert], dataset, Path(tmp) / "cache", progress=False)
            records += evaluate_space(expert, "expert", caches, dataset, "test", [1, 5, 10])
    console = Console()
    console.print(records_table(records, title=f"world experts on held-out seed {args.seed} (%)"))
    for name, seconds in times.items():
        console.print(f"{name}: built in {seconds:.1f} s (training included when not cached)")


if __name__ == "__main__":
    main()
