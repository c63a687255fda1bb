"""FreeBind variants on the procedural world, on held-out instance seeds, in the shape of the
paper's tables: base unified space, each expert, U + c(audio-text) with the `expertise` and
`versatile` presets, and (U + d(image-text)) + c(audio-text). Retrieval R@1 both ways on every
pair and zero-shot acc1, averaged over seeds. Run: python -m benchmarks.freebind [--seeds 11 12]"""
from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from spacebind.cache import dataset_key, ensure_caches
from spacebind.evaluation.evaluate import evaluate_space
from spacebind.evaluation.report import task_scores
from spacebind.fuse import fuse
from spacebind.recipe import validate_recipe

PRESETS = {"versatile": {"text": 0.1, "audio": 0.5}, "expertise": {"text": 0.5, "audio": 0.8}}
EXPERTS = {"unified": "world_unified", "image_text": "world_image_text", "audio_text": "world_audio_text"}
TRAIN = {"epochs": 30, "batch_size": 256, "hidden": 512}


def _combination(expert: str) -> dict:
    return {"type": "combination", "expert": expert, "lambdas": PRESETS["versatile"], "mixture": 3,
            "pairing": "all", "presets": PRESETS}


RECIPES = {
    "U + c(AT)": [_combination("audio_text")],
    "(U + d(IT)) + c(AT)": [{"type": "displacement", "expert": "image_text", "lambdas": {"image": 0.2, "text": 0.2},
                             "pairing": "all"},
                            _combination("audio_text")],
}


def run_seed(seed: int, root: Path) -> dict[str, dict[str, float]]:
    """Scores per column (model / preset) per task on one held-out world."""
    columns: dict[str, dict[str, float]] = {}
    data = {"world": {"seed": seed, "train": 2000, "val": 300, "test": 500}}
    for label, bonds in RECIPES.items():
        raw = {"name": "freebind", "data": data, "experts": EXPERTS, "base": "unified", "bonds": bonds, "train": TRAIN}
        result = fuse(validate_recipe(raw), work=root / f"work-{seed}", out=root / f"out-{seed}", progress=False)
        for r in result.records:
            if r["role"] != "fused":
                columns.setdefault(r["model"], {}).update(task_scores([r]))
        dataset = _dataset(root / f"work-{seed}")
        caches = ensure_caches([result.space], dataset, root / f"work-{seed}" / "cache" / dataset_key(dataset), progress=False)
        for preset in PRESETS:
            space = result.space.with_lambdas(preset)
            columns[f"{label} {preset}"] = task_scores(evaluate_space(space, "fused", caches, dataset, "test", [1]))
    return columns


def _dataset(work: Path):
    from spacebind.io.datasets import Dataset

    return Dataset.load(next((work / "data").iterdir()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for column, scores in run_seed(seed, Path(tmp)).items():
                for task, value in scores.items():
                    sums[column][task] += value / len(args.seeds)
    columns = list(sums)
    tasks = list(dict.fromkeys(t for c in columns for t in sums[c]))
    table = Table("metric", *columns, title=f"FreeBind on the procedural world, test split, mean over seeds {args.seeds} (%)")
    for task in tasks:
        table.add_row(task, *(f"{100 * sums[c][task]:.1f}" if task in sums[c] else "–" for c in columns))
    Console(width=240).print(table)
    if args.json:
        args.json.write_text(json.dumps({c: dict(v) for c, v in sums.items()}, indent=2))


if __name__ == "__main__":
    main()
