"""Mixture of projectors: several heads for one pair of spaces, outputs averaged."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from spacebind.errors import InputError


class ProjectorMixture(nn.Module):
    """P̄(x) = mean of the members' unit outputs. Not renormalised here: the bond formulas
    normalise after mixing with the other side."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise InputError("a projector mixture needs at least one member, got none")
        self.members = nn.ModuleList(members)

    @property
    def config(self) -> dict[str, Any]:
        """What `head_from_config` needs to rebuild this mixture."""
        return {"type": "mixture", "members": [m.config for m in self.members]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(dim=0)
