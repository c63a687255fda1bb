"""Exact top-k retrieval by inner product, in query chunks (memory bounded by chunk × gallery)."""
from __future__ import annotations

import torch


def topk_indices(queries: torch.Tensor, gallery: torch.Tensor, k: int, chunk_size: int = 4096) -> torch.Tensor:
    """Exact top-k gallery indices by inner product, [Q, min(k, G)]; memory bounded by chunk × G.
    Ties go to the lower gallery index."""
    k = min(k, len(gallery))
    out = [_topk_ties_low(queries[start:start + chunk_size] @ gallery.T, k)
           for start in range(0, len(queries), chunk_size)]
    return torch.cat(out) if out else torch.empty(0, k, dtype=torch.long)


def _topk_ties_low(sims: torch.Tensor, k: int) -> torch.Tensor:
    """Row-wise top-k column indices of `sims`, equal scores in index order: torch.topk of k + 1,
    its first k picks reordered by index within equal scores; rows whose k-th score equals the
    (k + 1)-th (a tie across the cut) get a full stable sort. (A full sort of every row costs
    several times the matrix product.)"""
    if k == 0:
        return torch.empty(len(sims), 0, dtype=torch.long)
    values, idx = torch.topk(sims, min(k + 1, sims.shape[1]), dim=1)
    tied = values[:, k] == values[:, k - 1] if values.shape[1] > k else torch.zeros(len(sims), dtype=torch.bool)
    values, idx = values[:, :k], idx[:, :k]
    idx, by_index = idx.sort(dim=1)
    order = values.gather(1, by_index).sort(dim=1, descending=True, stable=True).indices
    idx = idx.gather(1, order)
    if tied.any():
        rows = tied.nonzero().flatten()
        idx[rows] = torch.sort(sims[rows], dim=1, descending=True, stable=True).indices[:, :k]
    return idx
