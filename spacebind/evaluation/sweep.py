"""Fine λ tuning (FreeBind's coarse-to-fine inference): evaluate a grid of λ for the outermost
bond on a validation split, pick the best λ per task, and draw the change per task as heatmaps.
A bond with a channel can sweep the channel's κ the same way (parameters `channel:<modality>`), and
a routed space its channel's κ (`channel:<specialist>`)."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from spacebind.bonds.lambdas import CHANNEL, CHANNEL_PRIOR, _Tasks, bootstrap_share
from spacebind.bonds.node import BondNode
from spacebind.cache import CacheSet, ensure_caches
from spacebind.checkpoint import load, resave
from spacebind.errors import CheckpointError, InputError
from spacebind.evaluation.evaluate import evaluate_space
from spacebind.evaluation.report import pyplot, save_figure, task_scores
from spacebind.io.datasets import Dataset
from spacebind.io.files import write_json
from spacebind.io.progress import track

DEFAULT_GRID = tuple(round(0.1 * i, 1) for i in range(11))


@dataclass
class SweepResult:
    """Scores of every task at every grid point, and the best λ per task (`modalities`: the swept
    parameters, λ by modality or κ as `channel:<modality>`)."""

    modalities: list[str]
    grid: list[float]
    points: list[dict[str, float]]
    scores: dict[str, list[float]]  # task → score at each point
    baseline: dict[str, float]  # task → score at the space's current λ
    best: dict[str, dict[str, float]] = field(default_factory=dict)  # the current λ where nothing beats it
    # task → share of bootstrap resamples of the split's queries in which its best grid point beat
    # the current setting (tasks whose best point beat it on the whole split)
    confidence: dict[str, float] = field(default_factory=dict)
    held_out: dict[str, dict[str, float]] = field(default_factory=dict)  # task → {"now", "best"} on another split
    held_out_split: str | None = None
    split: str = "val"
    current: dict[str, float] = field(default_factory=dict)  # the space's λ when swept
    n_items: int | None = None  # items of the split swept on

    def to_json(self) -> dict[str, Any]:
        return {"modalities": self.modalities, "grid": self.grid, "points": self.points, "scores": self.scores,
                "baseline": self.baseline, "best": self.best, "confidence": self.confidence, "held_out": self.held_out,
                "held_out_split": self.held_out_split, "split": self.split, "current": self.current,
                "n_items": self.n_items}


def preset_name(task: str) -> str:
    """"text→audio R@1" → "best:text-audio"; "audio zero-shot acc1" → "best:zeroshot-audio"."""
    if "→" in task:
        return "best:" + task.split()[0].replace("→", "-")
    return f"best:zeroshot-{task.split()[0]}"


def with_best_presets(space: BondNode, result: SweepResult) -> BondNode:
    """The space with one preset per task, `best:<task>`, holding the setting (λ or κ) that scored best."""
    return space.with_presets({preset_name(t): lam for t, lam in result.best.items()})


def sweep(
    space: BondNode,
    caches: CacheSet,
    dataset: Dataset,
    *,
    split: str = "val",
    grid: Sequence[float] = DEFAULT_GRID,
    modalities: Sequence[str] | None = None,
    resamples: int = 200,
    confidence: float = 0.9,
    progress: bool = True,
) -> SweepResult:
    """Evaluate every combination of the grid over `modalities` (default: the λ of every modality
    the bond mixes; or κ of the channel as `channel:<…>`, see `BondNode.settings`; one kind at a
    time). A κ grid stops at the channel's prior: κ = 1 would drop the bond from the modality and
    its similarities to uncarried ones. A task's best setting is the current one unless its best
    grid point scores higher on the split and in at least `confidence` of `resamples` bootstrap
    resamples of the split's queries (as a bond's λ is chosen, `spacebind.bonds.lambdas`): a win
    inside the noise is a tie."""
    mods = list(modalities or space.tunable_modalities())
    unknown = [m for m in mods if m not in space.settings()]
    if unknown or not mods:
        raise InputError(f"cannot sweep {unknown or mods}; the bond's parameters are {space.settings()}")
    kappas = [m.startswith(CHANNEL) for m in mods]
    if any(kappas) and not all(kappas):
        raise InputError(f"sweep λ or the channel's κ, not both at once (got {', '.join(mods)})")
    if all(kappas):
        grid = sorted({min(float(v), CHANNEL_PRIOR) for v in grid})
    if not dataset.count(split):
        raise InputError(f"dataset {dataset.root} has no {split!r} items to sweep on")
    points = [dict(zip(mods, values)) for values in itertools.product(list(grid), repeat=len(mods))]
    baseline = task_scores(evaluate_space(space, "fused", caches, dataset, split, [1]))
    scores: dict[str, list[float]] = {task: [] for task in baseline}
    for point in track(points, f"sweeping {', '.join(map(_axis, mods))}", show=progress, unit="settings"):
        got = task_scores(evaluate_space(space.with_lambdas(point), "fused", caches, dataset, split, [1]))
        for task in scores:
            scores[task].append(got[task])
    current = {m: space.setting_value(m) for m in mods}
    winners = {task: points[max(range(len(points)), key=lambda i: values[i])]
               for task, values in scores.items() if max(values) > baseline[task]}
    shares = _win_shares(space, caches, dataset, split, current, winners, resamples)
    best = {task: winners[task] if shares.get(task, 0.0) >= confidence else current for task in scores}
    return SweepResult(mods, [float(g) for g in grid], points, scores, baseline, best, confidence=shares, split=split,
                       current=current, n_items=dataset.count(split))


def _win_shares(space: BondNode, caches: CacheSet, dataset: Dataset, split: str, current: dict[str, float],
                winners: dict[str, dict[str, float]], resamples: int) -> dict[str, float]:
    """Per task with a winning grid point, the share of bootstrap resamples of the split's queries
    in which that point's score beats the current setting's (the tasks of `bonds.lambdas._Tasks`,
    scored per query; a task it does not score counts as never beaten)."""
    if not winners:
        return {}
    values = sorted({*current.values(), *(v for point in winners.values() for v in point.values())})
    tasks = _Tasks(space, [], caches, dataset, split, list(current), values)
    now = tasks.fused_hits(current)
    hits: dict[tuple, dict[str, torch.Tensor]] = {}  # per distinct winning point, every task's hits once
    shares = {}
    for task, point in winners.items():
        if task in now:
            key = tuple(sorted(point.items()))
            if key not in hits:
                hits[key] = tasks.fused_hits(point)
            shares[task] = bootstrap_share({task: hits[key][task]}, {task: now[task]}, {}, tasks.group_index,
                                           resamples, seed=0)
    return shares


def score_held_out(space: BondNode, result: SweepResult, caches: CacheSet, dataset: Dataset, split: str) -> None:
    """Fill `result.held_out`: each task's score on `split` at the current λ and at its best λ."""
    now = task_scores(evaluate_space(space, "fused", caches, dataset, split, [1]))
    found: dict[tuple, dict[str, float]] = {}
    for task, lam in result.best.items():
        key = tuple(sorted(lam.items()))
        if key not in found:
            found[key] = task_scores(evaluate_space(space.with_lambdas(lam), "fused", caches, dataset, split, [1]))
        result.held_out[task] = {"now": now[task], "best": found[key][task]}
    result.held_out_split = split


def sweep_figure(result: SweepResult, tasks: Sequence[str] | None = None) -> Any:
    """The change of each task's score (points, vs the current λ) over the grid, one panel per task:
    heatmaps for two swept modalities, curves for one. One colour scale (or y range) for every
    panel, the current λ marked with a square and each task's best with a star, values in the cells
    of small grids, ticks at the grid's own values."""
    import numpy as np

    plt = pyplot()
    swept = " and ".join(dict.fromkeys(_axis(p).split()[0] for p in result.modalities))  # λ, κ or both
    tasks = list(tasks or result.scores)
    n = len(result.grid)
    deltas = {t: 100 * (np.array(result.scores[t]) - result.baseline[t]) for t in tasks}
    limit = max(max(float(abs(d).max()) for d in deltas.values()), 1e-6)
    cols = min(4, len(tasks))
    rows = -(-len(tasks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols + 1, 3.0 * rows + 0.4), squeeze=False, layout="constrained")
    index = {round(v, 6): i for i, v in enumerate(result.grid)}
    where = [index.get(round(result.current.get(m, float("nan")), 6)) for m in result.modalities]
    image = None
    for ax, task in zip(axes.flat, tasks):
        best = [index.get(round(result.best[task][m], 6)) for m in result.modalities]
        if len(result.modalities) == 1:
            ax.plot(range(n), deltas[task], marker="o")
            ax.set_ylim(-1.1 * limit, 1.1 * limit)
            ax.set_ylabel("Δ (points)")
            if where[0] is not None:
                ax.axvline(where[0], color="black", linewidth=1, label=f"current {swept}")
            if best[0] is not None:
                ax.plot(best[0], deltas[task][best[0]], marker="*", markersize=14, color="gold", markeredgecolor="black")
        else:
            grid = deltas[task].reshape(n, n)  # rows: first modality, columns: second
            image = ax.imshow(grid, origin="lower", cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
            ax.set_yticks(range(n), [f"{v:g}" for v in result.grid])
            ax.set_ylabel(_axis(result.modalities[0]))
            if n <= 6:
                for (y, x), v in np.ndenumerate(grid):
                    ax.text(x, y, f"{v:+.1f}", ha="center", va="center", fontsize=7)
            if None not in where:
                ax.plot(where[1], where[0], marker="s", markersize=12, fillstyle="none", color="black")
            if None not in best:
                ax.plot(best[1], best[0], marker="*", markersize=14, color="gold", markeredgecolor="black")
        ax.set_xticks(range(n), [f"{v:g}" for v in result.grid], rotation=90 if n > 6 else 0)
        ax.set_xlabel(_axis(result.modalities[-1]))
        ax.set_title(task, fontsize=9)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    if image is not None:
        fig.colorbar(image, ax=list(axes.flat), label=f"Δ vs current {swept} (points)")
    items = f", n = {result.n_items} items" if result.n_items is not None else ""
    fig.suptitle(f"{swept} sweep on the {result.split} split{items}: □ current {swept}, ★ best", fontsize=10)
    return fig


def _axis(parameter: str) -> str:
    """"λ text" for a λ, "κ audio" for a channel's κ."""
    return f"κ {parameter.removeprefix(CHANNEL)}" if parameter.startswith(CHANNEL) else f"λ {parameter}"


def plot_sweep(result: SweepResult, path: str | Path, tasks: Sequence[str] | None = None) -> Path:
    """`sweep_figure` written as a PNG to `path`."""
    return save_figure(sweep_figure(result, tasks), path)


def sweep_checkpoint(fused: str | Path, data: str | Path, *, split: str = "val", grid: Sequence[float] = DEFAULT_GRID,
                     modalities: Sequence[str] | None = None, channel: bool = False, save: bool = True,
                     held_out: str | None = "test", cache_dir: str | Path | None = None,
                     trust_remote_code: bool = False) -> SweepResult:
    """`spacebind sweep`: sweep the outermost bond's λ of a fused checkpoint on a split (with
    `channel`, and no `modalities`, the κ of every modality its channel carries instead; of a routed
    space, the κ of its channel's specialists); writes
    FUSED/sweep.json and (for at most two swept parameters) FUSED/sweep.png; with `save`, the best
    setting per task becomes a preset `best:<task>` in the checkpoint. With `held_out`, each task's
    current and best setting are also scored on that split (reported beside the tuning split, never
    used to choose)."""
    fused = Path(fused)
    if not fused.is_dir():
        raise CheckpointError(f"{fused}: no such directory; sweep writes its results into a fused checkpoint "
                              "directory (download a hub checkpoint to one first)")
    space = load(fused, trust_remote_code=trust_remote_code)
    if not isinstance(space, BondNode) or not space.settings():
        raise InputError(f"{fused} holds no bond with λ or κ: nothing to sweep")
    if not space.tunable_modalities() and not (channel or modalities):
        raise InputError(f"{fused} holds a {space.kind} space: it has no λ; sweep its channel's κ (--channel)")
    if channel and not modalities:
        modalities = [p for p in space.settings() if p.startswith(CHANNEL)]
        if not modalities:
            raise InputError(f"{fused}: the bond {space.name!r} has no channel: no κ to sweep")
    dataset = Dataset.load(data)
    dataset.check_split(split)
    caches = ensure_caches([space], dataset, cache_dir)
    result = sweep(space, caches, dataset, split=split, grid=list(grid), modalities=modalities or None)
    if held_out and held_out != split and dataset.count(held_out):
        score_held_out(space, result, caches, dataset, held_out)
    def write_plot(path: Path) -> None:
        if len(result.modalities) <= 2:
            plot_sweep(result, path)

    # recorded in the export (its files_sha256): they go with this space, not beside another one later
    resave(with_best_presets(space, result) if save else space, fused,
           files={"sweep.json": lambda path: write_json(path, result.to_json()), "sweep.png": write_plot})
    return result
