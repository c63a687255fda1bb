"""An in-memory stand-in for an expert's embedding cache, for bond tests without files."""
from __future__ import annotations

import numpy as np
import torch

from spacebind.cache.keys import KeyIndex, id_keys


class MemoryCache:
    """Vectors by modality and item id, read the way `EmbeddingCache` is (by id, by key or by row)."""

    def __init__(self, table: dict[str, dict[str, torch.Tensor]]) -> None:
        self.table = table
        self._index = {m: KeyIndex(id_keys(list(rows))) for m, rows in table.items()}

    def ids(self, modality: str) -> list[str]:
        return list(self.table.get(modality, {}))

    def embeddings(self, modality: str, ids: list[str]) -> torch.Tensor:
        return torch.stack([self.table[modality][i] for i in ids])

    def rows(self, modality: str, keys: np.ndarray) -> np.ndarray:
        if modality not in self._index:
            return np.full(len(keys), -1, dtype=np.int64)
        return self._index[modality].rows(keys)

    def embeddings_at(self, modality: str, rows: np.ndarray) -> torch.Tensor:
        vectors = list(self.table[modality].values())
        return torch.stack([vectors[r] for r in np.asarray(rows).tolist()])
