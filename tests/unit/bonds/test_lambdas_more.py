"""Edges of `spacebind.bonds.lambdas`:

- `_objective(..., mean_first=True)` ranks by the mean fused score first, then the worst margin
  (what `choose_channels` weighs a routed space's channel on); the default ranks worst margin first.
- the guard moves off the coarse setting when the bootstrap share is *at least* `confidence`.
- a paired task "a→b R@1" scores a's queries against b's gallery (not b→a).
- κ of a bond's channel is searched over the grid below 1 plus the prior, never κ = 1."""
from __future__ import annotations

import pytest
import torch

from spacebind.bonds import lambdas as L
from spacebind.bonds.lambdas import _objective, _select, _Tasks, bootstrap_share

B = torch.tensor


def test_objective_is_worst_margin_then_mean_or_mean_then_worst_margin() -> None:
    fused = {"x→y R@1": B([1, 1, 0, 0]).bool(), "y→x R@1": B([1, 0, 0, 0]).bool()}
    best = {"x→y R@1": B([1, 1, 1, 0]).bool(), "y→x R@1": B([0, 0, 0, 0]).bool()}
    # scores 0.5 and 0.25 (mean 0.375); margins −0.25 and +0.25 (worst −0.25)
    assert _objective(fused, best) == pytest.approx((-0.25, 0.375))
    assert _objective(fused, best, mean_first=True) == pytest.approx((0.375, -0.25))
    w = {"x→y R@1": B([2.0, 0, 0, 0]), "y→x R@1": B([1.0, 1, 0, 0])}  # a resample's multiplicities
    assert _objective(fused, best, w) == pytest.approx((0.0, 0.75))  # margins 0 and +0.5; scores 1 and 0.5
    # a challenger better on the mean but worse on its worst task wins only under mean_first
    challenger = {"x→y R@1": B([1, 1, 1, 1]).bool(), "y→x R@1": B([0, 0, 0, 0]).bool()}
    incumbent = {"x→y R@1": B([1, 1, 0, 0]).bool(), "y→x R@1": B([1, 0, 0, 0]).bool()}
    groups = {t: torch.arange(4) for t in challenger}
    zero = {t: torch.zeros(4, dtype=torch.bool) for t in challenger}
    assert bootstrap_share(challenger, incumbent, zero, groups, 50, seed=0, mean_first=True) > 0.5
    assert bootstrap_share(challenger, incumbent, zero, groups, 50, seed=0) < 0.5


class FakeTasks:
    """One task whose per-query hits depend on the single parameter x."""

    def __init__(self, hits_at: dict[float, torch.Tensor]) -> None:
        self.hits_at = hits_at
        self.group_index = {"x→y R@1": torch.arange(len(next(iter(hits_at.values()))))}

    def fused_hits(self, setting):
        return {"x→y R@1": self.hits_at[setting["x"]]}


def test_the_guard_moves_when_the_share_reaches_the_confidence_exactly() -> None:
    g = torch.Generator().manual_seed(0)
    coarse_hits = torch.rand(40, generator=g) < 0.5
    better = coarse_hits | (torch.rand(40, generator=g) < 0.3)
    better[:3] = False  # it also loses a few queries, so the share is strictly between 0 and 1
    tasks = {"": FakeTasks({0.0: coarse_hits, 1.0: better})}
    best_part = {"x→y R@1": torch.zeros(40, dtype=torch.bool)}
    share = bootstrap_share({"x→y R@1": better}, {"x→y R@1": coarse_hits}, best_part,
                            tasks[""].group_index, 20, seed=0)
    assert 0 < share < 1
    at = _select(tasks, ["x"], {"x": 0.0}, [0.0, 1.0], best_part, [{"x": 0.0}], 20, share, 0)
    assert at["share"] == share and at["chosen"] == ("", {"x": 1.0}) and not at["kept"]
    above = _select(tasks, ["x"], {"x": 0.0}, [0.0, 1.0], best_part, [{"x": 0.0}], 20, share + 1e-9, 0)
    assert above["chosen"] == ("", {"x": 0.0}) and above["kept"]


def test_a_paired_task_scores_the_query_modality_against_the_other_modalitys_gallery() -> None:
    tasks = _Tasks.__new__(_Tasks)  # only the id bookkeeping `hits` reads
    ids = ["i0", "i1", "i2"]
    tasks.ids = {"text": ids, "audio": ids}
    tasks.row = {m: {i: r for r, i in enumerate(ids)} for m in tasks.ids}
    sims = B([[0.9, 0.8, 0.7], [0.1, 0.2, 0.3], [0.0, 0.0, 0.5]])  # text i · audio j
    text, audio = sims, torch.eye(3)
    # text→audio: row argmax 0, 2, 2 → right, wrong, right; audio→text: column argmax 0, 0, 0
    assert tasks.hits(text, audio, ("text→audio R@1", "text", "audio")).tolist() == [True, False, True]
    assert tasks.hits(audio, text, ("audio→text R@1", "audio", "text")).tolist() == [True, False, False]


def test_kappa_of_a_bonds_channel_is_searched_below_one_and_at_the_prior(monkeypatch) -> None:
    from test_bond_choices import world

    from spacebind.bonds.bind import train_bond

    t, e, caches, dataset = world()
    space = train_bond(t, [e], "combination", caches, dataset, projector="procrustes", channel=True, progress=False)
    assert space.channels is not None
    seen = []
    real = L._select

    def spy(tasks, params, coarse, grid, *args, **kwargs):
        seen.append((list(params), list(grid)))
        return real(tasks, params, coarse, grid, *args, **kwargs)

    monkeypatch.setattr(L, "_select", spy)
    L.choose_lambdas(space, [t, e], caches, dataset, resamples=20)
    kappa_grids = [grid for params, grid in seen if all(p.startswith(L.CHANNEL) for p in params)]
    assert kappa_grids, seen
    for grid in kappa_grids:
        assert max(grid) < 1.0 and L.CHANNEL_PRIOR in grid
        assert set(grid) == {*(v for v in L.DEFAULT_GRID if v < 1), L.CHANNEL_PRIOR}


def test_the_bootstrap_groups_queries_by_the_named_attribute_and_items_without_it_stand_alone() -> None:
    """`groups` (e.g. speaker) makes a speaker's queries one bootstrap group, shared by every task."""
    from spacebind.io.datasets import Item

    speakers = {"i0": "s1", "i1": "s1", "i2": "s2", "i3": None, "i4": "s2"}
    tasks = _Tasks.__new__(_Tasks)
    ids = list(speakers)
    tasks.by_id = {i: Item(i, "val", None, {"text": i, "audio": i}, {} if s is None else {"speaker": s})
                   for i, s in speakers.items()}
    tasks.ids = {"text": ids, "audio": ids}
    tasks.row = {m: {i: r for r, i in enumerate(ids)} for m in tasks.ids}
    tasks.names = [("text→audio R@1", "text", "audio"), ("audio→text R@1", "audio", "text")]
    index = tasks._group_index("speaker")
    for task in ("text→audio R@1", "audio→text R@1"):
        g = index[task].tolist()
        assert g[0] == g[1] and g[2] == g[4]  # one group per speaker
        assert len({g[0], g[2], g[3]}) == 3  # speakers differ; the item without one stands alone
    assert index["text→audio R@1"].tolist() == index["audio→text R@1"].tolist()
    assert len(set(tasks._group_index(None)["text→audio R@1"].tolist())) == 5  # no groups: every item alone


def test_class_precision_between_unpaired_pools_skips_unlabelled_gallery_items() -> None:
    """"a→b class P@1": each labelled query's top item among b's *labelled* items must be
    of the query's class; an unlabelled gallery item is neither a hit nor a miss, and labels are
    read at the labelled items' positions."""
    tasks = _Tasks.__new__(_Tasks)
    tasks.labels = {"text": B([0, 1]), "audio": B([-1, 0, 1])}
    query = B([[1.0, 0, 0], [0, 1.0, 0]])
    gallery = B([[1.0, 0, 0], [0.9, 0.1, 0], [0, 1.0, 0]])  # item 0 unlabelled and nearest to query 0
    hits = tasks.hits(query, gallery, ("text→audio class P@1", "text", "audio"))
    assert hits.tolist() == [True, True]


def test_a_channel_search_tries_every_grid_value_below_one_and_the_prior() -> None:
    """A custom grid below 1 loses none of its values (its largest was dropped, assuming it was 1)."""
    from spacebind.bonds.lambdas import CHANNEL_PRIOR, DEFAULT_GRID, kappa_grid

    assert kappa_grid((0.0, 0.5)) == [0.0, 0.5, CHANNEL_PRIOR]
    assert kappa_grid(DEFAULT_GRID) == [*DEFAULT_GRID[:-1], CHANNEL_PRIOR] and 1.0 not in kappa_grid(DEFAULT_GRID)
