"""An in-memory stand-in for an expert's embedding cache, for bond tests without files."""
from __future__ import annotations

import torch


class MemoryCache:
    """Vectors by modality and item id, read the way `EmbeddingCache` is."""

    def __init__(self, table: dict[str, dict[str, torch.Tensor]]) -> None:
        self.table = table

    def ids(self, modality: str) -> list[str]:
        return list(self.table.get(modality, {}))

    def embeddings(self, modality: str, ids: list[str]) -> torch.Tensor:
        return torch.stack([self.table[modality][i] for i in ids])
