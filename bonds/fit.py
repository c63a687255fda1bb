"""Fitting a projector head between two spaces on cached leaf embeddings.

Pairs come from the same dataset item seen by two spaces: for a combination `U + c(E)` the pairs
are (x^E_a(item), u_b(item)); for a displacement `U + d(E)` they are (u_a(item), x^E_b(item)).
Which target modalities b each source modality a learns from is the bond's `pairing`
(`spacebind.bonds.targets`: `auto`, `same`, `cross`, `all`). Pseudo datasets pair items mined
from unpaired pools instead. U may itself be a bound space: its embeddings come from `combine`
over the leaf caches, so a later bond targets the space built so far and no expert ever
re-encodes the data.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from spacebind.bonds.curation import curate_ids
from spacebind.bonds.heads import HEADS, projector_types
from spacebind.bonds.mixture import train_mixture
from spacebind.bonds.targets import Targets, choose_targets
from spacebind.cache.cache_set import CacheSet
from spacebind.errors import InputError
from spacebind.io.datasets import Dataset
from spacebind.retrieval.pseudo import PseudoDataset, pseudo_pairs
from spacebind.space import Space
from spacebind.training.trainer import TrainConfig

Pairs = tuple[torch.Tensor, torch.Tensor, list[str]]


def _pairs(src: Space, tgt: Space, caches: CacheSet, dataset: Dataset, split: str, targets: Targets,
           keep: set[str] | None = None) -> Pairs:
    """Training pairs for a projector src → tgt from the paired items of a split, and the source
    modalities they hold: (src_a(item), tgt_b(item)) for every a of the source and every b of the
    target that `targets` admits. A modality only the source covers (point in a displacement) is
    anchored on the item's other modalities; `keep` restricts the items (a curated subset)."""
    combos = [(a, b) for a in src.modalities for b in tgt.modalities if targets.admits(a, b)]
    xs, ys, sources = [], [], []
    for a, b in combos:
        ids = [it.id for it in dataset.select(split) if a in it.fields and b in it.fields
               and (keep is None or it.id in keep)]
        ids = caches.usable_ids(tgt, b, caches.usable_ids(src, a, ids)) if ids else []
        if ids:
            xs.append(caches.embeddings(src, a, ids))
            ys.append(caches.embeddings(tgt, b, ids))
            sources += [a] if a not in sources else []
    if not xs:
        return torch.empty(0, src.dim), torch.empty(0, tgt.dim), []
    return torch.cat(xs), torch.cat(ys), sources


def train_head(
    src: Space,
    tgt: Space,
    caches: CacheSet,
    dataset: Dataset,
    *,
    projector: str = "mlp",
    mixture: int = 1,
    pairing: str = "auto",
    pseudo: Sequence[PseudoDataset] = (),
    miner: str | None = None,
    curate: int | None = None,
    relative: Mapping[str, Any] | None = None,
    train: TrainConfig | None = None,
    checkpoint_dir: Path | None = None,
    progress: bool = True,
) -> tuple[nn.Module, Targets]:
    """Fit a projector (or a mixture of `mixture` MLP projectors) from `src`'s space into `tgt`'s;
    returns it with the target modalities `pairing` kept (see `spacebind.bonds.targets`).

    With `pseudo` datasets, the mixture has one member per pseudo dataset, each trained on that
    dataset's mined pairs (`miner`: the expert that retrieves, by default set by the bond), and
    applied only to the source modalities it trained on.
    With `curate`, training uses only the concept-balanced pair set: per class, the `curate` train
    items whose text is nearest to the class prompts in the target's text side (the source's if
    the target has none); see `bonds.curation`. `relative`: `anchors`, `k`, `power` of the
    relative-representation projector."""
    if projector not in projector_types():
        raise InputError(f"unknown projector {projector!r}; expected one of {', '.join(projector_types())}")
    targets = choose_targets(pairing, tgt, caches, dataset)
    subsets = None
    if pseudo:
        if projector != "mlp":
            raise InputError(f"pseudo datasets train one MLP mixture member each; projector {projector!r} takes none")
        if curate is not None:
            raise InputError("curation selects paired items; a bond with pseudo datasets has none to select")
        x, y, subsets, sources, vx, vy = _pseudo_data(pseudo, src, tgt, caches, dataset, miner or "", targets,
                                                      checkpoint_dir)
        mixture = len(pseudo)
    else:
        keep = None
        if curate is not None:
            judge = tgt if "text" in tgt.modalities else src
            keep = set(curate_ids(judge, caches, dataset, [it.id for it in dataset.select("train")], curate))
        x, y, seen = _pairs(src, tgt, caches, dataset, "train", targets, keep)
        if len(x) == 0:
            raise InputError(
                f"no training pairs between {src.name!r} {list(src.modalities)} and {tgt.name!r} "
                f"{list(tgt.modalities)} in the train split of {dataset.root}: they share no modality with data "
                f"(pairing {pairing!r}, target modalities kept: {targets.kept})"
            )
        if projector != "mlp":  # a closed-form head type
            options = {**dict(relative or {}), "seed": (train or TrainConfig()).seed}
            return HEADS.entry(projector).factory.fit_pairs(projector, x, y, options), targets
        vx, vy, _ = _pairs(src, tgt, caches, dataset, "val", targets)
        sources = [seen] * mixture
    head = train_mixture(
        x, y, n=mixture, config=train or TrainConfig(), subsets=subsets, sources=sources,
        val_src=vx if len(vx) else None, val_tgt=vy if len(vy) else None,
        checkpoint_dir=checkpoint_dir, progress=progress,
    )
    return head, targets


def _pseudo_data(pseudo: Sequence[PseudoDataset], src: Space, tgt: Space, caches: CacheSet, dataset: Dataset,
                 default_miner: str, targets: Targets, work: Path | None
                 ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[list[str]], torch.Tensor, torch.Tensor]:
    """All pseudo datasets' training pairs with one row subset per dataset (one mixture member
    each) and the source modalities of each, and their validation pairs pooled for early stopping."""
    xs, ys, subsets, sources, vxs, vys = [], [], [], [], [], []
    start = 0
    for spec in pseudo:
        miner = spec.miner or default_miner
        if miner not in caches.caches:
            raise InputError(f"pseudo dataset {spec.label!r}: miner {miner!r} is not an expert of this space "
                             f"(experts: {', '.join(caches.caches)})")
        out = work / "pseudo" if work is not None else None
        x, y, seen = pseudo_pairs(spec, src, tgt, caches, dataset, "train", miner, targets.admits, out)
        if len(x) == 0:
            raise InputError(f"pseudo dataset {spec.label!r} gave no training pairs in {dataset.root} "
                             f"(pairing {targets.pairing!r}, target modalities kept: {targets.kept})")
        vx, vy, _ = pseudo_pairs(spec, src, tgt, caches, dataset, "val", miner, targets.admits, out)
        for bucket, part in ((xs, x), (ys, y), (vxs, vx), (vys, vy)):
            bucket.append(part)
        subsets.append(torch.arange(start, start + len(x)))
        sources.append(seen)
        start += len(x)
    return torch.cat(xs), torch.cat(ys), subsets, sources, torch.cat(vxs), torch.cat(vys)
