"""Contrastive losses."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from spacebind.training import distributed


def info_nce(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor | float, symmetric: bool = True,
             gather: bool = False) -> torch.Tensor:
    """CLIP-style InfoNCE over the batch similarity matrix; row i of `a` matches row i of `b`.

    Args:
        a, b: [N, d] unit vectors.
        logit_scale: the factor on cosine similarities, 1 / temperature (a tensor to learn it).
        symmetric: average the a→b and b→a cross-entropies (else a→b only).
        gather: under torch.distributed, `a` and `b` are this rank's equal slice of a global batch
            (slices in rank order); the negatives are gathered from every rank with gradient and
            the loss is the mean over this rank's rows. The mean over ranks is then the
            single-process loss of the global batch, and DDP's averaged gradient its gradient.
            In a single process this is the plain loss.
    """
    a_all, b_all = (distributed.all_gather(a), distributed.all_gather(b)) if gather else (a, b)
    offset = distributed.rank() * len(a) if a_all is not a else 0
    logits = logit_scale * (a @ b_all.T)
    labels = torch.arange(offset, offset + len(a), device=a.device)
    loss = F.cross_entropy(logits, labels)
    if symmetric:
        back = logits.T if a_all is a and b_all is b else logit_scale * (b @ a_all.T)
        loss = 0.5 * (loss + F.cross_entropy(back, labels))
    return loss
