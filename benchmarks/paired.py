"""Paired bootstrap margins between two systems scored query by query on the same queries.

A margin of a few points on a few hundred test queries moves by about as much from one draw of
queries to the next. The verdicts of `benchmarks.realdata` and `benchmarks.freebind` say whether a
shortfall is beyond that noise: resamples draw queries with replacement within each stratum (a
seed), the same draw for both systems, and the margin's percentile interval is reported with it.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Margin:
    """a − b in points (mean over queries) and its bootstrap interval."""

    points: float
    low: float
    high: float

    def verdict(self, tolerance: float = 0.0) -> str:
        """"yes" when a ≥ b − tolerance; "tie" when short of it but the interval reaches it; else "NO"."""
        if self.points >= -tolerance:
            return "yes"
        return "tie" if self.high >= -tolerance else "NO"

    def __str__(self) -> str:
        return f"{self.points:+.1f} [{self.low:+.1f}, {self.high:+.1f}]"


def paired_margin(a: torch.Tensor, b: torch.Tensor, strata: torch.Tensor | None = None, *, resamples: int = 2000,
                  level: float = 0.95, seed: int = 0) -> Margin:
    """Margin of per-query scores `a` over `b` (same queries, e.g. 0/1 hits) with a paired bootstrap
    interval at `level`; `strata` (one id per query) resamples each stratum within itself, so every
    resample keeps each stratum's size (a mean over seeds stays a mean over seeds)."""
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired scores need two equal 1-d non-empty tensors, got {tuple(a.shape)} and {tuple(b.shape)}")
    diff = a.double() - b.double()
    strata = torch.zeros(len(diff), dtype=torch.long) if strata is None else strata
    generator = torch.Generator().manual_seed(seed)
    totals = torch.zeros(resamples, dtype=torch.float64)
    for s in torch.unique(strata):
        part = diff[strata == s]
        totals += part[torch.randint(len(part), (resamples, len(part)), generator=generator)].sum(dim=1)
    means = 100 * totals / len(diff)
    tail = (1 - level) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    return Margin(100 * float(diff.mean()), low, high)


def pooled(scores: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-query scores of several seeds as one tensor and the seed (stratum) of each query."""
    return torch.cat(list(scores)), torch.cat([torch.full((len(s),), i, dtype=torch.long) for i, s in enumerate(scores)])


VERDICTS = ("NO", "tie", "yes")  # worst first


def compare(seeds: Sequence[Mapping[str, Mapping[str, torch.Tensor]]], ours: str, other: str, metrics: Sequence[str],
            tolerance: float = 0.0, headers: Mapping[str, str] | None = None) -> str:
    """"<worst verdict> (<metric> <margin>, …)": per metric, system `ours` − `other` (each seed of
    `seeds`: per system, per metric, per-query scores) pooled over the seeds, each a stratum;
    `tolerance`: the points `ours` may fall short; `headers`: how to print each metric."""
    found = {}
    for k in metrics:
        mine, strata = pooled([s[ours][k] for s in seeds])
        found[k] = paired_margin(mine, pooled([s[other][k] for s in seeds])[0], strata)
    worst = min((m.verdict(tolerance) for m in found.values()), key=VERDICTS.index)
    return f"{worst} (" + ", ".join(f"{(headers or {}).get(k, k)} {m}" for k, m in found.items()) + ")"
