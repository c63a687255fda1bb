"""Retrieval and zero-shot classification metrics (CLIP_benchmark conventions), chunked."""
from __future__ import annotations

import numbers
from typing import Sequence

import numpy as np
import torch

from spacebind.retrieval.mining import part_mean
from spacebind.retrieval.topk import topk_indices

NO_HIT = torch.iinfo(torch.long).max  # the rank of a query with no correct item in its top `depth`


def first_hit_ranks(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    positives: Sequence[int | Sequence[int]],
    depth: int = 1,
    chunk_size: int = 4096,
) -> torch.Tensor:
    """Per query, the 0-based rank of its first correct gallery item among its top `depth`
    (`NO_HIT`, above any k, when none is there): `ranks < k` are the per-query hits behind recall@k."""
    top = topk_indices(queries, gallery, depth, chunk_size)
    listed = positives.tolist() if isinstance(positives, (torch.Tensor, np.ndarray)) else positives
    pos = [{int(p)} if isinstance(p, numbers.Integral) else {int(g) for g in p} for p in listed]
    return torch.tensor(
        [next((r for r, g in enumerate(row.tolist()) if g in pos[i]), NO_HIT) for i, row in enumerate(top)],
        dtype=torch.long,
    )


def retrieval_recall(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    positives: Sequence[int | Sequence[int]],
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 4096,
) -> dict[int, float]:
    """recall@k: fraction of queries with a correct gallery item among their top k."""
    first_hit = first_hit_ranks(queries, gallery, positives, max(ks), chunk_size)
    return {k: float((first_hit < k).float().mean()) if len(first_hit) else float("nan") for k in ks}


def class_embeddings(prompt_embeddings: torch.Tensor, n_classes: int, blocks: Sequence[int] | None = None) -> torch.Tensor:
    """Mean of each class's normalised prompt embeddings, renormalised. Rows are grouped per
    class: [n_classes × n_templates, dim] with class-major order. `blocks` (a space's `blocks`):
    widths of consecutive parts whose norms the space fixes; each part is averaged and renormalised
    to its own norm, so that templates agreeing more in one part do not reweigh the parts."""
    per_class = prompt_embeddings.view(n_classes, -1, prompt_embeddings.shape[-1])
    per_class = torch.nn.functional.normalize(per_class, dim=-1)
    if blocks is None or len(blocks) < 2:
        return torch.nn.functional.normalize(per_class.mean(dim=1), dim=-1)
    return part_mean(per_class, blocks)


def on_support(rows: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Rows (text embeddings: prompts, centres, descriptions) restricted to the dimensions a modality
    uses (`Space.support`), renormalised; unchanged where it uses every dimension. A bond's channel
    embeds a modality it does not carry as `[e, 0]`: only the first part can match it."""
    if bool(support.all()):
        return rows
    return torch.nn.functional.normalize(rows * support.to(rows.device, rows.dtype), dim=-1)


def zeroshot_classification(features: torch.Tensor, labels: torch.Tensor, classes: torch.Tensor) -> dict[str, float]:
    """acc1, acc5 and mean per-class recall of nearest-class prediction; as CLIP_benchmark, acc5 is
    NaN with fewer than 5 classes (every item would be a hit), and all three are NaN with no item."""
    if len(labels) == 0:
        return {"acc1": float("nan"), "acc5": float("nan"), "mean_per_class_recall": float("nan")}
    top = topk_indices(features, classes, min(5, len(classes)))
    acc1 = (top[:, 0] == labels).float().mean().item()
    acc5 = (top == labels[:, None]).any(dim=1).float().mean().item() if len(classes) >= 5 else float("nan")
    recalls = [(top[labels == c, 0] == c).float().mean().item() for c in labels.unique().tolist()]
    return {"acc1": acc1, "acc5": acc5, "mean_per_class_recall": sum(recalls) / len(recalls)}
