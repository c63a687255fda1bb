"""Pseudo datasets (FreeBind / OmniBind): training pairs for a projector from unpaired pools.

A pseudo dataset is defined by a seed modality and partner modalities. Each seed item retrieves
its k nearest partner items inside a miner expert that covers both (FAISS, see `mining`); its
pseudo partner in the target space is the softmax-weighted mean (or the top-1) of those
neighbours' target-space embeddings. A projector src → tgt then learns from
(src_seed(item), tgt_seed(item)) when the target covers the seed modality, from
(src_seed(item), pseudo partner) for every partner modality, and from the mirror pairs
(src_partner(top neighbour), tgt_seed(item)) when the source covers the partner modality, so a
mixture member sees every modality it will be applied to; the bond's chosen target modalities
decide which of these are kept. Seeds and pools come from the same split, so validation pairs
never see training items."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from spacebind.errors import InputError
from spacebind.io.datasets import Dataset
from spacebind.retrieval.mining import mine
from spacebind.space import Space


class PseudoDataset(BaseModel):
    """One pseudo dataset of a bond (the recipe's `bonds[i].pseudo[j]`)."""

    model_config = ConfigDict(extra="forbid")

    seed: str
    partners: list[str] = Field(default_factory=list)
    miner: str | None = Field(None, description="expert that retrieves partners (default: the bond's expert)")
    k: int = Field(5, ge=1)
    mode: Literal["softmax", "top1"] = "softmax"
    temperature: float = Field(0.05, gt=0, allow_inf_nan=False)

    @property
    def label(self) -> str:
        return "-".join([self.seed, *self.partners])


def pseudo_pairs(
    spec: PseudoDataset,
    src: Space,
    tgt: Space,
    caches: "CacheSet",  # noqa: F821 - spacebind.cache.CacheSet; the cache room builds on this one
    dataset: Dataset,
    split: str,
    miner: str,
    admits: Callable[[str, str], bool] = lambda source, target: True,
    out: Path | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The (src, tgt) training pairs one pseudo dataset gives on one split, and the source
    modalities among them. `admits(source modality, target modality)` says which pairs to keep
    (a bond's chosen target modalities; all by default)."""
    if spec.seed not in src.modalities:
        raise InputError(f"pseudo dataset {spec.label!r}: the source space {src.name!r} does not cover {spec.seed!r}")
    seeds = caches.usable_ids(src, spec.seed, [it.id for it in dataset.select(split, spec.seed)])
    empty = torch.empty(0, src.dim), torch.empty(0, tgt.dim), []
    if not seeds:
        return empty
    x = caches.embeddings(src, spec.seed, seeds)
    xs, ys, sources = [], [], []

    def add(source: str, src_rows: torch.Tensor, tgt_rows: torch.Tensor) -> None:
        xs.append(src_rows)
        ys.append(tgt_rows)
        if source not in sources:
            sources.append(source)

    own = caches.usable_ids(tgt, spec.seed, seeds) if spec.seed in tgt.modalities else []
    if own and admits(spec.seed, spec.seed):
        add(spec.seed, caches.embeddings(src, spec.seed, own), caches.embeddings(tgt, spec.seed, own))
    miner_cache = caches.caches[miner]
    row_of_seed = {i: row for row, i in enumerate(seeds)}
    in_miner = set(miner_cache.ids(spec.seed)) if spec.partners else set()
    mined_seeds = [i for i in seeds if i in in_miner]  # sets built once: pools run to millions
    own_set = set(own)
    for partner in spec.partners:
        if partner not in tgt.modalities:
            raise InputError(f"pseudo dataset {spec.label!r}: the target space {tgt.name!r} does not cover {partner!r}")
        pool = caches.usable_ids(tgt, partner, [it.id for it in dataset.select(split, partner)])
        minable = set(miner_cache.ids(partner))
        pool = [i for i in pool if i in minable]
        if not mined_seeds or not pool:
            continue
        where = out / f"{split}-{spec.label}-{partner}" if out is not None else None
        found = mine(miner_cache, spec.seed, partner, k=spec.k, seed_ids=mined_seeds, pool_ids=pool, out=where, progress=False)
        if admits(spec.seed, partner):
            seed_rows = x[[row_of_seed[i] for i in found.seed_ids]] if len(found.seed_ids) != len(seeds) else x
            add(spec.seed, seed_rows, found.targets(partial(caches.embeddings, tgt, partner), spec.mode, spec.temperature))
        # the mirror pair: each seed's top partner, seen by the source, → the seed in the target
        if partner in src.modalities and admits(partner, spec.seed):
            pairs = [(found.pool_ids[n], s) for s, n in zip(found.seed_ids, found.indices[:, 0].tolist()) if s in own_set]
            usable = set(caches.usable_ids(src, partner, [p for p, _ in pairs]))
            pairs = [(p, s) for p, s in pairs if p in usable]
            if pairs:
                add(partner, caches.embeddings(src, partner, [p for p, _ in pairs]),
                    caches.embeddings(tgt, spec.seed, [s for _, s in pairs]))
    if not xs:
        return empty
    return torch.cat(xs), torch.cat(ys), sources
