"""Choosing a bond's λ on validation data: never worse than its parts, and only beyond the noise.

Every task the split supports is scored per query: retrieval between two modalities in each
direction (R@1 over paired items; between unpaired labelled pools, whether the top item is of
the query's class) and zero-shot classification of a modality against the class prompts (acc1). The parts are the bond's base and experts; a part scores the tasks it covers. The
objective of a λ is its worst margin over tasks, fused − best part (maximin: the fused space should
be at least as good as the best of its parts on every task), ties broken by the mean fused score.
The search covers the λ of every modality both sides of the bond cover (and the candidate heads,
`alternatives`): the whole grid for up to two parameters, coordinate ascent beyond. Guard: the best
setting replaces the coarse one (the bond's own heads and λ) only if its objective is higher in at
least `confidence` of `resamples` bootstrap resamples of the split's queries, so a tie or a win
inside the noise keeps the coarse setting. A resample draws query groups with replacement, the same
draw for every task: each item is its own group unless `groups` names an item attribute (e.g. a
speaker) whose items are resampled together, so queries that share a speaker count as one piece of
evidence, not ten.

A bond with a channel (`spacebind.bonds.bind`) then chooses κ per carried modality the same way, on
the tasks between carried modalities (the only ones κ changes), from a prior: a combination's
channel starts at `CHANNEL_PRIOR` (the experts rank their own pairs, as the experts; the bond
breaks near-ties), a displacement's at 0 (FreeBind's bond). κ moves only on evidence that includes
paired retrieval between carried modalities: class-level tasks alone (unpaired pools, zero-shot)
cannot see the instance-level ranking the channel is there to keep, so they leave κ at its prior.
Where κ ends at a combination's prior, the experts rank the pairs between carried modalities, and a
λ (or heads) chosen on those pairs in the first stage no longer changes them: λ and the heads are
chosen again, the same way (maximin, the guard against the coarse λ), on the tasks left to them
(those not between two such modalities, with κ in force), and return to the coarse λ (the bond's, by
default FreeBind's `versatile` preset) and the bond's own heads where no task is left or nothing
beats them beyond the noise; so nothing moves on evidence that does not bear on what it changes.

A routed space's channel (`choose_channels`) is weighed the same way per group of pair specialists,
from the same prior, on the mean over the pair's tasks rather than the worst margin.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch

from spacebind.errors import InputError
from spacebind.evaluation.metrics import class_embeddings
from spacebind.io.datasets import Dataset
from spacebind.modalities import modality_pairs
from spacebind.space import Space

if TYPE_CHECKING:
    from spacebind.bonds.bind import BoundSpace
    from spacebind.bonds.node import BondNode
    from spacebind.bonds.route import RoutedSpace
    from spacebind.cache import CacheSet

DEFAULT_GRID = tuple(round(0.1 * i, 1) for i in range(11))
CHANNEL = "channel:"  # prefix of a channel weight κ among the tuned parameters
CHANNEL_PRIOR = 0.999  # κ kept unless beaten: the projected side ranks its own pairs, the bond breaks near-ties
Setting = tuple[tuple[str, float], ...]


@dataclass
class LambdaChoice:
    """What `choose_lambdas` picked and why (saved with the bond, shown on the model card)."""

    lambdas: dict[str, float]
    coarse: dict[str, float]
    split: str
    objective: float  # worst margin over tasks of the best λ, fused − best part
    coarse_objective: float
    confidence: float  # fraction of bootstrap resamples in which the best λ beats the coarse one
    kept_coarse: bool
    margins: dict[str, float]  # per task, at the λ in force, fused − best part
    projector: str = ""  # the alternative heads chosen ("": the bond's own)
    candidates: dict[str, float] = field(default_factory=dict)  # worst margin of each candidate's best λ
    channels: dict[str, float] | None = None  # κ chosen per modality (None: the bond has no channel)
    channel_confidence: float | None = None  # bootstrap share of the best κ over the prior
    channel_unmoved: str = ""  # why κ stayed at its prior without a search ("": it was searched)
    groups: str | None = None  # item attribute the bootstrap resampled whole (None: each item)
    # stage-1 choices that the choice after κ replaced: λ by modality, "projector": the heads
    undone: dict[str, float | str] = field(default_factory=dict)
    # the choice after κ, on the tasks the channel leaves to λ: {"tasks": how many, "confidence":
    # bootstrap share of its best λ over the coarse one, "kept_coarse"}; None: no such stage
    after_channel: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def kappa_grid(grid: Sequence[float]) -> list[float]:
    """The κ a channel search tries: the grid's values below 1 and the prior (κ = 1 would drop the
    bond, or the routed mixture, from the carried modalities)."""
    return sorted({*(float(v) for v in grid if v < 1), CHANNEL_PRIOR})


def split_setting(values: Mapping[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """A preset or sweep point split into λ by modality and κ (its `channel:<name>` keys: by modality for a bond, by leaf for a routed space)."""
    lambdas = {m: v for m, v in values.items() if not m.startswith(CHANNEL)}
    kappas = {m.removeprefix(CHANNEL): v for m, v in values.items() if m.startswith(CHANNEL)}
    return lambdas, kappas


def check_groups(dataset: Dataset, groups: str | None, split: str = "val", where: str = "groups") -> None:
    """Raise InputError naming `where` if `groups` names an attribute that no item of `split` has
    (the bootstrap would silently resample every item on its own)."""
    if groups is None or not dataset.count(split):
        return
    seen: set[str] = set()
    for item in dataset.iter_items(split):
        if groups in item.attributes:
            return
        seen |= set(item.attributes)
    have = ", ".join(sorted(seen)) or "none"
    raise InputError(f"{where}: {groups!r} is not an attribute of any {split} item in {dataset.root} "
                     f"(their attributes: {have})")


class _Tasks:
    """Per-query correctness of every task, for the fused space at any λ and for each part."""

    def __init__(self, space: "BondNode", parts: Sequence[Space], caches: "CacheSet", dataset: Dataset,
                 split: str, tuned: Sequence[str], grid: Sequence[float],
                 like: "_Tasks | None" = None, groups: str | None = None) -> None:
        """`tuned`: parameter names (`space.setting_keys`: a modality for its λ, `CHANNEL + …` for a κ). `like`:
        the tasks of the same bond with other heads or weights, whose parts' scores and prompt leaf
        embeddings (the same leaves) are reused rather than computed again. `groups`: the item
        attribute that groups queries for the bootstrap (see the module docstring)."""
        self.items = dataset.select(split)
        self.by_id = {it.id: it for it in self.items}
        self.modalities = [m for m in space.modalities if any(m in it.fields for it in self.items)]
        self.ids = {m: caches.usable_ids(space, m, [it.id for it in self.items if m in it.fields]) for m in self.modalities}
        self.row = {m: {i: r for r, i in enumerate(ids)} for m, ids in self.ids.items()}
        self.space, self.caches = space, caches
        # the parameters each modality's fused embedding depends on (a bond's: its λ and κ)
        self.params = {m: [p for p in space.setting_keys(m) if p in tuned] for m in self.modalities}
        self.fused: dict[str, dict[tuple[float, ...], torch.Tensor]] = {
            m: {values: caches.embeddings(self._at(m, values), m, self.ids[m])
                for values in itertools.product(grid, repeat=len(self.params[m]))}
            for m in self.modalities}
        self.prompts = self._prompts(dataset)
        self.fused_classes: dict[tuple[float, ...], torch.Tensor] = {}
        self.prompt_leaves: dict[str, torch.Tensor] = {}  # each leaf encodes the prompts once, for fused and parts
        if self.prompts is not None and "text" in space.modalities:
            leaf = self.prompt_leaves = (like.prompt_leaves if like is not None
                                         else space.leaf_embeddings("text", self.prompts[0]))
            for values in itertools.product(grid, repeat=len(self.params.get("text", []))):
                at = self._at("text", values)
                self.fused_classes[values] = class_embeddings(at.combine("text", leaf), self.prompts[1], at.blocks)
        self.labels = {m: torch.tensor([self._label(i) for i in self.ids[m]]) for m in self.modalities}
        self.names = self._task_names()
        self.best_part = like.best_part if like is not None else self._best_parts(parts)
        if like is None:
            check_groups(dataset, groups, split)
        self.group_index = like.group_index if like is not None else self._group_index(groups)

    def _at(self, modality: str, values: Sequence[float]) -> "BondNode":
        """The space with `modality`'s tuned parameters set to `values` (in `self.params` order)."""
        return self.space.with_lambdas(dict(zip(self.params.get(modality, []), values)))

    def _prompts(self, dataset: Dataset) -> tuple[list[str], int] | None:
        if not dataset.classes:
            return None
        self.class_index = {c: k for k, c in enumerate(dataset.class_names)}
        return [t.format(c) for c in dataset.class_names for t in dataset.templates], len(dataset.class_names)

    def _label(self, item_id: str) -> int:
        """The item's class index, or -1 (no label, or no classes)."""
        label = self.by_id[item_id].label
        return self.class_index.get(label, -1) if self.prompts is not None and label is not None else -1

    def _task_names(self) -> list[tuple[str, str, str]]:
        """(label, query modality, target modality or "classes") of every task with data."""
        names = []
        for a, b in modality_pairs(self.modalities):
            if set(self.ids[a]) & set(self.ids[b]):
                names += [(f"{a}→{b} R@1", a, b), (f"{b}→{a} R@1", b, a)]
            elif bool((self.labels[a] >= 0).any()) and bool((self.labels[b] >= 0).any()):
                # unpaired pools with labels: the top item must be of the query's class
                names += [(f"{a}→{b} class P@1", a, b), (f"{b}→{a} class P@1", b, a)]
        if self.fused_classes:
            names += [(f"{m} zero-shot acc1", m, "classes") for m in self.modalities
                      if m != "text" and bool((self.labels[m] >= 0).any())]
        return names

    def query_ids(self, task: tuple[str, str, str]) -> list[str]:
        """The ids of a task's queries, in the order `hits` scores them."""
        _, a, b = task
        if b == "classes" or task[0].endswith("class P@1"):
            return [i for i, label in zip(self.ids[a], self.labels[a].tolist()) if label >= 0]
        return [i for i in self.ids[a] if i in self.row[b]]

    def _group_index(self, groups: str | None) -> dict[str, torch.Tensor]:
        """Per task, the bootstrap group of each query row (an index shared by every task)."""
        index: dict[Any, int] = {}

        def group(item_id: str) -> Any:
            value = self.by_id[item_id].attributes.get(groups) if groups else None
            return ("id", item_id) if value is None else ("group", str(value))

        return {t[0]: torch.tensor([index.setdefault(group(i), len(index)) for i in self.query_ids(t)],
                                   dtype=torch.long) for t in self.names}

    def hits(self, query: torch.Tensor, target: torch.Tensor | None, task: tuple[str, str, str],
             classes: torch.Tensor | None = None) -> torch.Tensor:
        """Per-query correctness (bool) of one task from its query-side and target-side embeddings."""
        _, a, b = task
        if b == "classes":
            labels = self.labels[a]
            keep = labels >= 0
            return (query[keep] @ classes.T).argmax(dim=1) == labels[keep]
        if task[0].endswith("class P@1"):
            qa, gb = self.labels[a] >= 0, self.labels[b] >= 0
            top = (query[qa] @ target[gb].T).argmax(dim=1)
            return self.labels[b][gb][top] == self.labels[a][qa]
        shared = self.query_ids(task)
        q = query[[self.row[a][i] for i in shared]]
        g = target[[self.row[b][i] for i in shared]]
        return (q @ g.T).argmax(dim=1) == torch.arange(len(shared))

    def fused_hits(self, setting: Mapping[str, float]) -> dict[str, torch.Tensor]:
        """Per task, per-query correctness of the fused space at `setting` (every tuned parameter)."""
        def key(m: str) -> tuple[float, ...]:
            return tuple(setting[p] for p in self.params.get(m, []))

        classes = self.fused_classes[key("text")] if self.fused_classes else None
        return {t[0]: self.hits(self.fused[t[1]][key(t[1])],
                                None if t[2] == "classes" else self.fused[t[2]][key(t[2])], t, classes)
                for t in self.names}

    def _best_parts(self, parts: Sequence[Space]) -> dict[str, torch.Tensor]:
        """Per task, the per-query correctness of the part with the best score (tasks no part covers are left out)."""
        best: dict[str, torch.Tensor] = {}
        for part in parts:
            covered = [m for m in self.modalities if m in part.modalities]
            emb = {m: self.caches.embeddings(part, m, self.ids[m]) for m in covered}
            classes = None
            if self.prompts is not None and "text" in part.modalities:
                classes = class_embeddings(part.combine("text", self.prompt_leaves), self.prompts[1], part.blocks)
            for task in self.names:
                label, a, b = task
                if a not in emb or (b == "classes" and classes is None) or (b != "classes" and b not in emb):
                    continue
                hit = self.hits(emb[a], emb.get(b), task, classes)
                if label not in best or hit.float().mean() > best[label].float().mean():
                    best[label] = hit
        return best


def _sides(task: tuple[str, str, str]) -> tuple[str, str]:
    """The modalities whose embeddings a task's score depends on (class prompts are text)."""
    _, a, b = task
    return a, "text" if b == "classes" else b


def _between(task: tuple[str, str, str], modalities: Sequence[str]) -> bool:
    """Whether both sides of a task are among `modalities`."""
    return all(m in modalities for m in _sides(task))


def _objective(fused: Mapping[str, torch.Tensor], best: Mapping[str, torch.Tensor],
               weights: Mapping[str, torch.Tensor] | None = None, mean_first: bool = False) -> tuple[float, float]:
    """(worst margin over tasks, mean fused score), each query weighted by `weights` (a bootstrap
    resample's multiplicities; 1 by default); `mean_first`: the mean first, the worst margin to
    break ties. A task no query of the resample reaches is left out."""
    margins, scores = [], []
    for task, hit in fused.items():
        w = weights[task] if weights is not None else torch.ones(len(hit))
        total = float(w.sum())
        if total == 0:
            continue
        score = float((hit.float() * w).sum()) / total
        scores.append(score)
        if task in best:
            margins.append(score - float((best[task].float() * w).sum()) / total)
    worst, mean = (min(margins) if margins else 0.0), (sum(scores) / len(scores) if scores else 0.0)
    return (mean, worst) if mean_first else (worst, mean)


def bootstrap_share(challenger: Mapping[str, torch.Tensor], incumbent: Mapping[str, torch.Tensor],
                    best_part: Mapping[str, torch.Tensor], group_index: Mapping[str, torch.Tensor],
                    resamples: int, seed: int, mean_first: bool = False) -> float:
    """The share of bootstrap resamples in which `challenger`'s objective beats `incumbent`'s (both:
    per task, per-query scores). A resample draws query groups with replacement, as many as there
    are, the same draw for every task (`group_index`: per task, each query's group)."""
    generator = torch.Generator().manual_seed(seed)
    index = {t: g for t, g in group_index.items() if t in challenger}
    present = torch.unique(torch.cat([torch.zeros(0, dtype=torch.long), *index.values()]))
    size = int(present.max()) + 1 if len(present) else 0
    wins = 0
    for _ in range(resamples):
        drawn = present[torch.randint(len(present), (len(present),), generator=generator)]
        counts = torch.bincount(drawn, minlength=size).float()
        weights = {t: counts[g] for t, g in index.items()}
        wins += (_objective(challenger, best_part, weights, mean_first)
                 > _objective(incumbent, best_part, weights, mean_first))
    return wins / resamples


def _select(tasks: Mapping[str, _Tasks], params: Sequence[str], coarse: Mapping[str, float], grid: Sequence[float],
            best_part: Mapping[str, torch.Tensor], starts: Sequence[Mapping[str, float]], resamples: int,
            confidence: float, seed: int, only: set[str] | None = None, mean_first: bool = False) -> dict[str, Any]:
    """Search every candidate (`tasks` by name, "" first) over `params` and guard the winner against
    ("", `coarse`): the winner, the setting in force, the bootstrap share, and each candidate's
    best objective. `only`: the task labels the objective counts (all by default); `mean_first`:
    see `_objective`."""
    cache: dict[tuple[str, Setting], dict[str, torch.Tensor]] = {}

    def hits(setting: tuple[str, Mapping[str, float]]) -> dict[str, torch.Tensor]:
        key = (setting[0], tuple(sorted(setting[1].items())))
        if key not in cache:
            found = tasks[setting[0]].fused_hits(setting[1])
            cache[key] = {t: h for t, h in found.items() if only is None or t in only}
        return cache[key]

    def objective(setting: tuple[str, Mapping[str, float]]) -> tuple[float, float]:
        return _objective(hits(setting), best_part, mean_first=mean_first)

    def search(name: str) -> dict[str, float]:
        if len(params) <= 2:
            points = [dict(zip(params, v)) for v in itertools.product(grid, repeat=len(params))]
            return max([dict(coarse), *points], key=lambda point: objective((name, point)))
        found = []
        for point in starts:  # coordinate ascent from each start
            point = dict(point)
            for _ in range(2):
                for p in params:
                    point = max(({**point, p: v} for v in grid), key=lambda c: objective((name, c)))
            found.append(point)
        return max(found, key=lambda point: objective((name, point)))

    searched = {name: search(name) for name in tasks}
    best = max(searched.items(), key=objective)
    start = ("", dict(coarse))
    share = bootstrap_share(hits(best), hits(start), best_part, next(iter(tasks.values())).group_index,
                            resamples, seed, mean_first)
    moved = best[0] != "" or best[1] != start[1]
    kept = moved and share < confidence
    chosen = start if kept or not moved else best
    return {"best": best, "chosen": chosen, "share": share, "kept": kept, "objective": objective,
            "hits": hits, "candidates": {name: round(objective((name, point))[0], 4) for name, point in searched.items()}}


def choose_lambdas(space: "BoundSpace", parts: Sequence[Space], caches: "CacheSet", dataset: Dataset, *,
                   alternatives: Mapping[str, "BoundSpace"] | None = None, split: str = "val",
                   grid: Sequence[float] = DEFAULT_GRID, resamples: int = 200, confidence: float = 0.9,
                   seed: int = 0, groups: str | None = None) -> LambdaChoice | None:
    """The bond's λ (and κ, when it has a channel) chosen on `split` (see the module docstring);
    None when the split has no task.

    `alternatives`: the same bond with other heads (other projector types), by name; each is
    searched the same way, and the best (heads, λ) replaces `space` at its coarse λ under the same
    guard. The choice names the heads kept (`projector`: "" for `space`'s own). `groups`: the item
    attribute whose items the bootstrap resamples together (e.g. "speaker")."""
    present = {m for m in dataset.modalities() if dataset.count(split, m)}
    lambda_params = [m for m in space.tunable_modalities() if m in present]
    channelled = [m for m in space.channel_modalities() if m in present] if space.channels is not None else []
    if not lambda_params and len(channelled) < 2:
        return None
    grid = sorted({float(v) for v in grid})
    coarse = {m: space.lambda_for(m) for m in lambda_params}
    candidates = {"": space, **dict(alternatives or {})}
    lambda_grid = sorted({*grid, *coarse.values()})
    tasks = {"": _Tasks(space, parts, caches, dataset, split, lambda_params, lambda_grid, groups=groups)}
    if not tasks[""].names:
        return None
    best_part = tasks[""].best_part
    for name, other in candidates.items():
        if name:
            tasks[name] = _Tasks(other, parts, caches, dataset, split, lambda_params, lambda_grid, like=tasks[""])
    # stage 1: heads and λ, the channel at κ = 0 (FreeBind's bond)
    first = _select(tasks, lambda_params, coarse, grid, best_part, [coarse], resamples, confidence, seed)
    name, lambdas = first["chosen"]
    in_force = first["hits"](first["chosen"])
    channels = None
    share = None
    unmoved = ""
    undone: dict[str, float | str] = {}
    after: dict[str, Any] | None = None
    if len(channelled) >= 2:
        # stage 2: κ of the channel, on the tasks between modalities it carries (the only ones it
        # changes); the prior keeps the projected side's own ranking of those pairs
        bond = candidates[name].with_lambdas(lambdas)
        params = [CHANNEL + m for m in channelled]
        # a combination's channel carries the experts, the specialists of the pairs it adds; a
        # displacement's carries the base, which its expert is there to improve on: FreeBind's κ = 0
        prior = {p: CHANNEL_PRIOR if space.kind == "combination" else 0.0 for p in params}
        kappas = kappa_grid(grid)
        second = {"": _Tasks(bond, parts, caches, dataset, split, params, kappas, like=tasks[""])}
        carried = {t[0] for t in second[""].names if _between(t, channelled)}
        if carried and not any(t.endswith(" R@1") for t in carried):
            # only class-level evidence (unpaired pools, zero-shot): it cannot see the instance-level
            # ranking the channel keeps, so it does not move κ
            kept = dict(prior)
            unmoved = "the split has no paired items of the modalities the channel carries"
        elif carried:
            picked = _select(second, params, prior, kappas, best_part, [prior, {p: 0.5 for p in params}],
                             resamples, confidence, seed, only=carried)
            kept, share = picked["chosen"][1], picked["share"]
        else:
            kept = {}
        channels = {p.removeprefix(CHANNEL): v for p, v in kept.items()} or None
        # stage 3: where the channel keeps the experts' pairs at the prior κ, stage 1's λ and heads,
        # chosen with those pairs in the objective, no longer change them: choose both again, the same
        # way, on the tasks left to them (κ in force); none left: the coarse λ and the bond's heads
        at_prior = [m for m, v in (channels or {}).items() if space.kind == "combination" and v == CHANNEL_PRIOR]
        if at_prior:
            free = {t[0] for t in second[""].names if not _between(t, at_prior)}
            final: tuple[str, Mapping[str, float]] = ("", dict(coarse))
            if free:
                third_tasks = {n: _Tasks(c.with_lambdas({}, channels), parts, caches, dataset, split, lambda_params,
                                         lambda_grid, like=tasks[""]) for n, c in candidates.items()}
                third = _select(third_tasks, lambda_params, coarse, grid, best_part, [coarse], resamples, confidence,
                                seed, only=free)
                final = third["chosen"]
                after = {"tasks": len(free), "confidence": third["share"], "kept_coarse": third["kept"]}
            undone = {m: lambdas[m] for m in lambda_params if final[1][m] != lambdas[m]}
            if final[0] != name:
                undone["projector"] = name
            if undone:
                name, lambdas = final[0], dict(final[1])
                bond = candidates[name].with_lambdas(lambdas)
                second = {"": _Tasks(bond, parts, caches, dataset, split, params, sorted(set(kept.values())),
                                     like=tasks[""])}
        if kept:
            in_force = second[""].fused_hits(kept)
    margins = {t: round(float(h.float().mean()) - float(best_part[t].float().mean()), 4)
               for t, h in in_force.items() if t in best_part}
    objective = first["objective"]
    return LambdaChoice(lambdas=dict(lambdas), coarse=coarse, split=split, objective=round(objective(first["best"])[0], 4),
                        coarse_objective=round(objective(("", coarse))[0], 4), confidence=first["share"],
                        kept_coarse=first["kept"], margins=margins, projector=name, candidates=first["candidates"],
                        channels=channels, channel_confidence=share, channel_unmoved=unmoved, groups=groups,
                        undone=undone, after_channel=after)


def choose_channels(space: "RoutedSpace", caches: "CacheSet", dataset: Dataset, *, split: str = "val",
                    grid: Sequence[float] = DEFAULT_GRID, resamples: int = 200, confidence: float = 0.9,
                    seed: int = 0, groups: str | None = None) -> "RoutedSpace":
    """A routed space's channel (`spacebind.bonds.route`) weighed on `split`: κ of the pair
    specialists, by group of specialists covering the same modalities (fewest modalities first),
    each from `CHANNEL_PRIOR` (the specialists rank their own pairs, as in a combination bond's
    channel) and moved only where the κ with the best mean score over the tasks between those
    modalities (ties broken by the worst margin over the space's leaves) beats the prior in
    `confidence` of the bootstrap resamples; the mean, not `choose_lambdas`' worst margin, so that a
    tie on one task does not veto a clear gain on another (docs/decisions.md). Class-level evidence
    alone leaves κ at the prior. Specialists left at κ = 0 drop out of the channel; none left:
    OmniBind's formula.
    The choice is recorded under the space's `choices["channels"]`; the space itself is returned
    unchanged when the split has no paired items of any specialist's modalities."""
    present = {m for m in dataset.modalities() if dataset.count(split, m)}
    leaves = sorted((leaf for leaf in space.channel_leaves() if len(present & set(leaf.modalities)) >= 2),
                    key=lambda leaf: len(leaf.modalities))
    if not leaves:
        return space
    kappas = kappa_grid(grid)
    setting = {leaf.name: CHANNEL_PRIOR for leaf in leaves}
    first: _Tasks | None = None
    record: dict[str, Any] = {"split": split, "groups": groups, "prior": CHANNEL_PRIOR, "specialists": {}}
    covers = {leaf.name: tuple(m for m in space.modalities if m in leaf.modalities) for leaf in leaves}
    for modalities in dict.fromkeys(covers.values()):
        names = [name for name, covered in covers.items() if covered == modalities]
        params = [CHANNEL + n for n in names]
        prior = {p: CHANNEL_PRIOR for p in params}
        tasks = {"": _Tasks(space.with_channels(setting), space.leaves(), caches, dataset, split, params, kappas,
                            like=first, groups=groups)}
        first = first or tasks[""]
        carried = {t[0] for t in tasks[""].names if _between(t, modalities)}
        entry: dict[str, Any] = {"modalities": list(modalities)}
        if not any(t.endswith(" R@1") for t in carried):
            entry.update(kappa={n: CHANNEL_PRIOR for n in names}, confidence=None,
                         unmoved=f"the {split} split has no paired items of {', '.join(modalities)}")
        else:
            picked = _select(tasks, params, prior, kappas, first.best_part, [prior, {p: 0.5 for p in params}],
                             resamples, confidence, seed, only=carried, mean_first=True)
            chosen = picked["chosen"][1]
            setting.update({p.removeprefix(CHANNEL): v for p, v in chosen.items()})
            hits = picked["hits"](picked["chosen"])
            entry.update(kappa={p.removeprefix(CHANNEL): v for p, v in chosen.items()}, confidence=picked["share"],
                         margins={t: round(float(h.float().mean()) - float(first.best_part[t].float().mean()), 4)
                                  for t, h in hits.items() if t in first.best_part})
        record["specialists"][" ∥ ".join(names)] = entry
    kept = {n: v for n, v in setting.items() if v > 0} or None
    return space.with_channels(kept, record)
