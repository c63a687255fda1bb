"""Training OmniBind's routed space on cached embeddings: remap every member space into the target
with a frozen projector (mixture), then train one router per modality; nothing re-encodes data.

Router losses, on tuples (dataset items carrying two or more of the space's modalities):

1. cross-modal overall alignment: the mean of symmetric InfoNCE over every modality pair present
   in the batch's tuples, on the routed embeddings of both sides.
2. language-representation decoupling (our form; OmniBind's exact formula is not public): the
   routed text must stay good for each paired modality separately. For every modality m paired
   with text, with m's routed side held fixed, the text→m InfoNCE of the routed text may not
   exceed that of the best single text candidate for m in the batch:
   `L_dec = mean_m relu(L(t_routed, m) − min_k L(t_k, m))`. Text→audio and text→image may prefer
   different candidates; a text router trained on the pooled loss (1) alone can trade one paired
   modality for another, (2) charges every modality's regret separately. It trains the text
   router only. `benchmarks/omnibind.py` compares training with and without it.

The best epoch by validation mean R@1 over every modality pair and direction is kept.
Deterministic on CPU for a fixed seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from spacebind.binding import CacheSet, train_head
from spacebind.bonds.routed import ROUTER_PREFIX, Router, RoutedSpace, mix, routing_weights
from spacebind.data import Dataset
from spacebind.errors import InputError
from spacebind.losses import info_nce
from spacebind.metrics import retrieval_recall
from spacebind.modalities import modality_pairs
from spacebind.progress import track
from spacebind.space import Space
from spacebind.training import TrainConfig, adamw, warmup_cosine


class RouterConfig(BaseModel):
    """Router training settings (the recipe's `routed.router:` section)."""

    model_config = ConfigDict(extra="forbid")

    hidden: list[int] = Field(default_factory=lambda: [512, 100], min_length=2, max_length=2,
                              description="widths of the router MLP's two hidden layers (OmniBind: 512, 100)")
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(256, ge=2)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup: float = Field(0.05, ge=0, lt=1)
    temperature: float = Field(0.05, gt=0, description="fixed InfoNCE temperature")
    decoupling: float = Field(1.0, ge=0, description="weight of the language-representation decoupling loss; 0: off")
    patience: int = Field(5, ge=1, description="epochs without a val mean R@1 gain before stopping")
    seed: int = 0


@dataclass
class RouteData:
    """Cached candidates and router inputs of one split's tuples. `rows[m][i]` is item i's row in
    `candidates[m]` / `inputs[m]`, or -1 when the item lacks m."""

    ids: list[str]
    candidates: dict[str, torch.Tensor]
    inputs: dict[str, torch.Tensor]
    rows: dict[str, torch.Tensor]


@torch.no_grad()
def route_data(space: RoutedSpace, caches: CacheSet, dataset: Dataset, split: str) -> RouteData:
    """The tuples of a split (items with at least two of the space's modalities), from the caches."""
    mods = list(space.modalities)
    items = [it for it in dataset.select(split) if sum(m in it.fields for m in mods) >= 2]
    ids = [it.id for it in items]
    position = {i: p for p, i in enumerate(ids)}
    candidates, inputs, rows = {}, {}, {}
    for m in mods:
        have = caches.usable_ids(space, m, [it.id for it in items if m in it.fields])
        if not have:
            continue
        leaf = {e.name: caches.caches[e.name].embeddings(m, have) for e in space.leaves_for(m)}
        candidates[m], inputs[m] = space.candidates(m, leaf), space.router_input(m, leaf)
        rows[m] = torch.full((len(ids),), -1, dtype=torch.long)
        rows[m][torch.tensor([position[i] for i in have])] = torch.arange(len(have))
    return RouteData(ids, candidates, inputs, rows)


def _routed(space: RoutedSpace, routers: Mapping[str, nn.Module], data: RouteData, m: str,
            positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Routed embeddings of m for the batch positions that have m, and the mask of those positions."""
    rows = data.rows[m][positions]
    present = rows >= 0
    cands = data.candidates[m][rows[present]]
    weights = routing_weights(routers.get(m), data.inputs[m][rows[present]], cands.shape[1], space.scales[m])
    return mix(cands, weights), present


def router_loss(space: RoutedSpace, routers: Mapping[str, nn.Module], data: RouteData, positions: torch.Tensor,
                config: RouterConfig) -> torch.Tensor:
    """(1) mean pairwise InfoNCE + `decoupling` × (2) the text regret (see the module docstring)."""
    scale = 1.0 / config.temperature
    routed = {m: _routed(space, routers, data, m, positions) for m in data.candidates}
    pair_losses, regrets = [], []
    for a, b in modality_pairs(list(routed)):
        (ea, pa), (eb, pb) = routed[a], routed[b]
        both = pa & pb
        if int(both.sum()) < 2:
            continue
        xa, xb = ea[both[pa]], eb[both[pb]]
        pair_losses.append(info_nce(xa, xb, scale))
        if config.decoupling > 0 and "text" in (a, b) and "text" in routers:
            text, other = (xa, xb) if a == "text" else (xb, xa)
            rows = data.rows["text"][positions][both]
            singles = F.normalize(data.candidates["text"][rows], dim=-1)
            best = min(float(info_nce(singles[:, k], other.detach(), scale)) for k in range(singles.shape[1]))
            regrets.append(F.relu(info_nce(text, other.detach(), scale) - best))
    if not pair_losses:
        raise InputError("router training: no batch holds two items sharing two modalities")
    loss = torch.stack(pair_losses).mean()
    if regrets:
        loss = loss + config.decoupling * torch.stack(regrets).mean()
    return loss


@torch.no_grad()
def mean_pair_recall(space: RoutedSpace, routers: Mapping[str, nn.Module], data: RouteData) -> float:
    """Mean R@1 over every modality pair and direction of a split's tuples."""
    everyone = torch.arange(len(data.ids))
    routed = {m: _routed(space, routers, data, m, everyone) for m in data.candidates}
    scores = []
    for a, b in modality_pairs(list(routed)):
        (ea, pa), (eb, pb) = routed[a], routed[b]
        both = pa & pb
        if int(both.sum()) == 0:
            continue
        xa, xb = ea[both[pa]], eb[both[pb]]
        diagonal = list(range(len(xa)))
        scores += [retrieval_recall(xa, xb, diagonal, (1,))[1], retrieval_recall(xb, xa, diagonal, (1,))[1]]
    return sum(scores) / len(scores) if scores else float("nan")


def train_routers(space: RoutedSpace, caches: CacheSet, dataset: Dataset, config: RouterConfig | None = None,
                  progress: bool = True) -> RoutedSpace:
    """Train one router per modality with two or more candidates (projectors frozen); returns the
    routed space with them (`space`'s own routers, if any, are replaced)."""
    config = config or RouterConfig()
    train, val = route_data(space, caches, dataset, "train"), route_data(space, caches, dataset, "val")
    if len(train.ids) < 2:
        raise InputError(f"router training: the train split of {dataset.root} has {len(train.ids)} tuples "
                         f"(items with two or more of {list(space.modalities)}); need at least 2")
    routed_mods = [m for m in train.candidates if train.candidates[m].shape[1] > 1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        routers = nn.ModuleDict({m: Router(train.inputs[m].shape[1], train.candidates[m].shape[1], config.hidden)
                                 for m in routed_mods})
    optimizer = adamw(routers.parameters(), config.lr, config.weight_decay)
    batch = min(config.batch_size, len(train.ids))
    steps = max(1, len(train.ids) // batch)
    scheduler = warmup_cosine(optimizer, steps * config.epochs, config.warmup)
    best, best_val, best_epoch = None, -math.inf, -1
    for epoch in track(range(config.epochs), "training routers", show=progress):
        routers.train()
        order = torch.randperm(len(train.ids), generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))
        for step in range(steps):
            loss = router_loss(space, dict(routers), train, order[step * batch:(step + 1) * batch], config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        routers.eval()
        score = mean_pair_recall(space, dict(routers), val if val.ids else train)
        if score > best_val:
            best_val, best_epoch = score, epoch
            best = {k: v.detach().clone() for k, v in routers.state_dict().items()}
        if epoch - best_epoch >= config.patience:
            break
    routers.load_state_dict(best)
    heads = {k: v for k, v in space.heads.items() if not k.startswith(ROUTER_PREFIX)}
    heads.update({f"{ROUTER_PREFIX}{m}": r.eval() for m, r in routers.items()})
    return RoutedSpace(space.base, space.experts, heads, scales=space.scales, inputs=space.inputs, name=space.name)


def remap(target: Space, members: Sequence[Space], caches: CacheSet, dataset: Dataset, *,
          scales: Mapping[str, float] | None = None, inputs: Mapping[str, Sequence[str]] | None = None,
          work_dir: Path | None = None, name: str | None = None, progress: bool = True,
          **head_kwargs) -> RoutedSpace:
    """Remap every member into `target` with a projector each (`head_kwargs` as `train_head`:
    `projector`, `mixture`, `pairing`, `pseudo`, `train`, …); the uniform routed space (no routers)."""
    heads = {}
    for member in members:
        ckpt = work_dir / member.name if work_dir is not None else None
        kwargs = {**head_kwargs, "miner": head_kwargs.get("miner") or member.name}
        heads[member.name] = train_head(member, target, caches, dataset, checkpoint_dir=ckpt, progress=progress,
                                        **kwargs)
    return RoutedSpace(target, list(members), heads, scales=scales, inputs=inputs, name=name)


def train_routed(target: Space, members: Sequence[Space], caches: CacheSet, dataset: Dataset, *,
                 router: RouterConfig | None = None, train: TrainConfig | None = None,
                 progress: bool = True, **kwargs) -> RoutedSpace:
    """`remap` then `train_routers`: OmniBind's routed space over `target` and `members`."""
    uniform = remap(target, members, caches, dataset, train=train, progress=progress, **kwargs)
    return train_routers(uniform, caches, dataset, router, progress=progress)
