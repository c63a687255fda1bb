"""Training bonds on cached leaf embeddings, and `Space.bind`.

Projectors are trained on pairs made from the same dataset item seen by two spaces: for a
combination `U + c(E)` the pairs are (x^E_m(item), u_m(item)) for every modality m both cover;
for a displacement `U + d(E)` they are (u_m(item), x^E_m(item)). U may itself be a bound space:
its embeddings come from `combine` over the leaf caches, so a later bond targets the space built
so far and no expert ever re-encodes the data.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from spacebind.bonds.baselines import fit_least_squares, fit_procrustes
from spacebind.bonds.bound import BOND_KINDS, BoundSpace
from spacebind.bonds.curation import curate_ids
from spacebind.bonds.relative import fit_relative
from spacebind.cache import EmbeddingCache, embed_dataset
from spacebind.data import Dataset
from spacebind.errors import InputError
from spacebind.fileio import home_dir, sha256_file
from spacebind.pseudo import PseudoDataset, pseudo_pairs
from spacebind.space import Space
from spacebind.training import TrainConfig, train_mixture

PROJECTOR_KINDS: tuple[str, ...] = ("mlp", "linear", "procrustes", "relative")


@dataclass
class CacheSet:
    """Leaf embedding caches keyed by expert name: the view training and evaluation read."""

    caches: dict[str, EmbeddingCache]

    def usable_ids(self, space: Space, modality: str, ids: Sequence[str]) -> list[str]:
        """The ids every leaf of `space` covering `modality` has embedded (bad items dropped)."""
        keep = list(ids)
        for leaf in space.leaves_for(modality):
            have = set(self.caches[leaf.name].ids(modality))
            keep = [i for i in keep if i in have]
        return keep

    def embeddings(self, space: Space, modality: str, ids: Sequence[str]) -> torch.Tensor:
        """`space`'s embeddings of dataset items, computed from the leaf caches."""
        leaf = {e.name: self.caches[e.name].embeddings(modality, list(ids)) for e in space.leaves_for(modality)}
        return space.combine(modality, leaf)


def dataset_key(dataset: Dataset) -> str:
    """A short content key of a dataset's manifest, for default cache locations."""
    return hashlib.sha256(sha256_file(dataset.root / "manifest.jsonl").encode()).hexdigest()[:16]


def ensure_caches(spaces: Sequence[Space], dataset: Dataset, cache_root: Path, progress: bool = True) -> CacheSet:
    """Embed the dataset once with every distinct leaf of `spaces` (resuming finished shards)."""
    caches: dict[str, EmbeddingCache] = {}
    for space in spaces:
        for leaf in space.leaves():
            if leaf.name not in caches:
                caches[leaf.name] = embed_dataset(leaf, dataset, cache_root / leaf.name, progress=progress)
    return CacheSet(caches)


PAIRINGS: tuple[str, ...] = ("same", "all")


def _pairs(src: Space, tgt: Space, caches: CacheSet, dataset: Dataset, split: str,
           pairing: str = "same", keep: set[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Training pairs for a projector src → tgt from the items of a split.

    `same`: (src_m(item), tgt_m(item)) for every modality m both spaces cover (FreeBind).
    `all`: every (src_m(item), tgt_m'(item)) of paired items, m from the source's modalities and
    m' from the target's: a modality the target embeds poorly is anchored on the item's other
    modalities there, and a modality only the source covers (e.g. point in a displacement) gets
    training pairs at all. `keep` restricts the items (a curated subset)."""
    if pairing == "same":
        combos = [(m, m) for m in src.modalities if m in tgt.modalities]
    else:
        combos = [(a, b) for a in src.modalities for b in tgt.modalities]
    xs, ys = [], []
    for a, b in combos:
        ids = [it.id for it in dataset.select(split) if a in it.fields and b in it.fields
               and (keep is None or it.id in keep)]
        ids = caches.usable_ids(tgt, b, caches.usable_ids(src, a, ids))
        if ids:
            xs.append(caches.embeddings(src, a, ids))
            ys.append(caches.embeddings(tgt, b, ids))
    if not xs:
        return torch.empty(0, src.dim), torch.empty(0, tgt.dim)
    return torch.cat(xs), torch.cat(ys)


def train_head(
    src: Space,
    tgt: Space,
    caches: CacheSet,
    dataset: Dataset,
    *,
    projector: str = "mlp",
    mixture: int = 1,
    pairing: str = "same",
    pseudo: Sequence[PseudoDataset] = (),
    miner: str | None = None,
    curate: int | None = None,
    relative: Mapping[str, Any] | None = None,
    train: TrainConfig | None = None,
    checkpoint_dir: Path | None = None,
    progress: bool = True,
) -> nn.Module:
    """Fit a projector (or a mixture of `mixture` MLP projectors) from `src`'s space into `tgt`'s.

    With `pseudo` datasets, the mixture has one member per pseudo dataset, each trained on that
    dataset's mined pairs (`miner`: the expert that retrieves, by default set by the bond).
    With `curate`, training uses only the concept-balanced pair set: per class, the `curate` train
    items whose text is nearest to the class prompts in the target's text side (the source's if
    the target has none); see `bonds.curation`. `relative`: `anchors`, `k`, `power` of the
    relative-representation projector."""
    if projector not in PROJECTOR_KINDS:
        raise InputError(f"unknown projector {projector!r}; expected one of {', '.join(PROJECTOR_KINDS)}")
    if pairing not in PAIRINGS:
        raise InputError(f"unknown pairing {pairing!r}; expected one of {', '.join(PAIRINGS)}")
    subsets = None
    if pseudo:
        if projector != "mlp":
            raise InputError(f"pseudo datasets train one MLP mixture member each; projector {projector!r} takes none")
        if curate is not None:
            raise InputError("curation selects paired items; a bond with pseudo datasets has none to select")
        x, y, subsets, vx, vy = _pseudo_data(pseudo, src, tgt, caches, dataset, miner or "", checkpoint_dir)
        mixture = len(pseudo)
    else:
        keep = None
        if curate is not None:
            judge = tgt if "text" in tgt.modalities else src
            keep = set(curate_ids(judge, caches, dataset, [it.id for it in dataset.select("train")], curate))
        x, y = _pairs(src, tgt, caches, dataset, "train", pairing, keep)
        if len(x) == 0:
            raise InputError(
                f"no training pairs between {src.name!r} {list(src.modalities)} and {tgt.name!r} "
                f"{list(tgt.modalities)} in the train split of {dataset.root}: they share no modality with data "
                f"(pairing {pairing!r})"
            )
        if projector == "linear":
            return fit_least_squares(x, y)
        if projector == "procrustes":
            return fit_procrustes(x, y)
        if projector == "relative":
            return fit_relative(x, y, **dict(relative or {}), seed=(train or TrainConfig()).seed)
        vx, vy = _pairs(src, tgt, caches, dataset, "val", pairing)
    return train_mixture(
        x, y, n=mixture, config=train or TrainConfig(), subsets=subsets,
        val_src=vx if len(vx) else None, val_tgt=vy if len(vy) else None,
        checkpoint_dir=checkpoint_dir, progress=progress,
    )


def _pseudo_data(pseudo: Sequence[PseudoDataset], src: Space, tgt: Space, caches: CacheSet, dataset: Dataset,
                 default_miner: str, work: Path | None) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """All pseudo datasets' training pairs with one row subset per dataset (one mixture member
    each), and their validation pairs pooled for early stopping."""
    xs, ys, subsets, vxs, vys = [], [], [], [], []
    start = 0
    for spec in pseudo:
        miner = spec.miner or default_miner
        if miner not in caches.caches:
            raise InputError(f"pseudo dataset {spec.label!r}: miner {miner!r} is not an expert of this space "
                             f"(experts: {', '.join(caches.caches)})")
        out = work / "pseudo" if work is not None else None
        x, y = pseudo_pairs(spec, src, tgt, caches, dataset, "train", miner, out)
        if len(x) == 0:
            raise InputError(f"pseudo dataset {spec.label!r} gave no training pairs in {dataset.root}")
        vx, vy = pseudo_pairs(spec, src, tgt, caches, dataset, "val", miner, out)
        for bucket, part in ((xs, x), (ys, y), (vxs, vx), (vys, vy)):
            bucket.append(part)
        subsets.append(torch.arange(start, start + len(x)))
        start += len(x)
    return torch.cat(xs), torch.cat(ys), subsets, torch.cat(vxs), torch.cat(vys)


def train_bond(
    base: Space,
    experts: Sequence[Space],
    kind: str,
    caches: CacheSet,
    dataset: Dataset,
    *,
    lambdas: Mapping[str, float] | None = None,
    work_dir: Path | None = None,
    name: str | None = None,
    presets: Mapping[str, Mapping[str, float]] | None = None,
    **head_kwargs: Any,
) -> BoundSpace:
    """Train the projectors a bond needs and return the bound space."""
    if kind not in BOND_KINDS:
        raise InputError(f"unknown bond {kind!r}; expected one of {', '.join(BOND_KINDS)}")
    heads = {}
    for expert in experts:
        src, tgt = (expert, base) if kind == "combination" else (base, expert)
        ckpt = work_dir / expert.name if work_dir is not None else None
        kwargs = {**head_kwargs, "miner": head_kwargs.get("miner") or expert.name}
        heads[expert.name] = train_head(src, tgt, caches, dataset, checkpoint_dir=ckpt, **kwargs)
    return BoundSpace(base, list(experts), kind, heads, lambdas=lambdas, name=name, presets=presets)


def bind(
    base: Space,
    expert: Space | Sequence[Space],
    bond: str = "combination",
    *,
    data: str | Path | Dataset,
    lambdas: Mapping[str, float] | None = None,
    cache_dir: str | Path | None = None,
    work_dir: str | Path | None = None,
    progress: bool = True,
    **head_kwargs: Any,
) -> BoundSpace:
    """Bind `expert` (or several, for a parallel combination) to `base`, training on `data`.

    Args:
        base: the space to bind to (an expert or a bound space).
        expert: the expert space(s) to bring in.
        bond: "combination" (stay in base's space) or "displacement" (move to the expert's space).
        data: a dataset directory / manifest, or a loaded `Dataset`; train and val splits are used.
        lambdas: per-modality λ (weight of the projected side).
        cache_dir: where leaf embedding caches live (default `$SPACEBIND_HOME/caches/<dataset key>`).
        work_dir: where resumable projector checkpoints go (default: none, train in memory).
        head_kwargs: `projector` ("mlp", "linear", "procrustes", "relative"), `mixture`, `train` (TrainConfig).
    """
    dataset = data if isinstance(data, Dataset) else Dataset.load(data)
    experts = [expert] if isinstance(expert, Space) else list(expert)
    root = Path(cache_dir) if cache_dir is not None else home_dir() / "caches" / dataset_key(dataset)
    caches = ensure_caches([base, *experts], dataset, root, progress=progress)
    return train_bond(
        base, experts, bond, caches, dataset, lambdas=lambdas,
        work_dir=Path(work_dir) if work_dir is not None else None, progress=progress, **head_kwargs,
    )
