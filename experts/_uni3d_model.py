"""The Uni3D point encoder: PointBERT-style patch tokens fed through the blocks of a timm EVA ViT.

Key names follow baaivision/Uni3D `models/uni3d.py` (`Uni3D`: `logit_scale`, `point_encoder`) and
`models/point_encoder.py` (`PointcloudEncoder`); the timm trunk keeps all its own weights under
`point_encoder.visual.*` (its patch embedding, position embedding and classifier head are saved
but unused)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from spacebind.experts._point_grouping import NUM_POINTS, group_points
from spacebind.experts._pointbert import MiniPointNet, position_mlp

# scripts/inference.sh: size → (timm model, pc_feat_dim)
SIZES: dict[str, tuple[str, int]] = {
    "tiny": ("eva02_tiny_patch14_224", 192),
    "small": ("eva02_small_patch14_224", 384),
    "base": ("eva02_base_patch14_448", 768),
    "large": ("eva02_large_patch14_448", 1024),
    "giant": ("eva_giant_patch14_560", 1408),
}


@dataclass(frozen=True)
class Uni3DConfig:
    """Official inference settings (`scripts/inference.sh`); `trunk_kwargs` go to `timm.create_model`."""

    trunk: str
    embed_dim: int = 1024
    encoder_dim: int = 512
    num_group: int = 512
    group_size: int = 64
    npoints: int = NUM_POINTS
    trunk_kwargs: dict[str, Any] = field(default_factory=dict)


def create_trunk(config: Uni3DConfig) -> nn.Module:
    """The timm EVA model, built as the official `create_uni3d` does (no pretrained weights)."""
    import timm

    return timm.create_model(config.trunk, pretrained=False, drop_path_rate=0.0, **config.trunk_kwargs)


class Uni3DPointEncoder(nn.Module):
    """Points [B, N, 6] → [B, embed_dim]: patch tokens + cls, EVA blocks, cls through the trunk's
    norms, linear map into the CLIP space."""

    def __init__(self, config: Uni3DConfig, trunk: nn.Module) -> None:
        super().__init__()
        self.config = config
        width = trunk.embed_dim
        self.encoder = MiniPointNet(6, config.encoder_dim)
        self.encoder2trans = nn.Linear(config.encoder_dim, width)
        self.trans2embed = nn.Linear(width, config.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = position_mlp(width)
        self.visual = trunk

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        patches, centres = group_points(points, self.config.num_group, self.config.group_size)
        tokens = self.encoder2trans(self.encoder(patches))
        batch = tokens.shape[0]
        x = torch.cat([self.cls_token.expand(batch, -1, -1), tokens], dim=1)
        x = x + torch.cat([self.cls_pos.expand(batch, -1, -1), self.pos_embed(centres)], dim=1)
        x = self.visual.pos_drop(x)
        for block in self.visual.blocks:
            x = block(x)  # the official forward passes no rotary embedding to the EVA-02 blocks
        x = self.visual.fc_norm(self.visual.norm(x[:, 0]))
        return self.trans2embed(x)


class Uni3D(nn.Module):
    """The saved module: `logit_scale` and `point_encoder.*`."""

    def __init__(self, config: Uni3DConfig) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.zeros([]))
        self.point_encoder = Uni3DPointEncoder(config, create_trunk(config))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.point_encoder(points)
