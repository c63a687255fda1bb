"""Relative representations (ASIF): a training-free projector through paired anchors.

An item x of the source space is described by its cosine similarities to K anchors of that
space, `r(x) = x Aₛᵀ` (its relative coordinates). ASIF keeps the top k of them and raises them
to a power p (`s = sparsify(r(x))`, other coordinates 0) and compares items across spaces by the
anchors' pairing: the score of a target item y is `⟨s(x), y Aₜᵀ⟩`, y's relative coordinates in
the target space against the same anchors' partners. That score equals `⟨s(x) Aₜ, y⟩`, so the
projector maps x to `n(s(x) Aₜ)` in the target space: a sparse, similarity-weighted mean of
the paired anchors' target embeddings, and it composes with every bond like a trained head.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from spacebind.bonds.heads import ConfigFromArgs, register_head
from spacebind.errors import InputError


def sparsify(relative: torch.Tensor, k: int, power: float) -> torch.Tensor:
    """ASIF sparsification: keep each row's top-k coordinates (clamped at 0) raised to `power`, zero the rest."""
    k = min(k, relative.shape[-1])
    values, index = relative.topk(k, dim=-1)
    return torch.zeros_like(relative).scatter_(-1, index, values.clamp_min(0).pow(power))


@register_head("relative", projector=True, description="ASIF relative representations through paired anchors (training-free)")
class RelativeMap(ConfigFromArgs, nn.Module):
    """`n(sparsify(x Aₛᵀ) Aₜ)`: anchors Aₛ [K, in] and their partners Aₜ [K, out], not trained."""

    TYPE, FIELDS = "relative", ("in_dim", "out_dim", "anchors", "k", "power")

    def __init__(self, in_dim: int, out_dim: int, anchors: int, k: int = 32, power: float = 8.0) -> None:
        super().__init__()
        self.in_dim, self.out_dim, self.anchors = int(in_dim), int(out_dim), int(anchors)
        self.k, self.power = int(k), float(power)
        self.src_anchors = nn.Parameter(torch.zeros(self.anchors, self.in_dim), requires_grad=False)
        self.tgt_anchors = nn.Parameter(torch.zeros(self.anchors, self.out_dim), requires_grad=False)

    @staticmethod
    def fit_pairs(kind: str, src: torch.Tensor, tgt: torch.Tensor, options: dict[str, Any]) -> "RelativeMap":
        """Fit on paired rows; `options`: `anchors`, `k`, `power`, `seed` (see `fit_relative`)."""
        return fit_relative(src, tgt, **options)

    @staticmethod
    def fit_source(kind: str, source: Any, options: dict[str, Any]) -> "RelativeMap":
        """Fit on a shard source (`spacebind.training.pairs.CachePairs`) reading only the anchor
        rows: the same head as `fit_pairs` on all its pairs."""
        anchors, seed = options.get("anchors", 512), options.get("seed", 0)
        _check_options(anchors, options.get("k", 32))
        pick = _anchor_rows(len(source), anchors, seed)
        src, tgt = source.gather(pick)
        return _from_anchors(src, tgt, options.get("k", 32), options.get("power", 8.0))

    def relative(self, x: torch.Tensor) -> torch.Tensor:
        """Sparse relative coordinates of source embeddings against the source anchors, [N, K]."""
        return sparsify(F.normalize(x, dim=-1) @ self.src_anchors.T, self.k, self.power)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.relative(x) @ self.tgt_anchors, dim=-1)


def fit_relative(src: torch.Tensor, tgt: torch.Tensor, anchors: int = 512, k: int = 32, power: float = 8.0,
                 seed: int = 0) -> RelativeMap:
    """Take `anchors` paired rows (a seeded random subset; all of them if fewer) as the anchor set.

    Raises:
        InputError: src and tgt are not paired 2-D tensors, or k / anchors are not positive.
    """
    if src.ndim != 2 or tgt.ndim != 2 or len(src) != len(tgt) or len(src) == 0:
        raise InputError(f"fitting relative representations: expected paired [N, d] tensors with N > 0, "
                         f"got {tuple(src.shape)} and {tuple(tgt.shape)}")
    _check_options(anchors, k)
    pick = _anchor_rows(len(src), anchors, seed).to(src.device)
    return _from_anchors(src[pick], tgt[pick], k, power)


def _check_options(anchors: int, k: int) -> None:
    if anchors < 1 or k < 1:
        raise InputError(f"relative representations need anchors ≥ 1 and k ≥ 1; got anchors={anchors}, k={k}")


def _anchor_rows(n: int, anchors: int, seed: int) -> torch.Tensor:
    """The anchor pairs among `n`: a seeded random subset of `anchors` (all if fewer), in row order."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:anchors].sort().values


def _from_anchors(src: torch.Tensor, tgt: torch.Tensor, k: int, power: float) -> RelativeMap:
    """The head whose anchors are the paired rows `src` / `tgt`."""
    head = RelativeMap(src.shape[1], tgt.shape[1], len(src), k, power).to(src.device)
    head.src_anchors.data.copy_(F.normalize(src.float(), dim=-1))
    head.tgt_anchors.data.copy_(F.normalize(tgt.float(), dim=-1))
    return head.eval()
