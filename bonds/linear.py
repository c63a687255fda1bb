"""Training-free projectors: linear least squares and orthogonal Procrustes."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from spacebind.bonds.heads import register_head
from spacebind.errors import InputError


@register_head("linear", "procrustes", projector=True, description="training-free linear map: least squares or orthogonal Procrustes")
class LinearMap(nn.Module):
    """`n(x W + b)`: a fitted linear map with unit-norm outputs."""

    def __init__(self, in_dim: int, out_dim: int, kind: str = "linear") -> None:
        super().__init__()
        self.in_dim, self.out_dim, self.kind = int(in_dim), int(out_dim), kind
        self.weight = nn.Parameter(torch.zeros(self.in_dim, self.out_dim), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(self.out_dim), requires_grad=False)

    @property
    def config(self) -> dict[str, Any]:
        """This head described as JSON (see `spacebind.bonds.heads`)."""
        return {"type": self.kind, "in_dim": self.in_dim, "out_dim": self.out_dim}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "LinearMap":
        return cls(config["in_dim"], config["out_dim"], config["type"])

    @staticmethod
    def fit_pairs(kind: str, src: torch.Tensor, tgt: torch.Tensor, options: dict[str, Any]) -> "LinearMap":
        """Fit a head of type `kind` on paired rows (`options` are other head types')."""
        return fit_least_squares(src, tgt) if kind == "linear" else fit_procrustes(src, tgt)

    @staticmethod
    def fit_source(kind: str, source: Any, options: dict[str, Any], chunk: int = 4096) -> "LinearMap":
        """Fit a head of type `kind` on a shard source (`spacebind.training.pairs.CachePairs`),
        reading its pairs `chunk` at a time: the same head as `fit_pairs` on all of them, up to
        float rounding (see `fit_streamed`)."""
        def chunks() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for start in range(0, len(source), chunk):
                yield source.gather(torch.arange(start, min(start + chunk, len(source))))

        return fit_streamed(kind, chunks(), *source.dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x @ self.weight + self.bias, dim=-1)


def _check_pairs(src: torch.Tensor, tgt: torch.Tensor) -> None:
    if src.ndim != 2 or tgt.ndim != 2 or len(src) != len(tgt) or len(src) == 0:
        raise InputError(f"fitting a linear map: expected paired [N, d] tensors with N > 0, "
                         f"got {tuple(src.shape)} and {tuple(tgt.shape)}")


def fit_least_squares(src: torch.Tensor, tgt: torch.Tensor, ridge: float = 0.0) -> LinearMap:
    """Minimise ‖[src 1] [W; b] − tgt‖² + ridge·‖W‖² in closed form (float64; bias not penalised).

    Raises:
        InputError: src and tgt are not paired 2-D tensors.
    """
    _check_pairs(src, tgt)
    x = torch.cat([src.double(), torch.ones(len(src), 1, dtype=torch.float64, device=src.device)], dim=1)
    y = tgt.double()
    if ridge > 0:
        reg = ridge * torch.eye(x.shape[1], dtype=torch.float64, device=src.device)
        reg[-1, -1] = 0.0  # the bias is not penalised
        solution = torch.linalg.solve(x.T @ x + reg, x.T @ y)
    else:
        solution = torch.linalg.lstsq(x, y).solution
    head = LinearMap(src.shape[1], tgt.shape[1], "linear").to(src.device)
    head.weight.data.copy_(solution[:-1].float())
    head.bias.data.copy_(solution[-1].float())
    return head.eval()


def fit_procrustes(src: torch.Tensor, tgt: torch.Tensor) -> LinearMap:
    """The (semi-)orthogonal W maximising tr(Wᵀ srcᵀ tgt): W = U Vᵀ from the thin SVD of srcᵀ tgt.

    For in_dim ≠ out_dim, W has orthonormal rows or columns (whichever are fewer). No bias.

    Raises:
        InputError: src and tgt are not paired 2-D tensors.
    """
    _check_pairs(src, tgt)
    u, _, vh = torch.linalg.svd(src.double().T @ tgt.double(), full_matrices=False)
    head = LinearMap(src.shape[1], tgt.shape[1], "procrustes").to(src.device)
    head.weight.data.copy_((u @ vh).float())
    return head.eval()


def fit_streamed(kind: str, chunks: Iterable[tuple[torch.Tensor, torch.Tensor]], in_dim: int, out_dim: int) -> LinearMap:
    """`fit_procrustes` (`kind` "procrustes") or `fit_least_squares` (`kind` "linear") from paired
    chunks of rows, never holding more than one: Procrustes needs only srcᵀ·tgt, least squares the
    normal equations [src 1]ᵀ[src 1] W = [src 1]ᵀ tgt, both summed over chunks in float64. Equal to
    the in-memory fits up to float rounding (least squares: where the normal equations are well
    conditioned; a rank-deficient system gets a least-squares solution of them).

    Raises:
        InputError: no rows, or chunks not paired 2-D tensors of widths `in_dim` / `out_dim`.
    """
    width = in_dim + (1 if kind == "linear" else 0)
    gram = torch.zeros(width, width, dtype=torch.float64)
    cross = torch.zeros(width, out_dim, dtype=torch.float64)
    rows = 0
    for src, tgt in chunks:
        _check_pairs(src, tgt)
        if src.shape[1] != in_dim or tgt.shape[1] != out_dim:
            raise InputError(f"fitting a linear map: expected widths {in_dim}/{out_dim}, got {src.shape[1]}/{tgt.shape[1]}")
        x = src.double().cpu()
        if kind == "linear":
            x = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], dim=1)
            gram += x.T @ x
        cross += x.T @ tgt.double().cpu()
        rows += len(src)
    if rows == 0:
        raise InputError("fitting a linear map: no pairs")
    head = LinearMap(in_dim, out_dim, kind)
    if kind == "linear":
        solution = torch.linalg.lstsq(gram, cross).solution
        head.weight.data.copy_(solution[:-1].float())
        head.bias.data.copy_(solution[-1].float())
    else:
        u, _, vh = torch.linalg.svd(cross, full_matrices=False)
        head.weight.data.copy_((u @ vh).float())
    return head.eval()
