"""The ImageBind architecture, written to load the official `imagebind_huge.pth` state dict.

Module names follow the official model, so `state_dict()` keys are
`modality_{preprocessors,trunks,heads,postprocessors}.<m>.*` with m in vision, text, audio, depth,
thermal, imu. Input geometry is fixed by the official preprocessing (224 px images, 128 × 204
fbank, 2000 × 6 IMU, 77 text tokens); `ImageBindConfig` sets only widths, depths and heads, so
tests can build a tiny model that takes the same inputs.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

MODALITIES = ("vision", "text", "audio", "depth", "thermal", "imu")
IMAGE_SIZE = 224
VISION_KERNEL = (2, 14, 14)  # a 2-frame "video" patchified by a Conv3d
PATCH = 16  # depth and thermal Conv2d patches
AUDIO_SHAPE, AUDIO_KERNEL, AUDIO_STRIDE = (128, 204), 16, 10  # mel bins × frames; overlapping patches
IMU_SHAPE, IMU_KERNEL = (6, 2000), 8  # channels × timesteps; 8-step windows of 6 channels → 48 features
CONTEXT_LENGTH, VOCAB_SIZE = 77, 49408
# Fixed logit scales of the postprocessors (text's is learned, initialised at 1 / 0.07).
LOGIT_SCALES = {"text": 1 / 0.07, "audio": 20.0, "depth": 5.0, "thermal": 10.0, "imu": 5.0}
MAX_LOGIT_SCALE = 100.0


@dataclass(frozen=True)
class Tower:
    """One modality trunk: token width, number of blocks, attention heads."""

    width: int
    depth: int
    heads: int


@dataclass(frozen=True)
class ImageBindConfig:
    """Tower sizes and output dimension; the defaults are `imagebind_huge`."""

    out_dim: int = 1024
    vision: Tower = field(default_factory=lambda: Tower(1280, 32, 16))
    text: Tower = field(default_factory=lambda: Tower(1024, 24, 16))
    audio: Tower = field(default_factory=lambda: Tower(768, 12, 12))
    depth: Tower = field(default_factory=lambda: Tower(384, 12, 8))
    thermal: Tower = field(default_factory=lambda: Tower(768, 12, 12))
    imu: Tower = field(default_factory=lambda: Tower(512, 6, 8))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ImageBindConfig":
        towers = {m: Tower(**data[m]) for m in MODALITIES if m in data}
        return cls(out_dim=int(data.get("out_dim", 1024)), **towers)


class Stem(nn.Module):
    """Patch projection (conv or linear) → tokens [B, L, D], then an optional LayerNorm."""

    def __init__(self, proj: nn.Module, width: int | None) -> None:
        super().__init__()
        self.proj = proj
        # The stems' LayerNorms keep torch's default eps (1e-5); every other norm uses 1e-6.
        self.norm_layer = nn.LayerNorm(width) if width else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        if x.ndim > 3:  # conv output B, C, (T,) H, W → B, (T)HW, C
            x = x.flatten(2).transpose(1, 2)
        return self.norm_layer(x) if self.norm_layer is not None else x


class RepeatFrames(nn.Module):
    """An image batch [B, C, H, W] → a video [B, C, T, H, W] of T copies (official PadIm2Video)."""

    def __init__(self, frames: int) -> None:
        super().__init__()
        self.frames = frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            x = x.unsqueeze(2)
        return x.repeat(1, 1, self.frames, 1, 1) if x.shape[2] == 1 else x


class PosEmbed(nn.Module):
    """Holds the learned position embedding (official `pos_embedding_helper`)."""

    def __init__(self, tokens: int, width: int) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, width) * width ** -0.5)


class PatchPreprocessor(nn.Module):
    """Stem → prepend a CLS token → add position embeddings (vision, audio, depth, thermal)."""

    def __init__(self, stem_name: str, stem: Stem, patches: int, width: int) -> None:
        super().__init__()
        self.stem_name = stem_name
        self.add_module(stem_name, stem)
        self.cls_token = nn.Parameter(torch.randn(1, 1, width) * width ** -0.5)
        self.pos_embedding_helper = PosEmbed(patches + 1, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = getattr(self, self.stem_name)(x)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return tokens + self.pos_embedding_helper.pos_embed


class ImuPreprocessor(nn.Module):
    """IMU [B, 6, T] → windows of IMU_KERNEL steps × 6 channels → linear stem → CLS + positions."""

    def __init__(self, width: int) -> None:
        super().__init__()
        channels, steps = IMU_SHAPE
        self.imu_stem = Stem(nn.Linear(channels * IMU_KERNEL, width, bias=False), width)
        self.cls_token = nn.Parameter(torch.randn(1, 1, width) * width ** -0.5)
        self.pos_embed = nn.Parameter(torch.randn(1, steps // IMU_KERNEL + 1, width) * 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        windows = x.unfold(-1, IMU_KERNEL, IMU_KERNEL).permute(0, 2, 1, 3)  # B, windows, channels, kernel
        tokens = self.imu_stem(windows.reshape(x.shape[0], windows.shape[1], -1))
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return tokens + self.pos_embed


class TextPreprocessor(nn.Module):
    """Token ids [B, 77] → embeddings + positions; the causal mask is a buffer in the checkpoint."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(VOCAB_SIZE, width)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, CONTEXT_LENGTH, width) * 0.01)
        mask = torch.full((CONTEXT_LENGTH, CONTEXT_LENGTH), float("-inf")).triu_(1)
        self.register_buffer("mask", mask)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(ids) + self.pos_embed


class Block(nn.Module):
    """Pre-norm transformer block; attention runs on sequence-first tensors [L, B, D]."""

    def __init__(self, width: int, heads: int, bias_kv: bool) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, bias=True, add_bias_kv=bias_kv)
        self.norm_1 = nn.LayerNorm(width, eps=1e-6)
        from timm.layers import Mlp  # fc1, GELU, fc2: the official keys; timm loads lazily

        self.mlp = Mlp(width, 4 * width)
        self.norm_2 = nn.LayerNorm(width, eps=1e-6)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        h = self.norm_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.norm_2(x))


class Trunk(nn.Module):
    """Optional pre-transformer LayerNorm (vision only), then the blocks."""

    def __init__(self, tower: Tower, pre_norm: bool, bias_kv: bool) -> None:
        super().__init__()
        self.pre_transformer_layer = nn.Sequential(nn.LayerNorm(tower.width, eps=1e-6)) if pre_norm else nn.Identity()
        self.blocks = nn.Sequential(*[Block(tower.width, tower.heads, bias_kv) for _ in range(tower.depth)])

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.pre_transformer_layer(tokens).transpose(0, 1)
        for block in self.blocks:
            x = block(x, mask)
        return x.transpose(0, 1)


class SelectToken(nn.Module):
    """Tokens [B, L, D] → the token at `index` [B, D] (the CLS token)."""

    def __init__(self, index: int = 0) -> None:
        super().__init__()
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.index]


class TextHead(nn.Module):
    """The end-of-text token's features → LayerNorm → projection (CLIP pooling)."""

    def __init__(self, width: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(width, eps=1e-6), nn.Linear(width, out_dim, bias=False))

    def forward(self, x: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        return self.proj(x[torch.arange(x.shape[0]), eot])


class Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1)


class LogitScale(nn.Module):
    """Multiplies by exp(log_logit_scale) clipped at 100; a parameter for text, a buffer otherwise."""

    def __init__(self, scale: float, learnable: bool) -> None:
        super().__init__()
        value = torch.tensor(math.log(scale))
        if learnable:
            self.log_logit_scale = nn.Parameter(value)
        else:
            self.register_buffer("log_logit_scale", value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_logit_scale.exp().clamp(max=MAX_LOGIT_SCALE) * x


def _head(width: int, out_dim: int, dropout: bool = False) -> nn.Sequential:
    layers = [nn.LayerNorm(width, eps=1e-6), SelectToken(0)]
    layers += [nn.Dropout(0.5)] if dropout else []  # IMU only; shifts the Linear's key index to 3
    return nn.Sequential(*layers, nn.Linear(width, out_dim, bias=False))


class ImageBindModel(nn.Module):
    """All six towers; `forward(modality, x)` returns the official (scaled) embeddings."""

    def __init__(self, config: ImageBindConfig | None = None) -> None:
        super().__init__()
        c = self.config = config or ImageBindConfig()
        v, a = c.vision.width, c.audio.width
        grid = IMAGE_SIZE // PATCH
        audio_grid = [(n - AUDIO_KERNEL) // AUDIO_STRIDE + 1 for n in AUDIO_SHAPE]
        self.modality_preprocessors = nn.ModuleDict({
            "vision": PatchPreprocessor("rgbt_stem", Stem(nn.Sequential(
                RepeatFrames(VISION_KERNEL[0]),
                nn.Conv3d(3, v, kernel_size=VISION_KERNEL, stride=VISION_KERNEL, bias=False)), None),
                (IMAGE_SIZE // VISION_KERNEL[1]) ** 2, v),
            "text": TextPreprocessor(c.text.width),
            "audio": PatchPreprocessor("rgbt_stem", Stem(
                nn.Conv2d(1, a, kernel_size=AUDIO_KERNEL, stride=AUDIO_STRIDE, bias=False), a),
                audio_grid[0] * audio_grid[1], a),
            "depth": PatchPreprocessor("depth_stem", Stem(
                nn.Conv2d(1, c.depth.width, kernel_size=PATCH, stride=PATCH, bias=False), c.depth.width),
                grid * grid, c.depth.width),
            "thermal": PatchPreprocessor("rgbt_stem", Stem(
                nn.Conv2d(1, c.thermal.width, kernel_size=PATCH, stride=PATCH, bias=False), c.thermal.width),
                grid * grid, c.thermal.width),
            "imu": ImuPreprocessor(c.imu.width),
        })
        self.modality_trunks = nn.ModuleDict({
            m: Trunk(getattr(c, m), pre_norm=m == "vision", bias_kv=m not in ("vision", "text")) for m in MODALITIES
        })
        self.modality_heads = nn.ModuleDict({
            m: TextHead(c.text.width, c.out_dim) if m == "text" else _head(getattr(c, m).width, c.out_dim, m == "imu")
            for m in MODALITIES
        })
        self.modality_postprocessors = nn.ModuleDict({"vision": Normalize()} | {
            m: nn.Sequential(Normalize(), LogitScale(scale, learnable=m == "text")) for m, scale in LOGIT_SCALES.items()
        })

    def forward(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """Embed one modality. Inputs: vision [B, 3, 224, 224], text ids [B, 77], audio
        [B, 1, 128, 204], depth/thermal [B, 1, 224, 224], imu [B, 6, 2000]. As in the official
        model, any input of ≥ 5 dims is [B, S, ...] clips whose S outputs are averaged."""
        clips = x.shape[:2] if x.ndim >= 5 else None
        if clips is not None:
            x = x.reshape(-1, *x.shape[2:])
        tokens = self.modality_preprocessors[modality](x)
        if modality == "text":
            mask = self.modality_preprocessors["text"].mask
            feats = self.modality_heads["text"](self.modality_trunks["text"](tokens, mask), x.argmax(dim=-1))
        else:
            feats = self.modality_heads[modality](self.modality_trunks[modality](tokens))
        out = self.modality_postprocessors[modality](feats)
        return out.reshape(*clips, -1).mean(dim=1) if clips is not None else out
