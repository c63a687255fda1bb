"""Pseudo datasets (FreeBind / OmniBind): training pairs for a projector from unpaired pools.

A pseudo dataset is defined by a seed modality and partner modalities. Each seed item retrieves
its k nearest partner items inside a miner expert that covers both (FAISS, see `mining`); its
pseudo partner in the target space is the softmax-weighted mean (or the top-1) of those
neighbours' target-space embeddings. A projector src → tgt then learns from
(src_seed(item), tgt_seed(item)) when the target covers the seed modality, and from
(src_seed(item), pseudo partner) for every partner modality. Seeds and pools come from the same
split, so validation pairs never see training items."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Literal

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
    temperature: float = Field(0.05, gt=0)

    @property
    def label(self) -> str:
        return "-".join([self.seed, *self.partners])


def pseudo_pairs(
    spec: PseudoDataset,
    src: Space,
    tgt: Space,
    caches: "CacheSet",  # noqa: F821 - binding.CacheSet; imported lazily to avoid a cycle
    dataset: Dataset,
    split: str,
    miner: str,
    out: Path | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (src, tgt) training pairs one pseudo dataset gives on one split."""
    if spec.seed not in src.modalities:
        raise InputError(f"pseudo dataset {spec.label!r}: the source space {src.name!r} does not cover {spec.seed!r}")
    seeds = caches.usable_ids(src, spec.seed, [it.id for it in dataset.select(split, spec.seed)])
    if not seeds:
        return torch.empty(0, src.dim), torch.empty(0, tgt.dim)
    x = caches.embeddings(src, spec.seed, seeds)
    xs, ys = [], []
    if spec.seed in tgt.modalities:
        own = caches.usable_ids(tgt, spec.seed, seeds)
        xs.append(caches.embeddings(src, spec.seed, own))
        ys.append(caches.embeddings(tgt, spec.seed, own))
    miner_cache = caches.caches[miner]
    row_of_seed = {i: row for row, i in enumerate(seeds)}
    in_miner = set(miner_cache.ids(spec.seed)) if spec.partners else set()
    mined_seeds = [i for i in seeds if i in in_miner]  # sets built once: pools run to millions
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
        xs.append(x[[row_of_seed[i] for i in found.seed_ids]] if len(found.seed_ids) != len(seeds) else x)
        ys.append(found.targets(partial(caches.embeddings, tgt, partner), spec.mode, spec.temperature))
    if not xs:
        return torch.empty(0, src.dim), torch.empty(0, tgt.dim)
    return torch.cat(xs), torch.cat(ys)
