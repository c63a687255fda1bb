"""Contrastive losses."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor | float, symmetric: bool = True) -> torch.Tensor:
    """CLIP-style InfoNCE: row i of `a` matches row i of `b`; inputs are unit vectors.

    `logit_scale` multiplies cosine similarities (1 / temperature)."""
    logits = logit_scale * (a @ b.T)
    labels = torch.arange(len(a), device=a.device)
    loss = F.cross_entropy(logits, labels)
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(logits.T, labels))
    return loss
