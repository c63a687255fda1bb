"""The reference MLP projector (FreeBind's Proj_Head_mini)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spacebind.bonds.heads import ConfigFromArgs, init_linear_layers, register_head


@register_head("mlp", projector=True, description="FreeBind's Proj_Head_mini: Linear → BN → ReLU → Linear → BN → n()")
class MLPProjector(ConfigFromArgs, nn.Module):
    """Linear(in→hidden) → BatchNorm → ReLU → Linear(hidden→out) → BatchNorm → L2-normalise.

    Xavier-uniform weights, no dropout, no residual, as the reference; zero biases, frozen, where
    the reference keeps PyTorch's default ones and trains them, which changes nothing but rounding
    noise: each Linear feeds a BatchNorm, which removes any constant shift (`init_linear_layers`)."""

    TYPE, FIELDS = "mlp", ("in_dim", "out_dim", "hidden")

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 2048) -> None:
        super().__init__()
        self.in_dim, self.out_dim, self.hidden = int(in_dim), int(out_dim), int(hidden)
        self.net = nn.Sequential(
            nn.Linear(self.in_dim, self.hidden), nn.BatchNorm1d(self.hidden), nn.ReLU(inplace=True),
            nn.Linear(self.hidden, self.out_dim), nn.BatchNorm1d(self.out_dim),
        )
        init_linear_layers(self.net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=-1)
