"""The view training and evaluation read: every leaf expert's embedding cache of one dataset,
and a space's embeddings computed from them through `combine` (no expert re-encodes)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from spacebind.cache.store import EmbeddingCache, embed_dataset
from spacebind.io.datasets import Dataset
from spacebind.io.files import home_dir, sha256_file
from spacebind.space import Space


@dataclass
class CacheSet:
    """Leaf embedding caches keyed by expert name: the view training and evaluation read."""

    caches: dict[str, EmbeddingCache]

    def usable_ids(self, space: Space, modality: str, ids: Sequence[str]) -> list[str]:
        """The ids every leaf of `space` covering `modality` has embedded (bad items dropped)."""
        keep = list(ids)
        for leaf in space.leaves_for(modality):
            if not keep:  # the dataset has none: a cache may hold no entry for the modality at all
                break
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


def default_cache_root(dataset: Dataset) -> Path:
    """Where a dataset's leaf caches live unless the caller says: `$SPACEBIND_HOME/caches/<key>`."""
    return home_dir() / "caches" / dataset_key(dataset)


def ensure_caches(spaces: Sequence[Space], dataset: Dataset, cache_root: Path | None = None,
                  progress: bool = True) -> CacheSet:
    """Embed the dataset once with every distinct leaf of `spaces` (resuming finished shards), under
    `cache_root` (default `default_cache_root(dataset)`)."""
    root = Path(cache_root) if cache_root is not None else default_cache_root(dataset)
    caches: dict[str, EmbeddingCache] = {}
    for space in spaces:
        for leaf in space.leaves():
            if leaf.name not in caches:
                caches[leaf.name] = embed_dataset(leaf, dataset, root / leaf.name, progress=progress)
    return CacheSet(caches)
