"""Does the channel's κ change the expert's own pairs beyond the noise? Cross-fitted evidence.

A combination's channel keeps the expert's ranking of the pairs it carries at κ's prior (0.999)
unless the val split shows another κ better beyond the noise (`spacebind.bonds.lambdas`); val
holds 300 paired items, too few to resolve 1–2 points of R@1. This benchmark asks what more
evidence says. The recipe is fused as usual (its λ and heads chosen on val); then its last bond
is trained again K times at those λ and heads, each time without one fold of the train items,
and scored on that fold (out of fold: the bond never saw those items; the world's experts are
trained on their own data, so the expert did not either). Per κ (both carried modalities): the
margins over the expert on text→audio, audio→text R@1 and audio zero-shot acc1 pooled over the
folds (K × 400 queries, gallery one fold), the share of 500 bootstrap resamples in which its
worst margin beats the prior's (the guard's test, 90 % to move), and the same margins on the
test split for the bond trained on all train items. The last row does the same for the
plain-PyTorch reference bond of `benchmarks.freebind` (λ audio 0.8 / text 0.5, no channel; R@1 only),
trained on the same folds, so its edge over the expert is measured out of fold as well.

In the demo the last bond's base `U + d(IT)` was trained on all train items, the folds included.
Run: python -m benchmarks.kappa_crossfit [--recipe freebind|demo] [--seeds 11 12] [--folds 5]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import torch
import yaml
from rich.console import Console
from rich.table import Table

from benchmarks.freebind import EXPERTS, TRAIN, diagonal_hits, reference_fused, reference_scores
from spacebind.bonds.bind import VERSATILE, BoundSpace, train_bond
from spacebind.bonds.lambdas import CHANNEL, CHANNEL_PRIOR, DEFAULT_GRID, _objective, _Tasks, bootstrap_share
from spacebind.cache import CacheSet, dataset_key, ensure_caches
from spacebind.evaluation.evaluate import evaluate_space
from spacebind.evaluation.report import task_scores
from spacebind.fuse import fuse
from spacebind.io.datasets import Dataset
from spacebind.recipe import validate_recipe
from spacebind.training.trainer import TrainConfig

CARRIED = ("text→audio R@1", "audio→text R@1", "audio zero-shot acc1")
KAPPAS = sorted({*DEFAULT_GRID[:-1], CHANNEL_PRIOR})
FOLD = "fold"  # the split name the held-out fold's train items take


def recipe(name: str, seed: int) -> dict:
    """The raw recipe: the demo's, or `benchmarks.freebind`'s `U + c(AT)`, on world `seed`."""
    if name == "demo":
        raw = yaml.safe_load((Path(__file__).parents[1] / "recipes" / "demo.yaml").read_text())
        raw.pop("export")
        raw["data"]["world"]["seed"] = seed
        return raw
    bond = {"type": "combination", "expert": "audio_text", "lambdas": dict(VERSATILE), "mixture": 3}
    return {"name": "kappa", "data": {"world": {"seed": seed, "train": 2000, "val": 300, "test": 500}},
            "experts": EXPERTS, "base": "unified", "bonds": [bond], "train": TRAIN}


def fold_hits(space: BoundSpace, caches: CacheSet, dataset: Dataset, folds: int, train: TrainConfig, seed: int
              ) -> tuple[dict, dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Per κ, per carried task, the out-of-fold per-query hits of `space`'s bond trained again
    without each fold (same λ and heads type), and the expert's hits on the same queries; then the
    reference bond's out-of-fold hits on audio↔text and the expert's on the same queries."""
    items = dataset.select("train")
    fold = torch.randperm(len(items), generator=torch.Generator().manual_seed(0)) % folds
    projector = space.choices.get("projector", {}).get("chosen", "mlp")
    mixture = len(getattr(space.heads[space.experts[0].name], "members", [None]))
    params = [CHANNEL + m for m in ("audio", "text")]
    fused: dict[float, dict[str, list[torch.Tensor]]] = {k: {t: [] for t in CARRIED} for k in KAPPAS}
    expert: dict[str, list[torch.Tensor]] = {t: [] for t in CARRIED}
    reference: dict[str, list[torch.Tensor]] = {t: [] for t in CARRIED[:2]}
    expert_paired: dict[str, list[torch.Tensor]] = {t: [] for t in CARRIED[:2]}
    others = [it for it in dataset.select() if it.split != "train"]
    for f in range(folds):
        relabelled = [dataclasses.replace(it, split=FOLD) if int(fold[i]) == f else it for i, it in enumerate(items)]
        split = Dataset.of_items(dataset.root, relabelled + others, dataset.classes, dataset.templates)
        heads = train_bond(space.base, list(space.experts), "combination", caches, split, lambdas=space.lambdas,
                           tune=False, projector=projector, mixture=mixture, train=train, progress=False).heads
        bond = BoundSpace(space.base, list(space.experts), "combination", heads, lambdas=space.lambdas,
                          channels={"audio": 0.0, "text": 0.0})
        tasks = _Tasks(bond, [space.base, *space.experts], caches, split, FOLD, params, KAPPAS)
        for k in KAPPAS:
            hits = tasks.fused_hits({p: k for p in params})
            for t in CARRIED:
                fused[k][t].append(hits[t])
        for t in CARRIED:
            expert[t].append(tasks.best_part[t])
        held = [it for it in split.select(FOLD) if "audio" in it.fields and "text" in it.fields]
        ref = reference_fused(space.base, space.experts[0], caches, split.select("train"), held, seed)
        own = {m: caches.embeddings(space.experts[0], m, [it.id for it in held]) for m in ("audio", "text")}
        for t, (q, g) in zip(CARRIED[:2], (("text", "audio"), ("audio", "text"))):
            reference[t].append(diagonal_hits(ref[q], ref[g]))
            expert_paired[t].append(diagonal_hits(own[q], own[g]))

    def cat(hits: dict[str, list[torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {t: torch.cat(h) for t, h in hits.items()}

    return {k: cat(by_task) for k, by_task in fused.items()}, cat(expert), cat(reference), cat(expert_paired)


def run_seed(name: str, seed: int, folds: int, root: Path) -> list[dict]:
    """One row per κ: cross-fitted margins and guard share, test margins (points)."""
    raw = recipe(name, seed)
    work = root / f"work-{seed}"
    space = fuse(validate_recipe(raw), work=work, out=root / f"out-{seed}", progress=False).space
    dataset = Dataset.load(next((work / "data").iterdir()))
    caches = ensure_caches([space], dataset, work / "cache" / dataset_key(dataset), progress=False)
    fused, expert, reference, expert_paired = fold_hits(space, caches, dataset, folds, TrainConfig(**raw["train"]),
                                                        seed)
    groups = {t: torch.arange(len(h)) for t, h in expert.items()}
    at_test = task_scores(evaluate_space(space.experts[0], "expert", caches, dataset, "test", [1]))
    rows = []
    for k in KAPPAS:
        test = task_scores(evaluate_space(space.with_lambdas({}, channels={"audio": k, "text": k}), "fused", caches,
                                          dataset, "test", [1]))
        rows.append({
            "kappa": k,
            "crossfit": {t: 100 * float(fused[k][t].float().mean() - expert[t].float().mean()) for t in CARRIED},
            "worst": 100 * _objective(fused[k], expert)[0],
            "share": bootstrap_share(fused[k], fused[CHANNEL_PRIOR], expert, groups, 500, 0),
            "test": {t: 100 * (test[t] - at_test[t]) for t in CARRIED},
        })
    ref_test = reference_scores(space.base, space.experts[0], caches, dataset, seed)
    rows.append({
        "kappa": "reference",
        "crossfit": {t: 100 * float(reference[t].float().mean() - expert_paired[t].float().mean()) for t in CARRIED[:2]},
        "worst": 100 * _objective(reference, expert_paired)[0],
        "share": bootstrap_share(reference, expert_paired, expert_paired,
                                 {t: torch.arange(len(h)) for t, h in reference.items()}, 500, 0),
        "test": {t: 100 * (ref_test[t] - at_test[t]) for t in CARRIED[:2]},
    })
    return rows


def cell(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:+.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipe", choices=("freebind", "demo"), default="freebind")
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    console = Console(width=200)
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            rows = run_seed(args.recipe, seed, args.folds, Path(tmp))
            report[seed] = rows
            table = Table("κ", *(f"cross-fit {t}" for t in CARRIED), "worst", "share vs prior (reference: vs expert)",
                          *(f"test {t}" for t in CARRIED),
                          title=f"{args.recipe}, world seed {seed}: margins over the audio-text expert (points)")
            for r in rows:
                table.add_row(f"{r['kappa']}", *(cell(r["crossfit"].get(t), 2) for t in CARRIED), f"{r['worst']:+.2f}",
                              f"{r['share']:.2f}", *(cell(r["test"].get(t), 1) for t in CARRIED))
            console.print(table)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
