"""Training-free projectors: linear least squares and orthogonal Procrustes."""
from __future__ import annotations

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
