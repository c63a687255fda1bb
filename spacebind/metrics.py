"""Retrieval and zero-shot classification metrics (CLIP_benchmark conventions), chunked."""
from __future__ import annotations

from typing import Sequence

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


def retrieval_recall(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    positives: Sequence[int | Sequence[int]],
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 4096,
) -> dict[int, float]:
    """recall@k: fraction of queries with a correct gallery item among their top k."""
    top = topk_indices(queries, gallery, max(ks), chunk_size)
    pos = [set([p]) if isinstance(p, int) else set(p) for p in positives]
    first_hit = torch.tensor(
        [next((r for r, g in enumerate(row.tolist()) if g in pos[i]), len(gallery) + 1) for i, row in enumerate(top)]
    )
    return {k: float((first_hit < k).float().mean()) if len(first_hit) else float("nan") for k in ks}


def class_embeddings(prompt_embeddings: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Mean of each class's normalised prompt embeddings, renormalised. Rows are grouped per
    class: [n_classes × n_templates, dim] with class-major order."""
    per_class = prompt_embeddings.view(n_classes, -1, prompt_embeddings.shape[-1])
    per_class = torch.nn.functional.normalize(per_class, dim=-1).mean(dim=1)
    return torch.nn.functional.normalize(per_class, dim=-1)


def zeroshot_classification(features: torch.Tensor, labels: torch.Tensor, classes: torch.Tensor) -> dict[str, float]:
    """acc1, acc5 (k = min(5, classes)) and mean per-class recall of nearest-class prediction."""
    top = topk_indices(features, classes, min(5, len(classes)))
    acc1 = (top[:, 0] == labels).float().mean().item()
    acc5 = (top == labels[:, None]).any(dim=1).float().mean().item()
    recalls = [(top[labels == c, 0] == c).float().mean().item() for c in labels.unique().tolist()]
    return {"acc1": acc1, "acc5": acc5, "mean_per_class_recall": sum(recalls) / len(recalls)}
