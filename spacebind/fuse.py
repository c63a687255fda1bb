"""The fuse pipeline: recipe → data → experts → embedding caches → bonds → evaluation → export.

Every stage writes to disk under a work directory (`$SPACEBIND_HOME/runs/<recipe name>` by
default), so an interrupted run resumes: the world is generated once, caches resume by shard,
projector training resumes by epoch and a finished projector is not retrained.

Under torchrun every rank runs the pipeline: embedding and projector training are split over
the ranks (see `spacebind.cache.store`, `spacebind.training.trainer`); rank 0 alone generates the world,
evaluates and exports while the others wait.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spacebind.bonds import BONDS
from spacebind.bonds.bind import check_mixed
from spacebind.bonds.heads import fits_in_closed_form
from spacebind.bonds.lambdas import check_groups
from spacebind.cache import dataset_key, ensure_caches
from spacebind.checkpoint import check_export_target, save_space
from spacebind.errors import CheckpointError, InputError
from spacebind.evaluation.evaluate import evaluate_space
from spacebind.experts import EXPERTS, build_expert, is_import_path, missing_expert_files
from spacebind.io.datasets import Dataset
from spacebind.io.files import home_dir
from spacebind.io.locks import job_lock
from spacebind.io.progress import note, stage
from spacebind.modalities import MODALITIES
from spacebind.recipe import DataConfig, Recipe, load_recipe
from spacebind.space import Space
from spacebind.training import distributed
from spacebind.training.history import collect_histories
from spacebind.training.trainer import MAX_SEED


@dataclass
class FuseResult:
    space: Space
    records: list[dict[str, Any]]
    out: Path
    work: Path


def prepare_data(data: DataConfig, base_dir: Path, work: Path, progress: bool = True) -> Dataset:
    """Load the recipe's dataset, generating the procedural world or importing the sources first if asked (once)."""
    if data.path is not None:
        path = _resolved(data.path, base_dir)
        return Dataset.load(path)
    if data.imports:
        return _import_once(data, base_dir, work, progress)
    from spacebind.world.generate import generate_world

    w = data.world
    assert w is not None
    sensors = "".join(f"-{m}" for m in w.sensors)
    pools = "-unpaired" if w.unpaired else ""
    target = work / "data" / f"world-c{w.concepts_seed}-n{w.num_concepts}-s{w.seed}-{w.train}-{w.val}-{w.test}{sensors}{pools}"
    if not (target / "manifest.jsonl").is_file() and distributed.is_main():
        generate_world(
            target, seed=w.seed, sizes={"train": w.train, "val": w.val, "test": w.test},
            concepts_seed=w.concepts_seed, num_concepts=w.num_concepts, sensors=w.sensors, unpaired=w.unpaired,
        )
    distributed.barrier()
    return Dataset.load(target)


def _import_once(data: DataConfig, base_dir: Path, work: Path, progress: bool) -> Dataset:
    """Import the recipe's sources (in order, into one dataset) under `work/data/import-<hash>`,
    once: the hash covers the import settings with their resolved paths."""
    import hashlib
    import json

    from spacebind.io.files import replace_dir, staging_dir
    from spacebind.io.importers import format_report, import_data

    def resolve(p: Any) -> str:
        return str(Path(p) if Path(p).is_absolute() else (base_dir / p).resolve())

    specs = []
    for spec in data.imports:
        options = dict(spec.model_extra or {})
        if "media_root" in options:
            options["media_root"] = resolve(options["media_root"])
        specs.append({**spec.model_dump(exclude=set(options)), **options, "source": resolve(spec.source)})
    key = hashlib.sha256(json.dumps(specs, sort_keys=True, default=str).encode()).hexdigest()[:12]
    target = work / "data" / f"import-{key}"
    if not (target / "manifest.jsonl").is_file() and distributed.is_main():
        staging = staging_dir(target)
        for i, spec in enumerate(specs):
            spec = dict(spec)
            report = import_data(spec.pop("format"), spec.pop("source"), staging, copy=spec.pop("copy_media"),
                                 append=i > 0, **spec)
            note("\n".join(format_report(report)).replace(str(staging), str(target)), progress)
        replace_dir(staging, target)
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
    seed: int | None = None,
    device: str | None = None,
) -> FuseResult:
    """Run a recipe end to end and export the fused checkpoint; returns the space and its metrics.
    `seed` and `device` override the recipe (see `override`).

    Raises:
        LockError: another job is using the work directory.
    """
    recipe = override(recipe, seed=seed, device=device)
    given = {f"--seed {seed}": f"train.seed: {seed}"} if seed is not None else {}
    if device is not None:
        given[f"--device {device}"] = f"device: {device} for every expert that takes one"
    if recipe_text is not None and given:  # the export says what ran
        recipe_text = (recipe_text.rstrip("\n") + f"\n# run as `spacebind fuse … {' '.join(given)}`, which overrides "
                       + "; ".join(given.values()) + "\n")
    out = out or recipe.export.out or Path("runs") / recipe.name
    check_export_target(out)  # before the work, not after it
    work = work or home_dir() / "runs" / recipe.name
    note(f"recipe {recipe.name!r}: work directory {work}", progress)
    with job_lock(work, "work directory"):
        return _fuse(recipe, recipe_text, base_dir, Path(out), work, progress)


def _fuse(recipe: Recipe, recipe_text: str | None, base_dir: Path, out: Path, work: Path, progress: bool) -> FuseResult:
    """`fuse` once its job holds the work directory's lock."""
    missing = missing_files(recipe, base_dir)
    if missing:
        raise CheckpointError(f"recipe {recipe.name!r} names files that are not there:\n  " + "\n  ".join(missing))
    with stage("data", progress):
        dataset = prepare_data(recipe.data, base_dir, work, progress)
        note(f"data: {dataset.count()} items in {dataset.root}", progress)
    for i, bond in enumerate(recipe.bonds):  # before any expert runs
        check_groups(dataset, bond.groups, where=f"bonds.{i}.groups")
    if recipe.routed is not None:
        check_groups(dataset, recipe.routed.router.groups, where="routed.router.groups")
    experts = {}
    for alias, cfg in recipe.experts.items():
        with stage(f"expert {alias!r} ({cfg.source})", progress):
            experts[alias] = build_expert(cfg.source, cfg.kwargs, name=alias)
    check_bond_lambdas(recipe, experts)
    with stage("embedding caches", progress):
        caches = ensure_caches(list(experts.values()), dataset, work / "cache" / dataset_key(dataset), progress)
    space: Space = experts[recipe.base]
    untrained: set[str] = set()  # bonds whose `projector: auto` kept a closed-form head: no history to export
    for i, bond in enumerate(recipe.bonds):
        last = i == len(recipe.bonds) - 1 and recipe.routed is None
        with stage(f"bond {i}: {bond.type} with {', '.join(bond.experts)}", progress):
            space = BONDS.entry(bond.type).factory.train(
                space, [experts[n] for n in bond.experts], bond.type, caches, dataset,
                lambdas=bond.lambdas, presets=bond.presets, work_dir=work / "heads" / f"bond{i}",
                name=recipe.name if last else None,
                projector=bond.projector, mixture=bond.mixture, pairing=bond.pairing, tune=bond.tune, channel=bond.channel, groups=bond.groups, pseudo=bond.pseudo, curate=bond.curate, pbar=bond.pbar,
                relative=bond.relative.model_dump(),
                train=recipe.train.model_copy(update={"seed": recipe.train.seed + i}), progress=progress,
            )
        if fits_in_closed_form(((getattr(space, "choices", None) or {}).get("projector") or {}).get("chosen", "")):
            untrained |= {f"bond{i}/{e}" for e in bond.experts}
    if recipe.routed is not None:
        from spacebind.bonds.route import train_routed

        r = recipe.routed
        router = r.router  # a recipe that streams its training pairs streams its router tuples too
        if router.stream_mb is None and recipe.train.stream_mb is not None:
            router = router.model_copy(update={"stream_mb": recipe.train.stream_mb})
        with stage(f"routed: {', '.join(r.experts)} remapped into {space.name}, routers trained", progress):
            space = train_routed(
                space, [experts[n] for n in r.experts], caches, dataset, router=router, scales=r.scales,
                inputs=r.inputs or None, work_dir=work / "heads" / "routed", name=recipe.name,
                projector=r.projector, mixture=r.mixture, pairing=r.pairing, pseudo=r.pseudo,
                train=recipe.train.model_copy(update={"seed": recipe.train.seed + len(recipe.bonds)}), progress=progress,
            )
    if not distributed.is_main():  # rank 0 evaluates and exports (below); the others wait for it
        distributed.barrier()
        return FuseResult(space=space, records=[], out=Path(out), work=work)
    split, ks = recipe.evaluate.split, recipe.evaluate.ks
    with stage(f"evaluating on the {split} split", progress):
        records = evaluate_space(experts[recipe.base], "base", caches, dataset, split, ks)
        bonded = [n for bond in recipe.bonds for n in bond.experts] + (recipe.routed.experts if recipe.routed else [])
        for name in [n for n in dict.fromkeys(bonded) if n != recipe.base]:
            records += evaluate_space(experts[name], "expert", caches, dataset, split, ks)
        if recipe.bonds or recipe.routed:
            records += evaluate_space(space, "fused", caches, dataset, split, ks)
    unibind = None
    if recipe.unibind is not None:
        from spacebind.unibind.model import evaluate_unibind, fit_unibind, recipe_knowledge

        u = recipe.unibind
        with stage("UniBind: knowledge-base class centres", progress):
            kb = recipe_knowledge(u.knowledge, u.generator, dataset, base_dir)
            unibind = fit_unibind(space, caches, dataset, kb, n=u.descriptions, mix=u.mix, align=u.align,
                                  vote_weight=u.vote_weight, k=u.k, epochs=u.epochs, seed=recipe.train.seed,
                                  scoring=u.scoring, head=u.head)
            records += evaluate_unibind(unibind, caches, dataset, split)
    with stage(f"export to {out}", progress):
        members = trained_members(recipe, {a: e.modalities for a, e in experts.items()})
        history = collect_histories(work / "heads", {k: n for k, n in members.items() if k not in untrained})
        router = ((getattr(space, "choices", None) or {}).get("router") or {}) if recipe.routed is not None else {}
        if router.get("history"):
            history["routed/router"] = router["history"]  # the routers of every modality, trained together
        save_space(space, out, recipe_text=recipe_text, metrics=records, extra=unibind.save if unibind is not None else None,
                   history=history)
    distributed.barrier()
    return FuseResult(space=space, records=records, out=Path(out), work=work)


def check_bond_lambdas(recipe: Recipe, experts: dict[str, Space]) -> None:
    """Raise an InputError naming `bonds.<i>.lambdas` (or a preset) for a λ of a modality that bond
    does not mix, before anything is embedded (`spacebind.bonds.bind.check_mixed`)."""
    covered = set(experts[recipe.base].modalities)
    for i, bond in enumerate(recipe.bonds):
        members = [experts[n] for n in bond.experts]
        check_mixed(sorted(covered), members, bond.lambdas, bond.presets, where=f"bonds.{i}.")
        covered |= {m for e in members for m in e.modalities}


def trained_members(recipe: Recipe, modalities: dict[str, tuple[str, ...]] | None = None) -> dict[str, int]:
    """`bond<i>/<expert>` (or `routed/<expert>`) → the number of projectors trained for it (one per
    pseudo dataset it can learn from, else the mixture size); their checkpoints lie under
    `work/heads/<key>/member<j>`. Closed-form projectors train none: a state file under their key
    is another run's. `modalities` (each expert's, by alias; default: the registry's where it knows
    them) tells which pseudo datasets a routed member can use (`member_pseudo`).

    Raises:
        InputError: a routed member can use none of the pseudo datasets (of given `modalities`)."""
    out = {f"bond{i}/{e}": len(b.pseudo) or b.mixture for i, b in enumerate(recipe.bonds) for e in b.experts
           if not fits_in_closed_form(b.projector)}
    if recipe.routed is not None and not fits_in_closed_form(recipe.routed.projector):
        from spacebind.bonds.route import member_pseudo

        r = recipe.routed
        known = modalities if modalities is not None else registered_modalities(recipe)
        target_aliases = [recipe.base, *(e for b in recipe.bonds for e in b.experts)]
        counts = {e: len(r.pseudo) or r.mixture for e in r.experts}
        if r.pseudo and all(a in known for a in {*target_aliases, *r.experts}):
            target = sorted({m for a in target_aliases for m in known[a]})
            for e in r.experts:
                try:
                    counts[e] = len(member_pseudo(r.pseudo, e, known, target))
                except InputError:
                    # the registry's modalities are a listing, not the built expert's (an `adapted`
                    # expert adds its inner expert's): the plan keeps the stage's count
                    if modalities is not None:
                        raise
        out |= {f"routed/{e}": n for e, n in counts.items()}
    return out


def registered_modalities(recipe: Recipe) -> dict[str, tuple[str, ...]]:
    """Each expert's modalities by alias, where the registry lists them without building it."""
    return {alias: tuple(EXPERTS.entry(cfg.source).modalities) for alias, cfg in recipe.experts.items()
            if cfg.source in EXPERTS.list()}


def override(recipe: Recipe, *, seed: int | None = None, device: str | None = None) -> Recipe:
    """The recipe with `train.seed` set to `seed`, and `device` passed to every expert whose factory
    takes a `device` argument (the others compute where they always do)."""
    if seed is not None:
        if not 0 <= seed < MAX_SEED:
            raise InputError(f"--seed {seed}: expected 0 ≤ seed < {MAX_SEED}")
        recipe = recipe.model_copy(update={"train": recipe.train.model_copy(update={"seed": seed})})
    if device is not None:
        import torch

        try:
            torch.device(device)
        except RuntimeError:
            raise InputError(f"--device {device!r}: not a torch device (cpu, cuda, cuda:1, mps, …)") from None
        experts = {alias: cfg.model_copy(update={"kwargs": {**cfg.kwargs, "device": device}})
                   if _takes_device(cfg.source) else cfg for alias, cfg in recipe.experts.items()}
        recipe = recipe.model_copy(update={"experts": experts})
    return recipe


def _takes_device(source: str) -> bool:
    from spacebind.experts._build import import_object

    factory = import_object(source) if is_import_path(source) else EXPERTS.entry(source).factory
    try:
        return "device" in inspect.signature(factory).parameters
    except (TypeError, ValueError):  # not a callable (a ready-made space) or no signature
        return False


def missing_files(recipe: Recipe, base_dir: Path = Path("."), media: bool = False) -> list[str]:
    """One line per file the recipe needs that is not there: expert checkpoints, the UniBind
    knowledge file and, with `media`, the dataset's manifest and every media file it names."""
    missing = missing_expert_files({alias: (cfg.source, cfg.kwargs) for alias, cfg in recipe.experts.items()})
    if recipe.unibind is not None and recipe.unibind.generator is None and recipe.unibind.knowledge != "world":
        kb_path = Path(recipe.unibind.knowledge)
        if not _resolved(kb_path, base_dir).is_file():
            missing.append(f"unibind.knowledge: no file {recipe.unibind.knowledge!r} (class → descriptions, JSON or JSONL)")
    if media and recipe.data.path is not None:
        try:
            missing += _dataset(recipe.data, base_dir).missing_files()
        except InputError as exc:
            missing.append(f"data.path: {exc}")
    for i, spec in enumerate(recipe.data.imports):
        for key, value in (("source", spec.source), ("media_root", (spec.model_extra or {}).get("media_root"))):
            if value is not None and not _resolved(Path(value), base_dir).exists():
                missing.append(f"data.import.{i}.{key}: no file or directory {str(value)!r}")
    return missing


def _resolved(path: Path, base_dir: Path) -> Path:
    return path if path.is_absolute() else base_dir / path


def _dataset(data: DataConfig, base_dir: Path) -> Dataset:
    assert data.path is not None
    return Dataset.load(_resolved(data.path, base_dir))


@dataclass
class FusePlan:
    """What `fuse` would do: where it writes, the data per split and modality, what it embeds and trains."""

    recipe: str
    out: Path
    work: Path
    data: str
    counts: dict[str, dict[str, int]]
    embed: list[str] = field(default_factory=list)
    train: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The plan as text, one fact a line."""
        lines = [f"recipe {self.recipe!r}: export to {self.out}, work directory {self.work}", f"data: {self.data}"]
        lines += [f"  {split}: " + ", ".join(f"{m} {n}" for m, n in mods.items()) for split, mods in self.counts.items()]
        lines += ["embed:", *(f"  {e}" for e in self.embed), "train:", *(f"  {t}" for t in self.train or ["nothing"])]
        return lines


def world_counts(sizes: dict[str, int], sensors: tuple[str, ...] | list[str] = (), unpaired: bool = False) -> dict[str, dict[str, int]]:
    """Items per split and modality of a procedural world `generate_world` would write.

    Paired splits hold every modality on each item; an unpaired train split holds one modality per
    item, `POOL_MODALITIES` in turn (item i has modality i mod 4), and no sensors.
    """
    from spacebind.world.generate import POOL_MODALITIES

    counts: dict[str, dict[str, int]] = {}
    for split, n in sizes.items():
        if unpaired and split == "train":
            pooled = {m: len(range(j, n, len(POOL_MODALITIES))) for j, m in enumerate(POOL_MODALITIES)}
            counts[split] = {m: pooled[m] for m in sorted(pooled) if pooled[m]}
        else:
            counts[split] = {m: n for m in sorted({*POOL_MODALITIES, *sensors})}
    return counts


def plan_fuse(recipe: Recipe, *, base_dir: Path = Path("."), out: Path | None = None, work: Path | None = None,
              seed: int | None = None, device: str | None = None) -> FusePlan:
    """A dry run of `fuse`: check every file the recipe needs and describe the work, writing nothing.

    Raises:
        CheckpointError: files are missing (all of them named).
    """
    recipe = override(recipe, seed=seed, device=device)
    out = Path(out or recipe.export.out or Path("runs") / recipe.name)
    check_export_target(out)
    missing = missing_files(recipe, base_dir, media=True)
    if missing:
        raise CheckpointError(f"recipe {recipe.name!r} names {len(missing)} file(s) that are not there:\n  "
                              + "\n  ".join(missing))
    counts: dict[str, dict[str, int]] = {}
    if recipe.data.path is not None:
        dataset = _dataset(recipe.data, base_dir)
        described = f"{dataset.count()} items in {dataset.root}"
        for (split, m), n in dataset.counts.items():
            if m is not None:
                counts.setdefault(split, {})[m] = n
        modalities = set(dataset.modalities())
    elif recipe.data.imports:
        described = "imported into the work directory from " + ", ".join(
            f"{spec.format} {_resolved(spec.source, base_dir)}" for spec in recipe.data.imports)
        modalities = set(MODALITIES)  # known once imported
    else:
        w = recipe.data.world
        assert w is not None
        described = f"procedural world to generate (seed {w.seed}, {w.num_concepts} concepts"
        described += ", train as unimodal pools)" if w.unpaired else ")"
        counts = world_counts({"train": w.train, "val": w.val, "test": w.test}, w.sensors, w.unpaired)
        modalities = {m for mods in counts.values() for m in mods}
    known = registered_modalities(recipe)
    embed = [f"{alias} ({cfg.source})" + (f": {', '.join(m for m in known[alias] if m in modalities)}"
                                          if alias in known else "")
             for alias, cfg in recipe.experts.items()]
    train = [f"{key}: {n} projector(s)" for key, n in trained_members(recipe).items()]
    train += [f"bond{i}/{e}: {b.projector} (fitted in closed form)" for i, b in enumerate(recipe.bonds)
              for e in b.experts if fits_in_closed_form(b.projector)]
    if recipe.routed is not None and fits_in_closed_form(recipe.routed.projector):
        train += [f"routed/{e}: {recipe.routed.projector} (fitted in closed form)" for e in recipe.routed.experts]
    if recipe.unibind is not None:
        train.append("UniBind class centres")
    return FusePlan(recipe=recipe.name, out=out,
                    work=work or home_dir() / "runs" / recipe.name, data=described, counts=counts,
                    embed=embed, train=train)


def check_recipe(path: Path, check_files: bool = False) -> Recipe:
    """`spacebind validate`: load and validate a recipe and, with `check_files`, check that every
    file it needs exists (expert checkpoints, the dataset's manifest and media).

    Raises:
        RecipeError: the recipe is invalid (every error named).
        CheckpointError: files are missing (every one named).
    """
    recipe, _ = load_recipe(path)
    missing = missing_files(recipe, path.parent, media=True) if check_files else []
    if missing:
        raise CheckpointError(f"recipe {recipe.name!r} names {len(missing)} file(s) that are not there:\n  "
                              + "\n  ".join(missing))
    return recipe
