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
never see training items. Items travel as numpy arrays (128-bit id keys, cache rows, masks), never
as lists or sets of ids, so a pool of millions costs tens of bytes an item besides its pairs.
`pseudo_parts` gives the pairs as blocks of keys (`PairBlock`; a mined block keeps its neighbours'
keys and weights), which `pseudo_pairs` reads into memory and a bond under `train.stream_mb` reads
from the cache shards batch by batch."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Sequence

import numpy as np
import torch
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from spacebind.cache.keys import id_keys
from spacebind.errors import InputError
from spacebind.io.datasets import Dataset, Manifest
from spacebind.modalities import check_modality
from spacebind.retrieval.mining import MiningIndex, mine, weighted_means
from spacebind.space import Space

# check_modality's InputError is a ValueError: pydantic reports it under the field's path (bonds.0.pseudo.0.seed)
Modality = Annotated[str, AfterValidator(check_modality)]


class PseudoDataset(BaseModel):
    """One pseudo dataset of a bond (the recipe's `bonds[i].pseudo[j]`)."""

    model_config = ConfigDict(extra="forbid")

    seed: Modality
    partners: list[Modality] = Field(default_factory=list)
    miner: str | None = Field(None, description="expert that retrieves partners (default: the bond's expert)")
    k: int = Field(5, ge=1)
    mode: Literal["softmax", "top1"] = "softmax"
    temperature: float = Field(0.05, gt=0, allow_inf_nan=False)
    index: MiningIndex = Field(default_factory=MiningIndex, description=(
        "FAISS index the miner searches: flat (exact) or an approximate kind for large pools, see MiningIndex"))

    @field_validator("partners")
    @classmethod
    def _distinct(cls, partners: list[str], info: ValidationInfo) -> list[str]:
        repeated = sorted({m for m in partners if partners.count(m) > 1})
        if repeated:
            raise ValueError(f"partner(s) {repeated} listed more than once (each would mine and train on the same "
                             "pairs again); list each partner modality once")
        if info.data.get("seed") in partners:
            raise ValueError(f"partner {info.data['seed']!r} is the seed modality: each seed would retrieve itself "
                             "from its own pool; the seed's own pairs are already part of every pseudo dataset")
        return partners

    @property
    def label(self) -> str:
        return "-".join([self.seed, *self.partners])


def _selected(dataset: Dataset | Manifest, split: str, modality: str) -> np.ndarray:
    """`id_keys` of the split's items that carry `modality`, in manifest order (streamed: no item kept)."""
    return id_keys(it.id for it in dataset.iter_items() if it.split == split and modality in it.fields)


@dataclass
class PairBlock:
    """A block of training pairs by item keys: the source's `source` embeddings of the items
    `src_keys`, each paired with the target's `target` embedding of the item in `tgt_keys` at the
    same position or, with `weights` [n, k] (mined partners), with the normalised `weights`-mean of
    the target's embeddings of k items (`tgt_keys` holds n·k, k per pair)."""

    source: str
    src_keys: np.ndarray
    target: str
    tgt_keys: np.ndarray
    weights: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.src_keys)


def pseudo_parts(
    spec: PseudoDataset,
    src: Space,
    tgt: Space,
    caches: "CacheSet",  # noqa: F821 - spacebind.cache.CacheSet; the cache room builds on this one
    dataset: Dataset | Manifest,
    split: str,
    miner: str,
    admits: Callable[[str, str], bool] = lambda source, target: True,
    out: Path | None = None,
) -> tuple[list[PairBlock], list[str]]:
    """The (src, tgt) training pairs one pseudo dataset gives on one split, as blocks of item keys
    (nothing embedded yet; `pseudo_pairs` reads them into memory, `spacebind.bonds.fit` from the
    shards), and the source modalities among them. `admits(source modality, target modality)` says
    which pairs to keep (a bond's chosen target modalities; all by default).

    Items are handled as numpy arrays (`id_keys` of the split's items, cache rows, masks), not as
    id lists or sets: besides the pairs themselves, memory is a few dozen bytes an item."""
    if spec.seed not in src.modalities:
        raise InputError(f"pseudo dataset {spec.label!r}: the source space {src.name!r} does not cover {spec.seed!r}")
    seeds = _selected(dataset, split, spec.seed)
    seeds = seeds[caches.usable(src, spec.seed, seeds)]
    if not len(seeds):
        return [], []
    parts, sources = [], []

    def add(part: PairBlock) -> None:
        parts.append(part)
        if part.source not in sources:
            sources.append(part.source)

    own = caches.usable(tgt, spec.seed, seeds) if spec.seed in tgt.modalities else np.zeros(len(seeds), dtype=bool)
    if own.any() and admits(spec.seed, spec.seed):
        add(PairBlock(spec.seed, seeds[own], spec.seed, seeds[own]))
    miner_cache = caches.caches[miner]
    seed_rows = miner_cache.rows(spec.seed, seeds) if spec.partners else np.empty(0, dtype=np.int64)
    mined = np.flatnonzero(seed_rows >= 0)  # positions in `seeds` of the seeds the miner has embedded
    for partner in spec.partners:
        if partner not in tgt.modalities:
            raise InputError(f"pseudo dataset {spec.label!r}: the target space {tgt.name!r} does not cover {partner!r}")
        pool = _selected(dataset, split, partner)
        pool = pool[caches.usable(tgt, partner, pool)]
        pool_rows = miner_cache.rows(partner, pool)
        pool, pool_rows = pool[pool_rows >= 0], pool_rows[pool_rows >= 0]
        if not len(mined) or not len(pool):
            continue
        # datasets of one label may differ in miner, k or index: each mining keeps its own folder
        where = out / f"{split}-{spec.label}-{partner}-{miner}-k{spec.k}-{spec.index.kind}" if out is not None else None
        try:
            found = mine(miner_cache, spec.seed, partner, k=spec.k, index=spec.index.kind, options=spec.index.index_options(),
                         seed_rows=seed_rows[mined], pool_rows=pool_rows, out=where, progress=False)
        except InputError as exc:
            raise InputError(f"pseudo dataset {spec.label!r} index, mining {split} {partner}: {exc}") from None
        if admits(spec.seed, partner):
            add(PairBlock(spec.seed, seeds[mined], partner, pool[found.indices.flatten().numpy()],
                           found.weights(spec.mode, spec.temperature)))
        # the mirror pair: each seed's top partner, seen by the source, → the seed in the target
        if partner in src.modalities and admits(partner, spec.seed):
            keep = own[mined]
            tops, own_seeds = pool[found.indices[:, 0].numpy()[keep]], seeds[mined[keep]]
            usable = caches.usable(src, partner, tops)
            if usable.any():
                add(PairBlock(partner, tops[usable], spec.seed, own_seeds[usable]))
    return parts, sources


def pseudo_pairs(spec: PseudoDataset, src: Space, tgt: Space, caches: "CacheSet",  # noqa: F821
                 *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The (src, tgt) training pairs of `pseudo_parts` (same arguments), read into memory, and their
    source modalities."""
    parts, sources = pseudo_parts(spec, src, tgt, caches, *args, **kwargs)
    return (*block_pairs(parts, src, tgt, caches), sources)


def block_pairs(blocks: Sequence[PairBlock], src: Space, tgt: Space,
                caches: "CacheSet") -> tuple[torch.Tensor, torch.Tensor]:  # noqa: F821
    """The pairs of `blocks` read into memory, one block after another: (src rows, tgt rows)."""
    if not blocks:
        return torch.empty(0, src.dim), torch.empty(0, tgt.dim)
    xs = [caches.embeddings_of_keys(src, block.source, block.src_keys) for block in blocks]
    return torch.cat(xs), torch.cat([_targets(caches, tgt, block) for block in blocks])


def _targets(caches: "CacheSet", tgt: Space, part: PairBlock) -> torch.Tensor:  # noqa: F821
    """The target side of a block in memory: the rows, or the weighted means of k rows each (part by
    part in a target with a channel)."""
    if part.weights is None:
        return caches.embeddings_of_keys(tgt, part.target, part.tgt_keys)
    n, k = part.weights.shape
    return weighted_means(part.weights, torch.arange(n * k).view(n, k),
                          lambda at: caches.embeddings_of_keys(tgt, part.target, part.tgt_keys[at]), blocks=tgt.blocks)
