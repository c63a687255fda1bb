"""What a bond chooses on its own: the target modalities a projector learns from, the mixture
members applied to each modality, and λ chosen on val (never worse than the parts, ties kept)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from memory_cache import MemoryCache

from spacebind import Dataset, Space
from spacebind.bonds.bind import BoundSpace
from spacebind.bonds.lambdas import choose_lambdas
from spacebind.bonds.linear import LinearMap, fit_least_squares
from spacebind.bonds.mixture import ProjectorMixture
from spacebind.bonds.projector import MLPProjector
from spacebind.bonds.targets import choose_targets
from spacebind.cache import CacheSet
from spacebind.evaluation.sweep import sweep
from spacebind.io.datasets import ClassInfo, Item

CLASSES = [f"c{k}" for k in range(6)]


def unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)


def identity_head(dim: int) -> LinearMap:
    head = LinearMap(dim, dim)
    with torch.no_grad():
        head.weight.copy_(torch.eye(dim))
    return head.eval()


def world(noisy_target_audio: bool = True, same_spaces: bool = False):
    """Items of 6 classes with text and audio. The target T embeds text by class (reliable) and
    audio as noise (unreliable); the expert E embeds both by class and item. Each item has its own
    direction too, so retrieval is instance-level."""
    g = torch.Generator().manual_seed(0)
    dim = 16
    t_class, e_class = unit(torch.randn(6, dim, generator=g)), unit(torch.randn(6, dim, generator=g))
    items, t_table, e_table = [], {"text": {}, "audio": {}}, {"text": {}, "audio": {}}
    for split, n in (("train", 240), ("val", 120)):
        for i in range(n):
            k, item = i % 6, f"{split}{i}"
            own = torch.randn(dim, generator=g)
            items.append(Item(item, split, CLASSES[k], {"text": f"caption {item}", "audio": f"{item}.wav"}, {}))
            e_table["text"][item] = unit(e_class[k] + 0.3 * own)
            e_table["audio"][item] = unit(e_class[k] + 0.3 * own + 0.1 * torch.randn(dim, generator=g))
            t_table["text"][item] = unit(t_class[k] + 0.3 * own)
            t_table["audio"][item] = unit(torch.randn(dim, generator=g)) if noisy_target_audio else t_table["text"][item]
    if same_spaces:
        t_table, t_class = e_table, e_class
    prompts = {c: t_class[k] for k, c in enumerate(CLASSES)}
    e_prompts = {c: e_class[k] for k, c in enumerate(CLASSES)}
    t = Space.from_encoders("T", {"text": lambda xs: torch.stack([prompts[x] for x in xs]),
                                  "audio": lambda xs: torch.zeros(len(xs), dim)}, dim=dim)
    e = Space.from_encoders("E", {"text": lambda xs: torch.stack([e_prompts[x] for x in xs]),
                                  "audio": lambda xs: torch.zeros(len(xs), dim)}, dim=dim)
    dataset = Dataset(root=Path("."), items=items, classes=[ClassInfo(c) for c in CLASSES], templates=["{}"])
    return t, e, CacheSet({"T": MemoryCache(t_table), "E": MemoryCache(e_table)}), dataset


def test_auto_targets_drop_the_modality_the_target_embeds_poorly() -> None:
    t, _, caches, dataset = world()
    auto = choose_targets("auto", t, caches, dataset)
    assert auto.kept == ["text"] and auto.measure == "zero-shot acc1"
    assert auto.reliability["text"] > 0.9 and auto.reliability["audio"] < 0.4
    assert auto.admits("audio", "text") and not auto.admits("audio", "audio")
    same, cross, every = (choose_targets(p, t, caches, dataset) for p in ("same", "cross", "all"))
    assert [same.admits("audio", "audio"), same.admits("audio", "text")] == [True, False]
    assert [cross.admits("audio", "audio"), cross.admits("audio", "text")] == [False, True]
    assert every.admits("audio", "audio") and every.admits("text", "audio")
    t_good, _, caches_good, _ = world(noisy_target_audio=False)
    assert choose_targets("auto", t_good, caches_good, dataset).kept == ["text", "audio"]


def test_mixture_members_are_applied_only_to_the_modalities_they_trained_on() -> None:
    torch.manual_seed(0)
    members = [MLPProjector(4, 3, hidden=8).eval() for _ in range(3)]
    mix = ProjectorMixture(members, sources=[["text"], ["text", "audio"], ["audio"]])
    assert mix.members_for("audio") == [members[1], members[2]] and mix.members_for("text") == members[:2]
    assert mix.members_for("image") == members  # no member saw it: all of them, as an unrecorded mixture
    u = Space.from_encoders("U", {"text": lambda xs: unit(torch.ones(len(xs), 3)),
                                  "audio": lambda xs: unit(torch.ones(len(xs), 3))}, dim=3)
    e = Space.from_encoders("E", {"text": lambda xs: torch.randn(len(xs), 4), "audio": lambda xs: torch.randn(len(xs), 4)}, dim=4)
    space = BoundSpace(u, [e], "combination", {"E": mix}, lambdas={"audio": 0.7})
    x, u_a = torch.randn(5, 4), unit(torch.ones(5, 3))
    want = unit(0.3 * u_a + 0.7 * torch.stack([members[1](x), members[2](x)]).mean(dim=0))
    torch.testing.assert_close(space.combine("audio", {"U": u_a, "E": x}), want)
    assert ProjectorMixture.from_config(mix.config).sources == mix.sources


def test_lambda_choice_is_never_worse_than_the_parts_on_val() -> None:
    t, e, caches, dataset = world()
    x = caches.embeddings(e, "text", [it.id for it in dataset.select("train")])
    y = caches.embeddings(t, "text", [it.id for it in dataset.select("train")])
    head = fit_least_squares(torch.cat([x, caches.embeddings(e, "audio", [it.id for it in dataset.select("train")])]),
                             torch.cat([y, y]))
    space = BoundSpace(t, [e], "combination", {"E": head}, lambdas={"text": 0.5, "audio": 0.5})
    choice = choose_lambdas(space, [t, e], caches, dataset)
    assert choice is not None and choice.coarse == {"text": 0.5, "audio": 0.5}
    assert choice.lambdas["audio"] >= 0.8  # the target's own audio is noise
    assert not choice.kept_coarse and choice.confidence >= 0.9
    assert choice.objective >= choice.coarse_objective and min(choice.margins.values()) == choice.objective
    assert set(choice.margins) >= {"text→audio R@1", "audio→text R@1", "audio zero-shot acc1"}


def test_lambda_choice_keeps_the_coarse_lambda_on_a_tie() -> None:
    t, e, caches, dataset = world(same_spaces=True)  # both sides embed alike: every λ gives the same space
    space = BoundSpace(t, [e], "combination", {"E": identity_head(16)}, lambdas={"text": 0.3, "audio": 0.6})
    choice = choose_lambdas(space, [t, e], caches, dataset)
    # any other λ can only win by float rounding: the guard keeps the coarse one
    assert choice.lambdas == {"text": 0.3, "audio": 0.6} and choice.confidence < 0.9
    assert abs(choice.objective - choice.coarse_objective) < 0.02


def test_sweep_keeps_the_current_lambda_unless_beaten() -> None:
    t, e, caches, dataset = world(same_spaces=True)
    space = BoundSpace(t, [e], "combination", {"E": identity_head(16)}, lambdas={"text": 0.3, "audio": 0.6})
    result = sweep(space, caches, dataset, split="val", grid=[0.0, 0.5, 1.0], progress=False)
    for task, best in result.best.items():
        beaten = max(result.scores[task]) > result.baseline[task]
        assert beaten or best == {"text": 0.3, "audio": 0.6}, task


@pytest.mark.parametrize("pairing", ["nope"])
def test_unknown_pairing_is_named(pairing: str) -> None:
    t, _, caches, dataset = world()
    with pytest.raises(ValueError, match="unknown pairing 'nope'"):
        choose_targets(pairing, t, caches, dataset)


def test_sweep_figure_shares_one_scale_and_marks_current_and_best(tmp_path: Path) -> None:
    from spacebind.evaluation.sweep import SweepResult, plot_sweep, sweep_figure

    grid = [0.2, 0.4, 0.6]
    points = [{"text": a, "audio": b} for a in grid for b in grid]
    scores = {"text→audio R@1": [0.1 * i for i in range(9)], "image zero-shot acc1": [0.5] * 9}
    result = SweepResult(["text", "audio"], grid, points, scores, baseline={"text→audio R@1": 0.4, "image zero-shot acc1": 0.5},
                         best={"text→audio R@1": points[8], "image zero-shot acc1": {"text": 0.4, "audio": 0.2}},
                         split="val", current={"text": 0.4, "audio": 0.2})
    fig = sweep_figure(result)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == list(scores)
    limits = {tuple(ax.images[0].get_clim()) for ax in panels}
    assert limits == {(-40.0, 40.0)}  # one colour scale for all panels: the largest change is 0.8 − 0.4
    assert [t.get_text() for t in panels[0].get_xticklabels()] == ["0.2", "0.4", "0.6"]  # the grid's own values
    assert len(panels[0].texts) == 9 and panels[1].texts[0].get_text() == "+0.0"
    assert sum(len(ax.lines) for ax in panels) == 4  # current (□) and best (★) on each panel
    assert "val split" in fig._suptitle.get_text()
    assert plot_sweep(result, tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_sweep_title_names_split_and_item_count() -> None:
    from spacebind.evaluation.sweep import SweepResult, sweep_figure

    points = [{"text": 0.0}, {"text": 1.0}]
    result = SweepResult(["text"], [0.0, 1.0], points, {"text→image R@1": [0.1, 0.2]}, {"text→image R@1": 0.1},
                         {"text→image R@1": {"text": 1.0}}, split="val", current={"text": 0.0}, n_items=300)
    assert "val split, n = 300 items" in sweep_figure(result)._suptitle.get_text()
    assert result.to_json()["n_items"] == 300
