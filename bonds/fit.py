"""Fitting a projector head between two spaces on cached leaf embeddings.

Pairs come from the same dataset item seen by two spaces: for a combination `U + c(E)` the pairs
are (x^E_a(item), u_b(item)); for a displacement `U + d(E)` they are (u_a(item), x^E_b(item)).
Which target modalities b each source modality a learns from is the bond's `pairing`
(`spacebind.bonds.targets`: `auto`, `same`, `cross`, `all`). Pseudo datasets pair items mined
from unpaired pools instead. U may itself be a bound space: its embeddings come from `combine`
over the leaf caches, so a later bond targets the space built so far and no expert ever
re-encodes the data.

Pairs are described by item keys first (`spacebind.retrieval.pseudo.PairBlock`: paired items, or
a pseudo dataset's own, mined and mirror pairs) and read into memory only when needed. With
`train.stream_mb` set and every leaf's cache on disk they are not: a
`spacebind.training.pairs.CachePairs` holds the same blocks in the same order (a bound space's
side combines its leaves' rows batch by batch, `SpaceSide`; a mined partner is the weighted mean of
its neighbours' rows, `MeanSide`), the MLP projectors train from it batch by batch (at most
`stream_mb` MB of float16 shards held, its shard-block batch order; a pseudo dataset's member from
its own subset) and the closed-form heads fit from it chunk by chunk (`fit_source`: Procrustes and
least squares accumulate srcᵀ·tgt / xᵀx, xᵀy; relative representations read only their anchors).
Validation pairs are always tensors (val splits are small).
"""
from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from spacebind.bonds.curation import curate_ids
from spacebind.bonds.heads import HEADS, projector_types
from spacebind.bonds.mixture import train_mixture
from spacebind.bonds.targets import Targets, choose_targets
from spacebind.cache.cache_set import CacheSet
from spacebind.cache.keys import CHUNK, id_keys
from spacebind.cache.store import EmbeddingCache
from spacebind.errors import InputError
from spacebind.io.datasets import Dataset
from spacebind.io.progress import note
from spacebind.retrieval.pseudo import PairBlock, PseudoDataset, block_pairs, pseudo_pairs, pseudo_parts
from spacebind.space import Expert, Space
from spacebind.training.pairs import CachePairs, ConcatSide, MeanSide, Side, SpaceSide, cache_side
from spacebind.training.trainer import TrainConfig

Pairs = tuple[torch.Tensor, torch.Tensor, list[str]]


def _pair_parts(src: Space, tgt: Space, caches: CacheSet, dataset: Dataset, split: str, targets: Targets,
                keep: set[str] | None = None) -> list[PairBlock]:
    """Which pairs train a projector src → tgt: for every a of the source and every b of the
    target that `targets` admits, the items of the split holding both (and embedded by every leaf
    involved), as keys in manifest order (the items are streamed, not held). A modality only the
    source covers (point in a displacement) is anchored on the item's other modalities; `keep`
    restricts the items (a curated subset)."""
    combos = [(a, b) for a in src.modalities for b in tgt.modalities if targets.admits(a, b)]
    found: dict[tuple[str, str], list[np.ndarray]] = {combo: [] for combo in combos}
    items = dataset.iter_items(split)
    while chunk := list(islice(items, CHUNK)):  # one pass over the split, a chunk of items at a time
        block = [it for it in chunk if keep is None or it.id in keep]
        keys = id_keys(it.id for it in block)
        for a, b in combos:
            found[a, b].append(keys[np.fromiter((a in it.fields and b in it.fields for it in block), bool, len(block))])
    parts = []
    for (a, b), blocks in found.items():
        keys = np.concatenate(blocks) if blocks else np.empty((0, 2), dtype=np.uint64)
        for space, m in ((src, a), (tgt, b)):
            if len(keys):
                keys = keys[caches.usable(space, m, keys)]
        if len(keys):
            parts.append(PairBlock(a, keys, b, keys))
    return parts


def _part_sources(parts: Sequence[PairBlock]) -> list[str]:
    """The source modalities the pairs hold, in order."""
    return list(dict.fromkeys(part.source for part in parts))


def _pairs(src: Space, tgt: Space, caches: CacheSet, dataset: Dataset, split: str, targets: Targets,
           keep: set[str] | None = None) -> Pairs:
    """Training pairs for a projector src → tgt from the paired items of a split (see `_pair_parts`),
    as tensors, and the source modalities they hold: (src_a(item), tgt_b(item)) part by part."""
    return _tensors(src, tgt, caches, _pair_parts(src, tgt, caches, dataset, split, targets, keep))


def _tensors(src: Space, tgt: Space, caches: CacheSet, parts: Sequence[PairBlock]) -> Pairs:
    """The pairs of `parts` read into memory, concatenated in order, and their source modalities."""
    return (*block_pairs(parts, src, tgt, caches), _part_sources(parts))


def _streamed(src: Space, tgt: Space, caches: CacheSet, parts: Sequence[PairBlock], max_mb: float
              ) -> tuple[CachePairs | None, str]:
    """The pairs of `parts` as a shard source (same parts, same order), or None and why not: every
    leaf involved needs an embedding cache on disk. A leaf expert's rows are read as they are, a
    bound space's are combined from its leaves' rows batch by batch (`SpaceSide`), and a mined
    partner is the weighted mean of its neighbours' rows (`MeanSide`)."""
    for side in (src, tgt):
        for leaf in side.leaves():
            if not isinstance(caches.caches.get(leaf.name), EmbeddingCache):
                return None, f"the cache of {leaf.name!r} is not an embedding cache on disk"
    if all(part.weights is None for part in parts):
        targets = _side(tgt, caches, [(part.target, part.tgt_keys) for part in parts])
    else:
        targets = ConcatSide([_side(tgt, caches, [(part.target, part.tgt_keys)]) if part.weights is None else
                              MeanSide(_side(tgt, caches, [(part.target, part.tgt_keys)]), part.weights, tgt.blocks)
                              for part in parts])
    try:
        return CachePairs(_side(src, caches, [(part.source, part.src_keys) for part in parts]), targets,
                          max_mb=max_mb), ""
    except InputError as exc:
        raise InputError(f"train.stream_mb: {exc}") from None


def _side(space: Space, caches: CacheSet, blocks: Sequence[tuple[str, np.ndarray]]) -> Side:
    """`space`'s rows of the items of each (modality, `id_keys`) block, one after another, read from
    the shards: a leaf's as they are, a bound space's combined from its leaves' (`SpaceSide`)."""
    if isinstance(space, Expert):
        return cache_side([(caches.caches[space.name], m, keys) for m, keys in blocks])
    return ConcatSide([SpaceSide(space, caches.caches, m, keys) for m, keys in blocks])


def train_head(src: Space, tgt: Space, caches: CacheSet, dataset: Dataset, *, projector: str = "mlp",
               **kwargs: Any) -> tuple[nn.Module, Targets]:
    """Fit one projector of type `projector` from `src`'s space into `tgt`'s (`train_heads`)."""
    heads, targets = train_heads(src, tgt, caches, dataset, projectors=(projector,), **kwargs)
    return heads[projector], targets


def train_heads(
    src: Space,
    tgt: Space,
    caches: CacheSet,
    dataset: Dataset,
    *,
    projectors: Sequence[str] = ("mlp",),
    mixture: int = 1,
    pairing: str = "auto",
    pseudo: Sequence[PseudoDataset] = (),
    miner: str | None = None,
    curate: int | None = None,
    relative: Mapping[str, Any] | None = None,
    train: TrainConfig | None = None,
    checkpoint_dir: Path | None = None,
    progress: bool = True,
) -> tuple[dict[str, nn.Module], Targets]:
    """Fit a projector of each type in `projectors` from `src`'s space into `tgt`'s on the same
    pairs (`mlp`: a mixture of `mixture` MLP projectors; the others in closed form); returns them
    by type with the target modalities `pairing` kept (see `spacebind.bonds.targets`).

    With `pseudo` datasets the pairs are mined from unpaired pools (`miner`: the expert that
    retrieves, by default set by the bond): the MLP mixture has one member per pseudo dataset,
    each trained on that dataset's pairs and applied only to the source modalities it trained
    on; a closed-form head fits all of them pooled.
    With `curate`, training uses only the concept-balanced pair set: per class, the `curate` train
    items whose text is nearest to the class prompts in the target's text side (the source's if
    the target has none); see `bonds.curation`. `relative`: `anchors`, `k`, `power` of the
    relative-representation projector.
    With `train.stream_mb`, the pairs of paired items are read from the cache shards instead of
    memory (see the module docstring); other pairs fall back to tensors with a status line."""
    for projector in projectors:
        if projector not in projector_types():
            raise InputError(f"unknown projector {projector!r}; expected one of {', '.join(projector_types())}")
    targets = choose_targets(pairing, tgt, caches, dataset)
    config = train or TrainConfig()
    subsets = source = None
    if pseudo:
        if curate is not None:
            raise InputError("curation selects paired items; a bond with pseudo datasets has none to select")
        x, y, source, subsets, sources, vx, vy = _pseudo_data(pseudo, src, tgt, caches, dataset, miner or "",
                                                              targets, checkpoint_dir, config.stream_mb, progress)
        mixture = len(pseudo)
    else:
        x, y, source, seen, vx, vy = _paired_data(src, tgt, caches, dataset, targets, curate, config.stream_mb,
                                                  "mlp" in projectors, progress)
        sources = [seen] * mixture
    heads: dict[str, nn.Module] = {}
    for projector in projectors:
        if projector == "mlp":
            heads[projector] = train_mixture(
                source if source is not None else x, None if source is not None else y, n=mixture, config=config,
                subsets=subsets, sources=sources,
                val_src=vx, val_tgt=vy,
                checkpoint_dir=checkpoint_dir, progress=progress,
            )
        else:
            options = {**dict(relative or {}), "seed": config.seed}
            heads[projector] = _closed_form(projector, x, y, source, options, f"{src.name} → {tgt.name}", progress)
    return heads, targets


def _paired_data(src: Space, tgt: Space, caches: CacheSet, dataset: Dataset, targets: Targets, curate: int | None,
                 stream_mb: float | None, validate: bool, progress: bool
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None, CachePairs | None, list[str], torch.Tensor,
                            torch.Tensor]:
    """The training pairs of the paired train items, as tensors (x, y) or, with `stream_mb` and every
    leaf's cache on disk, as a shard source; their source modalities; and, if `validate`, the val pairs."""
    keep = None
    if curate is not None:
        judge = tgt if "text" in tgt.modalities else src
        keep = set(curate_ids(judge, caches, dataset, "train", curate))
    parts = _pair_parts(src, tgt, caches, dataset, "train", targets, keep)
    if not parts:
        raise InputError(
            f"no training pairs between {src.name!r} {list(src.modalities)} and {tgt.name!r} "
            f"{list(tgt.modalities)} in the train split of {dataset.root}: they share no modality with data "
            f"(pairing {targets.pairing!r}, target modalities kept: {targets.kept})"
        )
    x, y, source = _read(src, tgt, caches, parts, stream_mb, "training pairs", progress)
    vx = vy = torch.empty(0)
    if validate:
        vx, vy, _ = _pairs(src, tgt, caches, dataset, "val", targets)
    return x, y, source, _part_sources(parts), vx, vy


def _closed_form(projector: str, x: torch.Tensor | None, y: torch.Tensor | None, source: CachePairs | None,
                 options: Mapping[str, Any], label: str, progress: bool) -> nn.Module:
    """A closed-form head of type `projector` fitted on the pairs: chunk by chunk from the shards
    where the type can (`fit_source`), else on the pairs in memory (read from the shards if needed)."""
    factory = HEADS.entry(projector).factory
    if source is not None and hasattr(factory, "fit_source"):
        return factory.fit_source(projector, source, options)
    if source is not None:
        note(f"{label}: the {projector} head needs all pairs in memory; reading them", progress)
        x, y = source.gather(torch.arange(len(source)))
    return factory.fit_pairs(projector, x, y, options)


def _pseudo_data(pseudo: Sequence[PseudoDataset], src: Space, tgt: Space, caches: CacheSet, dataset: Dataset,
                 default_miner: str, targets: Targets, work: Path | None, stream_mb: float | None, progress: bool
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None, CachePairs | None, list[torch.Tensor],
                            list[list[str]], list[torch.Tensor], list[torch.Tensor]]:
    """All pseudo datasets' training pairs, as tensors (x, y) or, with `stream_mb` and every leaf's
    cache on disk, as a shard source; one row subset per dataset (one mixture member each) and the
    source modalities of each; and each dataset's own validation pairs, which choose its member's
    best epoch (a member is selected on the inputs it will project, not on other datasets')."""
    blocks: list[PairBlock] = []
    subsets, sources, vxs, vys = [], [], [], []
    for spec in pseudo:
        miner = spec.miner or default_miner
        if miner not in caches.caches:
            raise InputError(f"pseudo dataset {spec.label!r}: miner {miner!r} is not an expert of this space "
                             f"(experts: {', '.join(caches.caches)})")
        out = work / "pseudo" if work is not None else None
        found, seen = pseudo_parts(spec, src, tgt, caches, dataset, "train", miner, targets.admits, out)
        if not found:
            raise InputError(f"pseudo dataset {spec.label!r} gave no training pairs in {dataset.root} "
                             f"(pairing {targets.pairing!r}, target modalities kept: {targets.kept})")
        vx, vy, _ = pseudo_pairs(spec, src, tgt, caches, dataset, "val", miner, targets.admits, out)
        start = sum(map(len, blocks))
        blocks += found
        subsets.append(torch.arange(start, start + sum(map(len, found))))
        sources.append(seen)
        vxs.append(vx)
        vys.append(vy)
    x, y, source = _read(src, tgt, caches, blocks, stream_mb, "pseudo pairs", progress)
    return x, y, source, subsets, sources, vxs, vys


def _read(src: Space, tgt: Space, caches: CacheSet, blocks: Sequence[PairBlock], stream_mb: float | None, what: str,
          progress: bool) -> tuple[torch.Tensor | None, torch.Tensor | None, CachePairs | None]:
    """The pairs of `blocks` as tensors (x, y, None) or, with `stream_mb` and every leaf's cache on
    disk, as a shard source (None, None, source); a status line says which under `stream_mb`."""
    if stream_mb is not None:
        source, why = _streamed(src, tgt, caches, blocks, stream_mb)
        note(f"{src.name} → {tgt.name}: {len(source)} {what} read from the cache shards (at most {stream_mb:g} MB "
             f"held)" if source is not None else
             f"{src.name} → {tgt.name}: {what} read into memory, not streamed (train.stream_mb): {why}", progress)
        if source is not None:
            return None, None, source
    return (*block_pairs(blocks, src, tgt, caches), None)
