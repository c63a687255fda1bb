"""FreeBind variants on the procedural world, on held-out instance seeds, in the shape of the
paper's tables, against their parts and against the simplest thing that could work.

Columns: the base unified space U, each expert, `U + c(AT)` and `(U + d(IT)) + c(AT)` at their
default inference (projector targets chosen by `pairing: auto`, λ chosen on the val split) and at
FreeBind's `expertise` and `versatile` presets, and the plain-PyTorch reference bond of
`benchmarks.reference_bond` (one MLP AT → U on every modality pair of the paired train items,
λ audio 0.8 / text 0.5). Verdicts per seed and pooled over the seeds: fused default ≥ AT on
audio↔text R@1 and audio zero-shot, ≥ the base of the last bond − 1 point on image↔text and image
zero-shot, ≥ the reference on audio↔text, each margin with its 95 % paired bootstrap interval over
the test queries (`benchmarks.paired`; "tie" where a shortfall is within it). Emergent pair:
audio↔point R@1 of `(U + d(IT)) + c(AT)` (no expert covers both) over that of an oracle projector
trained on the true audio-point train pairs of the same space. Test split, R@1 both ways and
zero-shot acc1. Run: python -m benchmarks.freebind [--seeds 11 12] [--json PATH]"""
from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from benchmarks.paired import compare
from benchmarks.reference_bond import combine, reference_bond
from spacebind.bonds.bind import VERSATILE
from spacebind.cache import CacheSet, dataset_key, ensure_caches
from spacebind.evaluation.evaluate import class_centres, evaluate_space, labelled_items
from spacebind.evaluation.metrics import first_hit_ranks, retrieval_recall
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
IMAGE_TEXT = ("text→image R@1", "image→text R@1", "image zero-shot acc1")
Hits = dict[str, torch.Tensor]  # per task label, each test query's R@1 hit
Embed = Callable[[str, list[str]], torch.Tensor]  # (modality, item ids) → embeddings


def diagonal_hits(query: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """Per query, whether its top gallery item is its own pair (row i pairs with row i)."""
    return first_hit_ranks(query, gallery, range(len(query))) < 1


def split_hits(embed: Embed, dataset: Dataset, pairs: Sequence[tuple[str, str]], classes: torch.Tensor | None = None,
              zeroshot: Sequence[str] = ()) -> Hits:
    """Per-query hits on the test split under `task_scores`' labels: R@1 on the items holding both
    modalities of each pair, both directions ("a→b R@1": a-queries retrieving b), and zero-shot
    acc1 of each `zeroshot` modality's labelled items against the class embeddings `classes`."""
    out = {}
    for a, b in pairs:
        ids = [it.id for it in dataset.select("test") if a in it.fields and b in it.fields]
        ea, eb = embed(a, ids), embed(b, ids)
        out[f"{a}→{b} R@1"], out[f"{b}→{a} R@1"] = diagonal_hits(ea, eb), diagonal_hits(eb, ea)
    for m in zeroshot:
        ids, labels = labelled_items(dataset, "test", m)
        out[f"{m} zero-shot acc1"] = (embed(m, ids) @ classes.T).argmax(dim=1) == labels
    return out


def space_hits(space: Space, caches: CacheSet, dataset: Dataset) -> Hits:
    """`split_hits` of a space on image↔text, audio↔text and image / audio zero-shot, where it covers them."""
    covered = set(space.modalities)
    classes = class_centres(dataset, lambda prompts: space.encode("text", prompts), space.blocks)
    return split_hits(lambda m, ids: caches.embeddings(space, m, ids), dataset,
                     [p for p in (("text", "audio"), ("text", "image")) if set(p) <= covered], classes,
                     [m for m in ("image", "audio") if m in covered])


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


def reference_hits(base: Space, expert: Space, caches: CacheSet, dataset: Dataset, seed: int) -> Hits:
    """The reference bond (`reference_fused`) on the paired train items: its per-query test R@1 hits
    on audio↔text."""
    items = [it for it in dataset.select("test") if "audio" in it.fields and "text" in it.fields]
    fused = reference_fused(base, expert, caches, dataset.select("train"), items, seed)
    rows = {it.id: i for i, it in enumerate(items)}
    return split_hits(lambda m, ids: fused[m][[rows[i] for i in ids]], dataset, [("text", "audio")])


def reference_scores(base: Space, expert: Space, caches: CacheSet, dataset: Dataset, seed: int) -> dict[str, float]:
    """The reference bond's test R@1 on audio↔text (`reference_hits` averaged)."""
    return {task: float(h.float().mean()) for task, h in reference_hits(base, expert, caches, dataset, seed).items()}


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


def run_seed(seed: int, root: Path) -> tuple[dict[str, dict[str, float]], dict[str, dict], dict[str, Hits]]:
    """Scores per column per task on one held-out world, the choices and emergent-pair figures, and
    the per-query test hits of the columns the verdicts compare."""
    columns: dict[str, dict[str, float]] = {}
    notes: dict[str, dict] = {}
    hits: dict[str, Hits] = {}
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
        hits[f"{label} default"] = space_hits(result.space, caches, dataset)
        for leaf in result.space.leaves():
            hits[leaf.name] = space_hits(leaf, caches, dataset)
        if label == "U + c(AT)":
            hits["reference U + c(AT)"] = reference_hits(result.space.base, result.space.experts[0], caches, dataset,
                                                         seed)
            columns["reference U + c(AT)"] = {t: float(h.float().mean()) for t, h in hits["reference U + c(AT)"].items()}
        else:
            notes[label]["emergent"] = emergent_ratio(result.space, caches, dataset, seed)
    return columns, notes, hits


def verdicts(seeds: Sequence[dict[str, Hits]]) -> list[str]:
    """Per fused default, its margins in points (95 % paired bootstrap intervals over the test
    queries, each seed of `seeds` a stratum) against AT on audio↔text and audio zero-shot, against
    its base on image↔text and image zero-shot (tolerance 1 point) and against the reference on
    audio↔text, each with its worst verdict."""
    lines = []
    for label, base in (("U + c(AT)", "unified"), ("(U + d(IT)) + c(AT)", "image_text")):
        ours = f"{label} default"
        lines.append(f"{label}: vs audio_text {compare(seeds, ours, 'audio_text', AUDIO_TEXT)}; "
                     f"vs {base} {compare(seeds, ours, base, IMAGE_TEXT, 1.0)}; "
                     f"vs reference {compare(seeds, ours, 'reference U + c(AT)', AUDIO_TEXT[:2])}")
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
        every: list[dict[str, Hits]] = []
        for seed in args.seeds:
            columns, notes, hits = run_seed(seed, Path(tmp))
            every.append(hits)
            report["seeds"][seed] = {"columns": columns, "notes": notes, "verdicts": verdicts([hits])}
            for line in report["seeds"][seed]["verdicts"]:
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
    if len(args.seeds) > 1:
        report["verdicts"] = verdicts(every)
        for line in report["verdicts"]:
            console.print(f"seeds {args.seeds} pooled: {line}")
    if args.json:
        report["mean"] = {c: dict(v) for c, v in sums.items()}
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
