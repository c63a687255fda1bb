"""FreeBind variants on the procedural world, on held-out instance seeds, in the shape of the
paper's tables, against their parts and against the simplest thing that could work.

Columns: the base unified space U, each expert, `U + c(AT)` and `(U + d(IT)) + c(AT)` at their
default inference (projector targets chosen by `pairing: auto`, λ chosen on the val split) and at
FreeBind's `expertise` and `versatile` presets, and the plain-PyTorch reference bond of
`benchmarks.reference_bond` (one MLP AT → U on every modality pair of the paired train items,
λ audio 0.8 / text 0.5). Verdicts per seed: fused default ≥ AT on audio↔text and audio zero-shot,
≥ the base of the last bond − 1 point on image↔text, ≥ the reference on audio↔text. Emergent pair:
audio↔point R@1 of `(U + d(IT)) + c(AT)` (no expert covers both) over that of an oracle projector
trained on the true audio-point train pairs of the same space. Test split, R@1 both ways and
zero-shot acc1. Run: python -m benchmarks.freebind [--seeds 11 12] [--json PATH]"""
from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from benchmarks.reference_bond import combine, reference_bond
from spacebind.bonds.bind import VERSATILE
from spacebind.cache import CacheSet, dataset_key, ensure_caches
from spacebind.evaluation.evaluate import evaluate_space
from spacebind.evaluation.metrics import retrieval_recall
from spacebind.evaluation.report import task_scores
from spacebind.fuse import fuse
from spacebind.io.datasets import Dataset, Item
from spacebind.recipe import validate_recipe
from spacebind.space import Space

PRESETS = {"versatile": dict(VERSATILE), "expertise": {"text": 0.5, "audio": 0.8}}
EXPERTS = {"unified": "world_unified", "image_text": "world_image_text", "audio_text": "world_audio_text"}
TRAIN = {"epochs": 30, "batch_size": 256, "hidden": 512}
COMBINATION = {"type": "combination", "expert": "audio_text", "lambdas": PRESETS["versatile"], "mixture": 3,
               "presets": PRESETS}
RECIPES = {
    "U + c(AT)": [COMBINATION],
    "(U + d(IT)) + c(AT)": [{"type": "displacement", "expert": "image_text", "lambdas": {"image": 0.2, "text": 0.2},
                             "pairing": "all"}, COMBINATION],
}
AUDIO_TEXT = ("text→audio R@1", "audio→text R@1", "audio zero-shot acc1")
IMAGE_TEXT = ("text→image R@1", "image→text R@1")


def reference_fused(base: Space, expert: Space, caches: CacheSet, train: Sequence[Item], items: Sequence[Item],
                    seed: int) -> dict[str, torch.Tensor]:
    """The reference bond base + c(expert) trained on every (expert modality → base modality) pair of
    the `train` items, combined at λ audio 0.8 / text 0.5: its fused audio and text of `items`."""
    xs, ys = [], []
    for a in expert.modalities:
        for b in base.modalities:
            ids = [it.id for it in train if a in it.fields and b in it.fields]
            xs.append(caches.embeddings(expert, a, ids))
            ys.append(caches.embeddings(base, b, ids))
    projector = reference_bond(torch.cat(xs), torch.cat(ys), seed=seed)
    ids = [it.id for it in items]
    with torch.no_grad():
        return {m: combine(caches.embeddings(base, m, ids), projector(caches.embeddings(expert, m, ids)), lam)
                for m, lam in (("audio", 0.8), ("text", 0.5))}


def reference_scores(base: Space, expert: Space, caches: CacheSet, dataset: Dataset, seed: int) -> dict[str, float]:
    """The reference bond (`reference_fused`) on the paired train items: its test R@1 on audio↔text."""
    items = [it for it in dataset.select("test") if "audio" in it.fields and "text" in it.fields]
    fused = reference_fused(base, expert, caches, dataset.select("train"), items, seed)
    diagonal = list(range(len(items)))
    return {"text→audio R@1": retrieval_recall(fused["text"], fused["audio"], diagonal, (1,))[1],
            "audio→text R@1": retrieval_recall(fused["audio"], fused["text"], diagonal, (1,))[1]}


def emergent_ratio(space: Space, caches: CacheSet, dataset: Dataset, seed: int) -> dict[str, float]:
    """audio↔point R@1 of `space` and of an oracle projector (fused audio → fused point) trained on
    the true audio-point train pairs, and their ratio."""
    def pairs(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        ids = [it.id for it in dataset.select(split) if "audio" in it.fields and "point" in it.fields]
        return caches.embeddings(space, "audio", ids), caches.embeddings(space, "point", ids)

    oracle = reference_bond(*pairs("train"), seed=seed)
    audio, point = pairs("test")
    diagonal = list(range(len(audio)))
    with torch.no_grad():
        mapped = oracle(audio)
    fused = (retrieval_recall(audio, point, diagonal, (1,))[1] + retrieval_recall(point, audio, diagonal, (1,))[1]) / 2
    best = (retrieval_recall(mapped, point, diagonal, (1,))[1] + retrieval_recall(point, mapped, diagonal, (1,))[1]) / 2
    return {"fused audio↔point R@1": fused, "oracle audio↔point R@1": best, "ratio": fused / best if best else float("nan")}


def run_seed(seed: int, root: Path) -> tuple[dict[str, dict[str, float]], dict[str, dict]]:
    """Scores per column per task on one held-out world, and the choices and emergent-pair figures."""
    columns: dict[str, dict[str, float]] = {}
    notes: dict[str, dict] = {}
    data = {"world": {"seed": seed, "train": 2000, "val": 300, "test": 500}}
    for label, bonds in RECIPES.items():
        raw = {"name": "freebind", "data": data, "experts": EXPERTS, "base": "unified", "bonds": bonds, "train": TRAIN}
        work = root / f"work-{seed}"
        result = fuse(validate_recipe(raw), work=work, out=root / f"out-{seed}", progress=False)
        for r in result.records:
            columns.setdefault(r["model"] if r["role"] != "fused" else f"{label} default", {}).update(task_scores([r]))
        dataset = Dataset.load(next((work / "data").iterdir()))
        caches = ensure_caches([result.space], dataset, work / "cache" / dataset_key(dataset), progress=False)
        for preset in PRESETS:
            space = result.space.with_lambdas(preset)
            columns[f"{label} {preset}"] = task_scores(evaluate_space(space, "fused", caches, dataset, "test", [1]))
        notes[label] = {"choices": result.space.choices}
        if label == "U + c(AT)":
            columns["reference U + c(AT)"] = reference_scores(result.space.base, result.space.experts[0], caches,
                                                              dataset, seed)
        else:
            notes[label]["emergent"] = emergent_ratio(result.space, caches, dataset, seed)
    return columns, notes


def verdicts(columns: dict[str, dict[str, float]]) -> list[str]:
    """Margins in points of each fused default against AT, against its base's image-text, and the reference."""
    lines = []
    for label, base in (("U + c(AT)", "unified"), ("(U + d(IT)) + c(AT)", "image_text")):
        fused = columns[f"{label} default"]
        vs_at = ", ".join(f"{t} {100 * (fused[t] - columns['audio_text'][t]):+.1f}" for t in AUDIO_TEXT)
        vs_base = ", ".join(f"{t} {100 * (fused[t] - columns[base][t]):+.1f}" for t in IMAGE_TEXT)
        vs_ref = ", ".join(f"{t} {100 * (fused[t] - columns['reference U + c(AT)'][t]):+.1f}" for t in AUDIO_TEXT[:2])
        lines.append(f"{label}: vs audio_text {vs_at}; vs {base} {vs_base}; vs reference {vs_ref}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    report: dict[str, object] = {"seeds": {}}
    console = Console(width=240)
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            columns, notes = run_seed(seed, Path(tmp))
            report["seeds"][seed] = {"columns": columns, "notes": notes, "verdicts": verdicts(columns)}
            for line in verdicts(columns):
                console.print(f"seed {seed}: {line}")
            emergent = notes["(U + d(IT)) + c(AT)"]["emergent"]
            console.print(f"seed {seed}: emergent audio↔point R@1 {100 * emergent['fused audio↔point R@1']:.1f} vs oracle "
                          f"{100 * emergent['oracle audio↔point R@1']:.1f} (ratio {emergent['ratio']:.2f})")
            for column, scores in columns.items():
                for task, value in scores.items():
                    sums[column][task] += value / len(args.seeds)
    names = list(sums)
    tasks = list(dict.fromkeys(t for c in names for t in sums[c]))
    table = Table("metric", *names, title=f"FreeBind on the procedural world, test split, mean over seeds {args.seeds} (%)")
    for task in tasks:
        table.add_row(task, *(f"{100 * sums[c][task]:.1f}" if task in sums[c] else "–" for c in names))
    console.print(table)
    if args.json:
        report["mean"] = {c: dict(v) for c, v in sums.items()}
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
