"""`benchmarks.paired`: paired bootstrap margins and the verdicts the benchmarks print from them."""
from __future__ import annotations

import math

import pytest
import torch

from benchmarks.paired import Margin, compare, paired_margin, pooled


def test_identical_and_opposite_systems_have_exact_margins() -> None:
    hits = torch.randint(0, 2, (300,), generator=torch.Generator().manual_seed(0))
    same = paired_margin(hits, hits)
    assert (same.points, same.low, same.high) == (0.0, 0.0, 0.0) and same.verdict() == "yes"
    ones, zeros = torch.ones(50), torch.zeros(50)
    assert paired_margin(ones, zeros) == Margin(100.0, 100.0, 100.0)
    assert paired_margin(zeros, ones).verdict() == "NO"


def test_interval_matches_the_normal_approximation() -> None:
    # per-query differences in {-1, 0, 1}: the bootstrap interval of the mean is ±1.96 sd / sqrt(n)
    g = torch.Generator().manual_seed(1)
    a, b = (torch.rand(2000, generator=g) < 0.5).float(), (torch.rand(2000, generator=g) < 0.4).float()
    m = paired_margin(a, b, resamples=4000)
    diff = a - b
    half = 100 * 1.96 * float(diff.std()) / math.sqrt(len(diff))
    assert m.points == pytest.approx(100 * float(diff.mean()))
    assert (m.high - m.low) / 2 == pytest.approx(half, rel=0.1)
    assert m.low < m.points < m.high


def test_strata_keep_their_sizes_in_every_resample() -> None:
    # seed 0: the first system wins every query; seed 1: loses every query. Pooled the margin is 0;
    # resampled within seeds it stays exactly 0, resampled across them it spreads.
    a, strata = pooled([torch.ones(100), torch.zeros(100)])
    b, _ = pooled([torch.zeros(100), torch.ones(100)])
    assert strata.tolist() == [0] * 100 + [1] * 100
    within = paired_margin(a, b, strata)
    assert (within.points, within.low, within.high) == (0.0, 0.0, 0.0)
    across = paired_margin(a, b)
    assert across.low < -5 and across.high > 5


def test_verdicts_and_tolerance() -> None:
    assert Margin(-2.0, -4.0, 0.5).verdict() == "tie"
    assert Margin(-2.0, -4.0, -0.1).verdict() == "NO"
    assert Margin(-0.5, -1.5, 0.2).verdict(tolerance=1.0) == "yes"
    assert Margin(-2.0, -3.0, -0.8).verdict(tolerance=1.0) == "tie"
    assert str(Margin(1.25, -0.5, 3.0)) == "+1.2 [-0.5, +3.0]"
    with pytest.raises(ValueError, match="equal 1-d"):
        paired_margin(torch.ones(3), torch.ones(4))


def test_compare_pools_seeds_and_reports_the_worst_verdict() -> None:
    # seed 0: ours wins 10 of 100 queries on "a", ties on "b"; seed 1: ours loses 2 of 100 on "b"
    def system(a: list[int], b: list[int]) -> dict[str, torch.Tensor]:
        return {"a": torch.tensor(a, dtype=torch.float), "b": torch.tensor(b, dtype=torch.float)}

    seeds = [{"ours": system([1] * 10 + [0] * 90, [1] * 50 + [0] * 50), "other": system([0] * 100, [1] * 50 + [0] * 50)},
             {"ours": system([0] * 100, [1] * 48 + [0] * 52), "other": system([0] * 100, [1] * 50 + [0] * 50)}]
    line = compare(seeds, "ours", "other", ["a", "b"], headers={"a": "A"})
    assert line.startswith("tie (A +5.0 [") and " b -1.0 [" in line  # b: 2 of 200 short, within the noise
    ours, strata = pooled([s["ours"]["a"] for s in seeds])
    a = paired_margin(ours, pooled([s["other"]["a"] for s in seeds])[0], strata)
    assert a.points == 5.0 and a.low > 0 and f"A {a}" in line
    assert compare(seeds[:1], "ours", "other", ["a", "b"]).startswith("yes (")
    assert compare(seeds[1:], "ours", "other", ["b"], tolerance=2.0).startswith("yes (")
