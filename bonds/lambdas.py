"""Choosing a bond's λ on validation data: never worse than its parts, and only beyond the noise.

Every task the split supports is scored per query: retrieval between two modalities in each
direction (R@1 over paired items; between unpaired labelled pools, whether the top item is of
the query's class) and zero-shot classification of a modality against the class prompts (acc1). The parts are the bond's base and experts; a part scores the tasks it covers. The
objective of a λ is its worst margin over tasks, fused − best part (maximin: the fused space should
be at least as good as the best of its parts on every task), ties broken by the mean fused score.
The search covers the λ of every modality both sides of the bond cover: the whole grid for up to
two such modalities, coordinate ascent beyond. Guard: the best λ replaces the coarse one (the
bond's own λ) only if its objective is higher in at least `confidence` of `resamples` bootstrap
resamples of the split's queries, so a tie or a win inside the noise keeps the coarse λ.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch

from spacebind.evaluation.metrics import class_embeddings
from spacebind.io.datasets import Dataset
from spacebind.modalities import modality_pairs
from spacebind.space import Space

if TYPE_CHECKING:
    from spacebind.bonds.bind import BoundSpace
    from spacebind.cache import CacheSet

DEFAULT_GRID = tuple(round(0.1 * i, 1) for i in range(11))
Lambdas = tuple[tuple[str, float], ...]


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

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _Tasks:
    """Per-query correctness of every task, for the fused space at any λ and for each part."""

    def __init__(self, space: "BoundSpace", parts: Sequence[Space], caches: "CacheSet", dataset: Dataset,
                 split: str, tuned: Sequence[str], grid: Sequence[float]) -> None:
        self.items = dataset.select(split)
        self.by_id = dataset.by_id()
        self.modalities = [m for m in space.modalities if any(m in it.fields for it in self.items)]
        self.ids = {m: caches.usable_ids(space, m, [it.id for it in self.items if m in it.fields]) for m in self.modalities}
        self.row = {m: {i: r for r, i in enumerate(ids)} for m, ids in self.ids.items()}
        self.space, self.caches, self.tuned = space, caches, list(tuned)
        # fused embeddings of each modality at each of its λ values (one value for untuned ones)
        self.fused: dict[str, dict[float, torch.Tensor]] = {}
        for m in self.modalities:
            values = grid if m in self.tuned else [space.lambda_for(m)]
            self.fused[m] = {lam: caches.embeddings(space.with_lambdas({m: lam}), m, self.ids[m]) for lam in values}
        self.prompts = self._prompts(dataset)
        self.fused_classes: dict[float, torch.Tensor] = {}
        self.prompt_leaves: dict[str, torch.Tensor] = {}  # each leaf encodes the prompts once, for fused and parts
        if self.prompts is not None and "text" in space.modalities:
            leaf = self.prompt_leaves = space.leaf_embeddings("text", self.prompts[0])
            values = grid if "text" in self.tuned else [space.lambda_for("text")]
            for lam in values:
                self.fused_classes[lam] = class_embeddings(space.with_lambdas({"text": lam}).combine("text", leaf),
                                                           self.prompts[1])
        self.labels = {m: torch.tensor([self._label(i) for i in self.ids[m]]) for m in self.modalities}
        self.names = self._task_names()
        self.best_part = self._best_parts(parts)

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

    def hits(self, query: torch.Tensor, query_ids: list[str], target: torch.Tensor | None, task: tuple[str, str, str],
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
        shared = [i for i in query_ids if i in self.row[b]]
        q = query[[self.row[a][i] for i in shared]]
        g = target[[self.row[b][i] for i in shared]]
        return (q @ g.T).argmax(dim=1) == torch.arange(len(shared))

    def fused_hits(self, lambdas: Mapping[str, float]) -> dict[str, torch.Tensor]:
        def emb(m: str) -> torch.Tensor:
            table = self.fused[m]
            return table[lambdas[m]] if m in self.tuned else next(iter(table.values()))

        classes = None
        if self.fused_classes:
            classes = self.fused_classes[lambdas["text"]] if "text" in self.tuned else next(iter(self.fused_classes.values()))
        return {t[0]: self.hits(emb(t[1]), self.ids[t[1]], None if t[2] == "classes" else emb(t[2]), t, classes)
                for t in self.names}

    def _best_parts(self, parts: Sequence[Space]) -> dict[str, torch.Tensor]:
        """Per task, the per-query correctness of the part with the best score (tasks no part covers are left out)."""
        best: dict[str, torch.Tensor] = {}
        for part in parts:
            covered = [m for m in self.modalities if m in part.modalities]
            emb = {m: self.caches.embeddings(part, m, self.ids[m]) for m in covered}
            classes = None
            if self.prompts is not None and "text" in part.modalities:
                classes = class_embeddings(part.combine("text", self.prompt_leaves), self.prompts[1])
            for task in self.names:
                label, a, b = task
                if a not in emb or (b == "classes" and classes is None) or (b != "classes" and b not in emb):
                    continue
                hit = self.hits(emb[a], self.ids[a], emb.get(b), task, classes)
                if label not in best or hit.float().mean() > best[label].float().mean():
                    best[label] = hit
        return best


def _objective(fused: Mapping[str, torch.Tensor], best: Mapping[str, torch.Tensor],
               rows: Mapping[str, torch.Tensor] | None = None) -> tuple[float, float]:
    """(worst margin over tasks, mean fused score), on the query rows given (all by default)."""
    margins, scores = [], []
    for task, hit in fused.items():
        pick = rows[task] if rows is not None else slice(None)
        score = float(hit[pick].float().mean())
        scores.append(score)
        if task in best:
            margins.append(score - float(best[task][pick].float().mean()))
    return (min(margins) if margins else 0.0), (sum(scores) / len(scores) if scores else 0.0)


def choose_lambdas(space: "BoundSpace", parts: Sequence[Space], caches: "CacheSet", dataset: Dataset, *,
                   split: str = "val", grid: Sequence[float] = DEFAULT_GRID, resamples: int = 200,
                   confidence: float = 0.9, seed: int = 0) -> LambdaChoice | None:
    """The bond's λ chosen on `split` (see the module docstring); None when the split has no task."""
    tuned = [m for m in space.tunable_modalities() if any(m in it.fields for it in dataset.select(split))]
    grid = sorted({float(v) for v in grid})
    coarse = {m: space.lambda_for(m) for m in tuned}
    if not tuned:
        return None
    tasks = _Tasks(space, parts, caches, dataset, split, tuned, sorted({*grid, *coarse.values()}))
    if not tasks.names:
        return None
    cache: dict[Lambdas, dict[str, torch.Tensor]] = {}

    def hits(lams: Mapping[str, float]) -> dict[str, torch.Tensor]:
        key = tuple(sorted(lams.items()))
        if key not in cache:
            cache[key] = tasks.fused_hits(lams)
        return cache[key]

    def objective(lams: Mapping[str, float]) -> tuple[float, float]:
        return _objective(hits(lams), tasks.best_part)

    if len(tuned) <= 2:
        candidates = [dict(zip(tuned, values)) for values in itertools.product(grid, repeat=len(tuned))]
        best = max([coarse, *candidates], key=objective)
    else:
        best = dict(coarse)
        for _ in range(2):
            for m in tuned:
                best = max(({**best, m: v} for v in grid), key=objective)
    generator = torch.Generator().manual_seed(seed)
    fused_best, fused_coarse = hits(best), hits(coarse)
    wins = 0
    for _ in range(resamples):
        rows = {t: torch.randint(len(h), (len(h),), generator=generator) for t, h in fused_best.items()}
        wins += _objective(fused_best, tasks.best_part, rows) > _objective(fused_coarse, tasks.best_part, rows)
    share = wins / resamples
    kept = best != coarse and share < confidence
    chosen = coarse if kept or best == coarse else best
    in_force = hits(chosen)
    margins = {t: round(float(h.float().mean()) - float(tasks.best_part[t].float().mean()), 4)
               for t, h in in_force.items() if t in tasks.best_part}
    return LambdaChoice(lambdas=chosen, coarse=coarse, split=split, objective=round(objective(best)[0], 4),
                        coarse_objective=round(objective(coarse)[0], 4), confidence=share, kept_coarse=kept,
                        margins=margins)
