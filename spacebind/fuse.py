"""The fuse pipeline: recipe → data → experts → embedding caches → bonds → evaluation → export.

Every stage writes to disk under a work directory (`$SPACEBIND_HOME/runs/<recipe name>` by
default), so an interrupted run resumes: the world is generated once, caches resume by shard,
projector training resumes by epoch and a finished projector is not retrained.

Under torchrun every rank runs the pipeline: embedding and projector training are split over
the ranks (see `spacebind.cache.store`, `spacebind.training.trainer`); rank 0 alone generates the world,
evaluates and exports while the others wait.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spacebind.bonds import BONDS
from spacebind.cache import dataset_key, ensure_caches
from spacebind.checkpoint import save_space
from spacebind.errors import CheckpointError
from spacebind.evaluation.evaluate import evaluate_space
from spacebind.experts import build_expert, missing_expert_files
from spacebind.io.datasets import Dataset
from spacebind.io.files import home_dir
from spacebind.io.progress import note
from spacebind.recipe import DataConfig, Recipe
from spacebind.space import Space
from spacebind.training import distributed


@dataclass
class FuseResult:
    space: Space
    records: list[dict[str, Any]]
    out: Path
    work: Path


def prepare_data(data: DataConfig, base_dir: Path, work: Path) -> Dataset:
    """Load the recipe's dataset, generating the procedural world first if asked (once)."""
    if data.path is not None:
        path = data.path if data.path.is_absolute() else base_dir / data.path
        return Dataset.load(path)
    from spacebind.world.generate import generate_world

    w = data.world
    assert w is not None
    sensors = "".join(f"-{m}" for m in w.sensors)
    target = work / "data" / f"world-c{w.concepts_seed}-n{w.num_concepts}-s{w.seed}-{w.train}-{w.val}-{w.test}{sensors}"
    if not (target / "manifest.jsonl").is_file() and distributed.is_main():
        generate_world(
            target, seed=w.seed, sizes={"train": w.train, "val": w.val, "test": w.test},
            concepts_seed=w.concepts_seed, num_concepts=w.num_concepts, sensors=w.sensors,
        )
    distributed.barrier()
    return Dataset.load(target)


def fuse(
    recipe: Recipe,
    *,
    recipe_text: str | None = None,
    base_dir: Path = Path("."),
    out: Path | None = None,
    work: Path | None = None,
    progress: bool = True,
) -> FuseResult:
    """Run a recipe end to end and export the fused checkpoint; returns the space and its metrics."""
    out = out or recipe.export.out or Path("runs") / recipe.name
    work = work or home_dir() / "runs" / recipe.name
    note(f"recipe {recipe.name!r}: work directory {work}", progress)
    missing = missing_expert_files({alias: (cfg.source, cfg.kwargs) for alias, cfg in recipe.experts.items()})
    if recipe.unibind is not None and recipe.unibind.generator is None and recipe.unibind.knowledge != "world":
        kb_path = Path(recipe.unibind.knowledge)
        if not (kb_path if kb_path.is_absolute() else base_dir / kb_path).is_file():
            missing.append(f"unibind.knowledge: no file {recipe.unibind.knowledge!r} (class → descriptions, JSON or JSONL)")
    if missing:
        raise CheckpointError(f"recipe {recipe.name!r} names files that are not there:\n  " + "\n  ".join(missing))
    dataset = prepare_data(recipe.data, base_dir, work)
    note(f"data: {len(dataset.items)} items in {dataset.root}", progress)
    experts = {}
    for alias, cfg in recipe.experts.items():
        note(f"expert {alias!r} ({cfg.source})", progress)
        experts[alias] = build_expert(cfg.source, cfg.kwargs, name=alias)
    caches = ensure_caches(list(experts.values()), dataset, work / "cache" / dataset_key(dataset), progress)
    space: Space = experts[recipe.base]
    for i, bond in enumerate(recipe.bonds):
        last = i == len(recipe.bonds) - 1 and recipe.routed is None
        note(f"bond {i}: {bond.type} with {', '.join(bond.experts)}", progress)
        space = BONDS.entry(bond.type).factory.train(
            space, [experts[n] for n in bond.experts], bond.type, caches, dataset,
            lambdas=bond.lambdas, presets=bond.presets, work_dir=work / "heads" / f"bond{i}",
            name=recipe.name if last else None,
            projector=bond.projector, mixture=bond.mixture, pairing=bond.pairing, tune=bond.tune, pseudo=bond.pseudo, curate=bond.curate,
            relative=bond.relative.model_dump(),
            train=recipe.train.model_copy(update={"seed": recipe.train.seed + i}), progress=progress,
        )
    if recipe.routed is not None:
        from spacebind.bonds.route import train_routed

        r = recipe.routed
        note(f"routed: {', '.join(r.experts)} remapped into {space.name}, routers trained", progress)
        space = train_routed(
            space, [experts[n] for n in r.experts], caches, dataset, router=r.router, scales=r.scales,
            inputs=r.inputs or None, work_dir=work / "heads" / "routed", name=recipe.name,
            projector=r.projector, mixture=r.mixture, pairing=r.pairing, pseudo=r.pseudo,
            train=recipe.train.model_copy(update={"seed": recipe.train.seed + len(recipe.bonds)}), progress=progress,
        )
    if not distributed.is_main():  # rank 0 evaluates and exports (below); the others wait for it
        distributed.barrier()
        return FuseResult(space=space, records=[], out=Path(out), work=work)
    split, ks = recipe.evaluate.split, recipe.evaluate.ks
    note(f"evaluating on the {split} split", progress)
    records = evaluate_space(experts[recipe.base], "base", caches, dataset, split, ks)
    for name in [n for bond in recipe.bonds for n in bond.experts] + (recipe.routed.experts if recipe.routed else []):
        records += evaluate_space(experts[name], "expert", caches, dataset, split, ks)
    if recipe.bonds or recipe.routed:
        records += evaluate_space(space, "fused", caches, dataset, split, ks)
    unibind = None
    if recipe.unibind is not None:
        from spacebind.unibind.model import evaluate_unibind, fit_unibind, recipe_knowledge

        u = recipe.unibind
        note("UniBind: knowledge-base class centres", progress)
        kb = recipe_knowledge(u.knowledge, u.generator, dataset, base_dir)
        unibind = fit_unibind(space, caches, dataset, kb, n=u.descriptions, mix=u.mix, align=u.align,
                              vote_weight=u.vote_weight, k=u.k, epochs=u.epochs, seed=recipe.train.seed)
        records += evaluate_unibind(unibind, caches, dataset, split)
    save_space(space, out, recipe_text=recipe_text, metrics=records)
    if unibind is not None:
        unibind.save(out)
    distributed.barrier()
    return FuseResult(space=space, records=records, out=Path(out), work=work)
