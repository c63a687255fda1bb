"""OmniBind's router head and the routed mixture: `w = softmax(s·g(r))`, `e = n(Σ_k w_k·c_k)`."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from spacebind.bonds.heads import ConfigFromArgs, init_linear_layers, register_head


@register_head("router", description="OmniBind's router: one weight per candidate space")
class Router(ConfigFromArgs, nn.Module):
    """g_m of OmniBind (MOE_Router_Sig): Linear → BN → ReLU → Linear → BN → tanh → Linear → sigmoid,
    one output per candidate space. Xavier-uniform weights and zero biases (frozen before a
    BatchNorm: `init_linear_layers`), except the last layer, which starts at zero (OmniBind:
    Xavier) so an untrained router is the uniform mixture."""

    TYPE, FIELDS = "router", ("in_dim", "out_dim", "hidden")

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int] = (512, 100)) -> None:
        super().__init__()
        self.in_dim, self.out_dim, self.hidden = int(in_dim), int(out_dim), [int(h) for h in hidden]
        h1, h2 = self.hidden
        self.net = nn.Sequential(
            nn.Linear(self.in_dim, h1), nn.BatchNorm1d(h1), nn.ReLU(),
            nn.Linear(h1, h2), nn.BatchNorm1d(h2), nn.Tanh(), nn.Linear(h2, self.out_dim),
        )
        init_linear_layers(self.net)
        nn.init.zeros_(self.net[-1].weight)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(r))


def routing_weights(router: nn.Module | None, router_input: torch.Tensor, candidates: int, scale: float) -> torch.Tensor:
    """w = softmax(s·g(r)) per input row, [N, candidates]; uniform (1/K) without a router."""
    if router is None:
        return router_input.new_full((router_input.shape[0], candidates), 1.0 / candidates)
    return torch.softmax(scale * router(router_input), dim=-1)


def mix(candidates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """n(Σ_k w_k·c_k) from candidates [N, K, D] and weights [N, K]."""
    return F.normalize((weights.unsqueeze(-1) * candidates).sum(dim=1), dim=-1)
