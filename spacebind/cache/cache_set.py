"""The view training and evaluation read: every leaf expert's embedding cache of one dataset,
and a space's embeddings computed from them through `combine` (no expert re-encodes)."""
from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from spacebind.cache.keys import id_keys
from spacebind.cache.store import EmbeddingCache, embed_dataset
from spacebind.errors import CacheError
from spacebind.io.datasets import Dataset
from spacebind.io.files import home_dir
from spacebind.space import Expert, Space


@dataclass
class CacheSet:
    """Leaf embedding caches keyed by expert name: the view training and evaluation read."""

    caches: dict[str, EmbeddingCache]

    def usable_ids(self, space: Space, modality: str, ids: Sequence[str]) -> list[str]:
        """The ids every leaf of `space` covering `modality` has embedded (bad items dropped)."""
        ids = list(ids)
        return [ids[j] for j in np.flatnonzero(self.usable(space, modality, id_keys(ids))).tolist()]

    def usable(self, space: Space, modality: str, keys: np.ndarray) -> np.ndarray:
        """bool [n]: which items (given by `id_keys`) every leaf of `space` covering `modality` has
        embedded. Looked up by key in each leaf cache (no set of a cache's ids is built)."""
        keep = np.ones(len(keys), dtype=bool)
        for leaf in space.leaves_for(modality):
            if not keep.any():  # the dataset has none: a cache may hold no entry for the modality at all
                break
            keep &= self.caches[leaf.name].rows(modality, keys) >= 0
        return keep

    def embeddings(self, space: Space, modality: str, ids: Sequence[str]) -> torch.Tensor:
        """`space`'s embeddings of dataset items, computed from the leaf caches."""
        leaf = {e.name: self.caches[e.name].embeddings(modality, list(ids)).to(space.device, space.dtype)
                for e in space.leaves_for(modality)}
        return space.combine(modality, leaf)

    def embeddings_of_keys(self, space: Space, modality: str, keys: np.ndarray) -> torch.Tensor:
        """`space`'s embeddings of items given by `id_keys` (each must be in every leaf cache)."""
        leaf = {}
        for e in space.leaves_for(modality):
            cache = self.caches[e.name]
            rows = cache.rows(modality, keys)
            if (rows < 0).any():
                raise CacheError(f"cache {cache.root} has no {modality} embeddings for "
                                 f"{int((rows < 0).sum())} of the items asked for")
            leaf[e.name] = cache.embeddings_at(modality, rows).to(space.device, space.dtype)
        return space.combine(modality, leaf)


def dataset_key(dataset: Dataset) -> str:
    """A short key of a dataset's location and manifest content, for default cache locations: two
    directories with one manifest but other media never share a cache."""
    return hashlib.sha256(f"{dataset.root.resolve()}\n{dataset.sha256}".encode()).hexdigest()[:16]


def default_cache_root(dataset: Dataset) -> Path:
    """Where a dataset's leaf caches live unless the caller says: `$SPACEBIND_HOME/caches/<key>`."""
    return home_dir() / "caches" / dataset_key(dataset)


def leaf_cache_dir(root: Path, leaf: Expert) -> Path:
    """`root/<leaf name>-<key of what the expert is>` (source, kwargs, checkpoint sha256, dim): an
    expert given another checkpoint or settings under the same name, or a new spacebind release's
    world expert, gets a cache of its own rather than meeting the old one's refusal; switching back
    finds the old cache again."""
    spec = leaf.spec
    what = json.dumps({"source": spec.source, "kwargs": spec.kwargs, "sha256": spec.sha256, "dim": leaf.dim},
                      sort_keys=True, default=str)
    return root / f"{leaf.name}-{hashlib.sha256(what.encode()).hexdigest()[:12]}"


def ensure_caches(spaces: Sequence[Space], dataset: Dataset, cache_root: Path | None = None,
                  progress: bool = True) -> CacheSet:
    """Embed the dataset once with every distinct leaf of `spaces` (resuming finished shards), under
    `cache_root` (default `default_cache_root(dataset)`), one directory per leaf (`leaf_cache_dir`)."""
    root = Path(cache_root) if cache_root is not None else default_cache_root(dataset)
    caches: dict[str, EmbeddingCache] = {}
    for space in spaces:
        for leaf in space.leaves():
            if leaf.name not in caches:
                where = leaf_cache_dir(root, leaf)
                if leaf.spec.source.startswith("<in-memory") and (where / "manifest.json").is_file():
                    warnings.warn(f"reusing the embeddings of in-memory expert {leaf.name!r} cached at {where}: "
                                  "spacebind cannot see whether its encoders changed since; after changing them, "
                                  "give the expert another name or delete that directory", stacklevel=2)
                caches[leaf.name] = embed_dataset(leaf, dataset, where, progress=progress)
    return CacheSet(caches)
