"""Contrastive losses."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor | float, symmetric: bool = True) -> torch.Tensor:
    """CLIP-style InfoNCE over the batch similarity matrix; row i of `a` matches row i of `b`.

    Args:
        a, b: [N, d] unit vectors.
        logit_scale: the factor on cosine similarities, 1 / temperature (a tensor to learn it).
        symmetric: average the a→b and b→a cross-entropies (else a→b only).
    """
    logits = logit_scale * (a @ b.T)
    labels = torch.arange(len(a), device=a.device)
    loss = F.cross_entropy(logits, labels)
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(logits.T, labels))
    return loss
