"""OmniBind on the procedural world, on held-out instance seeds (recipes/omnibind_world.yaml): each
expert alone, the target (anchor) space, the routed space without its channel (OmniBind's formula),
the uniform mixture of all remapped spaces, and the routed space trained without and with
language-representation decoupling (the last three with the channel the recipe chose on val). R@1 both ways on every
modality pair (audio↔point included: no single expert but the unified one covers it), the mean
over all pairs (a pair a space lacks counts 0), averaged over seeds; then the router weight per
candidate space and modality on the test split, its mean and its sd over inputs. `--recipe
omnibind_world_pools` runs OmniBind as published: unimodal train pools, pseudo pairs and pseudo
tuples (recipes/omnibind_world_pools.yaml); `--recipe omnibind_world_specialists` routes between
two domain-specialist audio-text experts (recipes/omnibind_world_specialists.yaml), and adds two
columns that bound what routing by domain can add: the candidates weighted by an oracle that knows
each test item's concept (the specialist that never learned it out; or only the one that did), with
the channel the routed space chose.
Last, routed − uniform in mean R@1 per seed and pooled over the seeds, with its 95 % paired
bootstrap interval over test items (each item's hits in all 12 directions resampled together), and
the routed space against each expert on the expert's own pairs (R@1 both ways, queries resampled;
"yes" at or above it, "tie" within the noise, "NO" beyond it).
Run: python -m benchmarks.omnibind [--seeds 11 12] [--recipe omnibind_world_pools]"""
from __future__ import annotations

import argparse
import datetime
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import torch
import yaml
from rich.console import Console
from rich.table import Table

from benchmarks.paired import Margin, compare, paired_margin, pooled
from spacebind.bonds.route import RouterConfig, mix, train_routers
from spacebind.cache import dataset_key, ensure_caches
from spacebind.evaluation.evaluate import evaluate_space
from spacebind.evaluation.metrics import first_hit_ranks, retrieval_recall
from spacebind.evaluation.report import task_scores
from spacebind.fuse import fuse
from spacebind.io.datasets import Dataset
from spacebind.modalities import modality_pairs
from spacebind.recipe import validate_recipe
from spacebind.world.experts import CONFIGS

ROOT = Path(__file__).resolve().parents[1]
MODALITIES = ("text", "image", "audio", "point")
MEAN = "mean R@1 (all pairs)"


def with_mean(scores: dict[str, float]) -> dict[str, float]:
    keys = [f"{a}→{b} R@1" for x, y in modality_pairs(MODALITIES) for a, b in ((x, y), (y, x))]
    return {**{k: scores.get(k, 0.0) for k in keys}, MEAN: sum(scores.get(k, 0.0) for k in keys) / len(keys)}


def item_scores(space, caches, dataset) -> torch.Tensor:
    """Per test item, its share of `MEAN`: its R@1 hits over the 12 directions, each direction's hit
    weighted 1 / (12 × the direction's queries), times the items; their mean is `MEAN` of `with_mean`
    (a direction the space lacks counts 0)."""
    items = dataset.select("test")
    position = {it.id: i for i, it in enumerate(items)}
    directions = [(a, b) for x, y in modality_pairs(MODALITIES) for a, b in ((x, y), (y, x))]
    out = torch.zeros(len(items), dtype=torch.float64)
    for a, b in directions:
        if a not in space.modalities or b not in space.modalities:
            continue
        ids = [it.id for it in items if a in it.fields and b in it.fields]
        hits = first_hit_ranks(caches.embeddings(space, a, ids), caches.embeddings(space, b, ids), range(len(ids))) < 1
        out[[position[i] for i in ids]] += hits.double() * len(items) / (len(directions) * len(ids))
    return out


def direction_hits(space, caches, dataset, a: str, b: str) -> torch.Tensor:
    """0/1 per test query of modality `a` (an item holding `a` and `b`): whether its own item's `b`
    ranks first among the split's."""
    ids = [it.id for it in dataset.select("test") if a in it.fields and b in it.fields]
    return (first_hit_ranks(caches.embeddings(space, a, ids), caches.embeddings(space, b, ids), range(len(ids))) < 1).double()


def expert_pair_hits(routed, experts: dict, caches, dataset) -> dict[str, dict[str, torch.Tensor]]:
    """Per system (the routed space, each bonded expert): per direction between two modalities an
    expert covers, the per-query hits of `direction_hits`."""
    out: dict[str, dict[str, torch.Tensor]] = {"routed": {}}
    for name, expert in experts.items():
        covered = [m for m in MODALITIES if m in expert.modalities]
        for x, y in modality_pairs(covered):
            for a, b in ((x, y), (y, x)):
                key = f"{name}: {a}→{b} R@1"
                out.setdefault(name, {})[key] = direction_hits(expert, caches, dataset, a, b)
                out["routed"][key] = direction_hits(routed, caches, dataset, a, b)
    return out


def run_seed(seed: int, root: Path, sizes: dict[str, int], recipe: str = "omnibind_world"
             ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]], dict[str, torch.Tensor],
                        dict[str, float] | None, dict[str, dict[str, torch.Tensor]]]:
    """Scores per column, mean router weights per `modality: candidate` per routed column, the
    uniform mixture's and the routed space's `item_scores`, the channel's κ chosen on val, and the
    per-query hits of the routed space and each expert on the expert's pairs (`expert_pair_hits`)."""
    raw = yaml.safe_load((ROOT / "recipes" / f"{recipe}.yaml").read_text())
    raw["data"] = {"world": {**raw["data"]["world"], "seed": seed, **sizes}}
    work = root / f"work-{seed}"
    result = fuse(validate_recipe(raw), work=work, out=root / f"out-{seed}", progress=False)
    dataset = Dataset.load(next((work / "data").iterdir()))
    caches = ensure_caches([result.space], dataset, work / "cache" / dataset_key(dataset), progress=False)
    columns: dict[str, dict[str, float]] = {}
    for r in result.records:
        if r["role"] != "fused":
            columns.setdefault(r["model"], {}).update(task_scores([r]))
    routed = result.space
    no_decoupling = train_routers(routed.uniform(), caches, dataset,
                                  RouterConfig(**{**raw["routed"]["router"], "decoupling": 0.0}), progress=False)
    spaces = {"target (anchor)": routed.base, "routed, no channel": routed.with_channels(None),
              "uniform mixture": routed.uniform(), "routed, no decoupling": no_decoupling, "routed + decoupling": routed}
    for label, space in spaces.items():
        columns[label] = task_scores(evaluate_space(space, "fused", caches, dataset, "test", [1]))
    weights = {label: route_weights(space, caches, dataset) for label, space in list(spaces.items())[3:]}
    items = {label: item_scores(spaces[label], caches, dataset) for label in ("uniform mixture", "routed + decoupling")}
    domains = {key: CONFIGS[name].domain for key, name in raw["experts"].items()
               if name in CONFIGS and CONFIGS[name].domain is not None}
    if domains:
        for label, own_only in (("domain oracle: other specialist out", False), ("domain oracle: own specialist", True)):
            columns[label] = domain_oracle(routed, caches, dataset, domains, own_only)
    experts = {e.name: e for e in routed.leaves() if e.name in raw["experts"]}
    pairs = expert_pair_hits(routed, experts, caches, dataset)
    return {k: with_mean(v) for k, v in columns.items()}, weights, items, routed.channels, pairs


def oracle_weights(routes: list[str], concept: torch.Tensor, domains: dict[str, tuple[int, int]],
                   own_only: bool) -> torch.Tensor:
    """Per item [N, K] (rows sum to 1): a specialist (`domains`: name → (k, n), it learned the concepts
    whose index is k mod n) gets weight 0 on the concepts it never learned, the other candidates
    share the rest; `own_only`: the specialist that learned the item's concept gets all of it."""
    weights = torch.ones(len(concept), len(routes))
    for k, name in enumerate(routes):
        if name in domains:
            learned = (concept % domains[name][1] == domains[name][0]).float()
            weights[:, k] = learned
            if own_only:
                others = [j for j in range(len(routes)) if j != k]
                weights[:, others] *= 1 - learned.unsqueeze(1)
    return weights / weights.sum(dim=1, keepdim=True)


@torch.no_grad()
def domain_oracle(space, caches, dataset, domains: dict[str, tuple[int, int]], own_only: bool) -> dict[str, float]:
    """Test R@1 of the routed space's candidates weighted by `oracle_weights`, which know each item's
    concept, with the routed space's channel: a bound on what routing by domain can add over the
    uniform mixture (modalities no specialist covers stay uniform)."""
    items = dataset.select("test")
    ids = [it.id for it in items]
    concept = torch.tensor([dataset.class_names.index(it.label) for it in items])
    fused = {}
    for m in MODALITIES:
        leaf = {e.name: caches.caches[e.name].embeddings(m, ids) for e in space.leaves_for(m)}
        weights = oracle_weights(space.routes(m), concept, domains, own_only)
        fused[m] = space.with_channel_parts(m, mix(space.candidates(m, leaf), weights), leaf)
    diagonal = list(range(len(ids)))
    return {f"{a}→{b} R@1": retrieval_recall(fused[a], fused[b], diagonal, (1,))[1]
            for x, y in modality_pairs(MODALITIES) for a, b in ((x, y), (y, x))}


@torch.no_grad()
def route_weights(space, caches, dataset) -> dict[str, float]:
    """Mean weight of each candidate per modality over the test items, and its standard deviation
    over them (near 0: the router weighs every input alike, a fixed per-modality mixture)."""
    out = {}
    for m in space.modalities:
        ids = [it.id for it in dataset.select("test", m)]
        leaf = {e.name: caches.caches[e.name].embeddings(m, ids) for e in space.leaves_for(m)}
        weights = space.weights(m, leaf)
        for name, mean, sd in zip(space.routes(m), weights.mean(dim=0).tolist(), weights.std(dim=0).tolist()):
            out[f"{m}: {name}"], out[f"{m}: {name}, sd over inputs"] = mean, sd
    return out


def _table(title: str, sums: dict[str, dict[str, float]], scale: float) -> Table:
    columns = list(sums)
    rows = list(dict.fromkeys(r for c in columns for r in sums[c]))
    table = Table("", *columns, title=title)
    for row in rows:
        table.add_row(row, *(f"{scale * sums[c][row]:.1f}" if row in sums[c] else "–" for c in columns))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12])
    parser.add_argument("--sizes", type=int, nargs=3, default=[2000, 300, 500], metavar=("TRAIN", "VAL", "TEST"))
    parser.add_argument("--recipe", default="omnibind_world",
                        choices=["omnibind_world", "omnibind_world_pools", "omnibind_world_specialists"],
                        help="paired train items, unimodal pools (pseudo pairs and tuples), or paired "
                             "items with two domain-specialist audio-text experts")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    sizes = dict(zip(("train", "val", "test"), args.sizes))
    scores: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    weights: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    per_seed, items, channels, pairs = {}, [], {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            columns, routed, scored, channels[seed], hits = run_seed(seed, Path(tmp), sizes, args.recipe)
            pairs.append(hits)
            per_seed[seed] = {c: v[MEAN] for c, v in columns.items()}
            items.append(scored)
            for target, source in ((scores, columns), (weights, routed)):
                for column, values in source.items():
                    for key, value in values.items():
                        target[column][key] += value / len(args.seeds)
    console = Console(width=240)
    console.print(_table(f"{args.recipe}, test R@1, mean over seeds {args.seeds} (%)", scores, 100))
    console.print(_table("router weight per candidate on the test split: mean and sd over inputs (%)", weights, 100))
    for seed, means in per_seed.items():
        console.print(f"seed {seed}: " + ", ".join(f"{c} {100 * v:.2f}" for c, v in means.items()))
        console.print(f"seed {seed}: channel κ chosen on val: {channels[seed] or 'none (OmniBind formula)'}")
    gains = {str(seed): routed_gain([scored]) for seed, scored in zip(args.seeds, items)}
    if len(args.seeds) > 1:
        gains["pooled"] = routed_gain(items)
    for label, gain in gains.items():
        console.print(f"{'seed ' + label if label != 'pooled' else 'pooled'}: routed + decoupling − uniform mixture, "
                      f"mean R@1 {gain} points (95 % paired bootstrap over test items)")
    on_pairs = {}
    for expert in [name for name in pairs[0] if name != "routed"]:
        metrics = list(pairs[0][expert])
        on_pairs[expert] = {f"seed {seed}": compare([hits], "routed", expert, metrics) for seed, hits in zip(args.seeds, pairs)}
        if len(args.seeds) > 1:
            on_pairs[expert]["pooled"] = compare(pairs, "routed", expert, metrics)
        for label, verdict in on_pairs[expert].items():
            console.print(f"{label}: routed ≥ {expert} on its pairs: {verdict} (points, 95 % paired bootstrap)")
    if args.json:
        args.json.write_text(json.dumps({"recipe": args.recipe, "seeds": args.seeds, "threads": torch.get_num_threads(),
                                         "date": datetime.date.today().isoformat(),
                                         "scores": scores, "weights": weights, "per_seed": per_seed, "channels": channels,
                                         "routed_minus_uniform": {k: vars(g) for k, g in gains.items()},
                                         "routed_vs_experts_on_their_pairs": on_pairs}, indent=1))


def routed_gain(seeds: list[dict[str, torch.Tensor]]) -> Margin:
    """routed + decoupling − uniform mixture in mean R@1, points, each seed's test items a stratum."""
    routed, strata = pooled([s["routed + decoupling"] for s in seeds])
    return paired_margin(routed, pooled([s["uniform mixture"] for s in seeds])[0], strata)


if __name__ == "__main__":
    main()
