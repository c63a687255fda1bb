"""PointBERT (the point encoder of ULIP-2) and the pieces Uni3D inherits from it: the mini-PointNet
patch embedding and the centre-position MLP. Also reading the official point checkpoints strictly.

Key names follow salesforce/ULIP `models/pointbert/point_encoder.py` (`PointTransformer_Colored`)
and `models/pointbert/dvae.py` (`Encoder`)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from spacebind.experts._point_grouping import NUM_POINTS, group_points


class MiniPointNet(nn.Module):
    """Patch embedding: shared point MLP, max-pool, concatenate the pooled feature to every point,
    second MLP, max-pool. Patches [B, G, K, C] → [B, G, out_channels]."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.first_conv = nn.Sequential(nn.Conv1d(in_channels, 128, 1), nn.BatchNorm1d(128), nn.ReLU(inplace=True),
                                        nn.Conv1d(128, 256, 1))
        self.second_conv = nn.Sequential(nn.Conv1d(512, 512, 1), nn.BatchNorm1d(512), nn.ReLU(inplace=True),
                                         nn.Conv1d(512, out_channels, 1))

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        batch, groups, size, channels = patches.shape
        feature = self.first_conv(patches.reshape(batch * groups, size, channels).transpose(1, 2))
        pooled = feature.max(dim=2, keepdim=True).values
        feature = self.second_conv(torch.cat([pooled.expand(-1, -1, size), feature], dim=1))
        return feature.max(dim=2).values.reshape(batch, groups, -1)


def position_mlp(width: int) -> nn.Sequential:
    """Patch-centre xyz → position embedding (keys `0.*`, `2.*`)."""
    return nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, width))


class _Attention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, width))


class _Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = _Attention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        from timm.layers import Mlp  # fc1, GELU, fc2: the official keys; timm loads lazily

        self.mlp = Mlp(width, 4 * width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _Blocks(nn.Module):
    def __init__(self, width: int, depth: int, heads: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(_Block(width, heads) for _ in range(depth))

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x + pos)  # PointBERT adds the position embedding before every block
        return x


@dataclass(frozen=True)
class PointBertConfig:
    """ULIP-2's `ULIP_2_PointBERT_10k_colored_pointclouds.yaml` by default."""

    width: int = 384
    depth: int = 18
    heads: int = 6
    num_group: int = 512
    group_size: int = 32
    encoder_dim: int = 256
    npoints: int = NUM_POINTS


class PointBert(nn.Module):
    """Colored PointBERT: points [B, N, 6] → cls token ⊕ max-pool over patch tokens [B, 2·width]."""

    def __init__(self, config: PointBertConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = MiniPointNet(6, config.encoder_dim)
        self.reduce_dim = nn.Linear(config.encoder_dim, config.width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.width))
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, config.width))
        self.pos_embed = position_mlp(config.width)
        self.blocks = _Blocks(config.width, config.depth, config.heads)
        self.norm = nn.LayerNorm(config.width)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        patches, centres = group_points(points, self.config.num_group, self.config.group_size)
        tokens = self.reduce_dim(self.encoder(patches))
        batch = tokens.shape[0]
        x = torch.cat([self.cls_token.expand(batch, -1, -1), tokens], dim=1)
        pos = torch.cat([self.cls_pos.expand(batch, -1, -1), self.pos_embed(centres)], dim=1)
        x = self.norm(self.blocks(x, pos))
        return torch.cat([x[:, 0], x[:, 1:].max(dim=1).values], dim=-1)
