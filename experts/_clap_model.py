"""HTS-AT (the Swin-transformer audio encoder of LAION-CLAP and WavCaps) and the LAION-CLAP model,
written so that `state_dict()` keys and shapes equal the official checkpoints'.

Only inference is implemented: no dropout, drop-path, SpecAugment or mixup. The mel front end is a
conv-DFT power spectrogram and a mel matrix (torchlibrosa's layout and values, which the official
checkpoints store), built here so the model can also be created on the meta device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from transformers import RobertaConfig


@dataclass(frozen=True)
class HTSATConfig:
    """Architecture and front end of an HTS-AT encoder (defaults: LAION-CLAP HTSAT-tiny, 48 kHz)."""

    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 8
    spec_size: int = 256
    patch_size: int = 4
    num_classes: int = 527
    sample_rate: int = 48000
    n_fft: int = 1024
    hop_length: int = 480
    mel_bins: int = 64
    fmin: float = 50.0
    fmax: float = 14000.0
    clip_samples: int = 480000
    fusion: bool = False  # LAION-CLAP's 'aff_2d' feature fusion for clips longer than clip_samples

    @property
    def num_features(self) -> int:
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    @property
    def freq_ratio(self) -> int:
        return self.spec_size // self.mel_bins


HTSAT_TINY = HTSATConfig()
HTSAT_BASE = HTSATConfig(embed_dim=128, depths=(2, 2, 12, 2))
ROBERTA_BASE = dict(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                    intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
                    pad_token_id=1, bos_token_id=0, eos_token_id=2)


# ---- mel front end (torchlibrosa-compatible keys: stft.conv_real / stft.conv_imag, melW) ----

class _DFT(nn.Module):
    def __init__(self, n_fft: int, hop_length: int) -> None:
        super().__init__()
        bins = n_fft // 2 + 1
        self.conv_real = nn.Conv1d(1, bins, n_fft, stride=hop_length, bias=False)
        self.conv_imag = nn.Conv1d(1, bins, n_fft, stride=hop_length, bias=False)
        n = np.arange(n_fft)
        window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)  # periodic Hann, as librosa's get_window
        angle = -2 * np.pi * np.outer(np.arange(bins), n) / n_fft
        with torch.no_grad():
            self.conv_real.weight.copy_(torch.from_numpy(np.cos(angle) * window)[:, None].float())
            self.conv_imag.weight.copy_(torch.from_numpy(np.sin(angle) * window)[:, None].float())


class PowerSpectrogram(nn.Module):
    """|STFT|² with centre reflect padding: [B, T] → [B, 1, frames, n_fft // 2 + 1]."""

    def __init__(self, n_fft: int, hop_length: int) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.stft = _DFT(n_fft, hop_length)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        x = F.pad(waveform[:, None], (self.n_fft // 2, self.n_fft // 2), mode="reflect")
        real, imag = self.stft.conv_real(x), self.stft.conv_imag(x)
        return (real ** 2 + imag ** 2).transpose(1, 2)[:, None]


class LogMel(nn.Module):
    """Slaney mel filter bank (`melW`, librosa's default) and 10·log10 with amin 1e-10, ref 1, no top_db."""

    def __init__(self, sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> None:
        super().__init__()
        import librosa

        mel = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
        self.melW = nn.Parameter(torch.empty(n_fft // 2 + 1, n_mels), requires_grad=False)
        with torch.no_grad():
            self.melW.copy_(torch.from_numpy(mel.T))

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        return 10.0 * torch.log10(torch.clamp(power @ self.melW, min=1e-10))


# ---- Swin transformer ----

def _windows(x: torch.Tensor, w: int) -> torch.Tensor:
    b, h, wd, c = x.shape
    x = x.view(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w * w, c)


def _unwindows(x: torch.Tensor, w: int, h: int, wd: int) -> torch.Tensor:
    c = x.shape[-1]
    x = x.view(-1, h // w, wd // w, w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, wd, c)


class WindowAttention(nn.Module):
    def __init__(self, dim: int, window: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer("relative_position_index", rel[..., 0] * (2 * window - 1) + rel[..., 1])
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1)[None]
        if mask is not None:
            attn = (attn.view(b // mask.shape[0], mask.shape[0], self.heads, n, n) + mask[None, :, None]).view(b, self.heads, n, n)
        return self.proj((attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, c))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    def __init__(self, dim: int, resolution: tuple[int, int], heads: int, window: int, shift: int) -> None:
        super().__init__()
        if min(resolution) <= window:  # the window covers the whole map: no partition, no shift
            window, shift = min(resolution), 0
        self.resolution, self.window, self.shift = resolution, window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _Mlp(dim, 4 * dim)
        self.register_buffer("attn_mask", self._shift_mask() if shift else None)

    def _shift_mask(self) -> torch.Tensor:
        h, w = self.resolution
        regions = torch.zeros(1, h, w, 1)
        cuts = (slice(0, -self.window), slice(-self.window, -self.shift), slice(-self.shift, None))
        for i, (hs, ws) in enumerate((hs, ws) for hs in cuts for ws in cuts):
            regions[:, hs, ws, :] = i
        ids = _windows(regions, self.window).squeeze(-1)
        diff = ids[:, None, :] - ids[:, :, None]
        return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.resolution
        b, _, c = x.shape
        y = self.norm1(x).view(b, h, w, c)
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), dims=(1, 2))
        y = _unwindows(self.attn(_windows(y, self.window), self.attn_mask), self.window, h, w)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), dims=(1, 2))
        x = x + y.reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, dim: int, resolution: tuple[int, int]) -> None:
        super().__init__()
        self.resolution = resolution
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.resolution
        x = x.view(x.shape[0], h, w, -1)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.view(x.shape[0], -1, x.shape[-1])))


class SwinStage(nn.Module):
    def __init__(self, dim: int, resolution: tuple[int, int], depth: int, heads: int, window: int, merge: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, resolution, heads, window, 0 if i % 2 == 0 else window // 2) for i in range(depth))
        self.downsample = PatchMerging(dim, resolution) if merge else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x) if self.downsample is not None else x


# ---- fusion (LAION-CLAP 'aff_2d') ----

def _attention_branch(channels: int, pooled: bool) -> nn.Sequential:
    inner = channels // 4
    layers = [nn.AdaptiveAvgPool2d(1)] if pooled else []
    layers += [nn.Conv2d(channels, inner, 1), nn.BatchNorm2d(inner), nn.ReLU(),
               nn.Conv2d(inner, channels, 1), nn.BatchNorm2d(channels)]
    return nn.Sequential(*layers)


class AFF(nn.Module):
    """Attentional feature fusion of the global view `x` with the local chunks `residual`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.local_att = _attention_branch(channels, pooled=False)
        self.global_att = _attention_branch(channels, pooled=True)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        mixed = x + residual
        weight = torch.sigmoid(self.local_att(mixed) + self.global_att(mixed))
        return 2 * x * weight + 2 * residual * (1 - weight)


class PatchEmbed(nn.Module):
    def __init__(self, cfg: HTSATConfig) -> None:
        super().__init__()
        p = cfg.patch_size
        self.proj = nn.Conv2d(1, cfg.embed_dim, p, stride=p)
        self.norm = nn.LayerNorm(cfg.embed_dim)
        self.fusion = cfg.fusion
        if cfg.fusion:
            self.mel_conv2d = nn.Conv2d(1, cfg.embed_dim, (p, 3 * p), stride=(p, 3 * p))
            self.fusion_model = AFF(cfg.embed_dim)

    def forward(self, x: torch.Tensor, longer: torch.Tensor | None) -> torch.Tensor:
        out = self.proj(x[:, :1])
        if self.fusion and longer is not None and bool(longer.any()):
            idx = longer.nonzero().flatten()
            local = x[idx, 1:]  # the three chunks, each patch-embedded with a 3× wider time stride
            b, c, h, w = local.shape
            local = self.mel_conv2d(local.reshape(b * c, 1, h, w))
            local = local.view(b, c, *local.shape[1:]).permute(0, 2, 3, 1, 4).flatten(3)
            width = out.shape[-1]
            local = F.pad(local, (0, max(0, width - local.shape[-1])))[..., :width]
            out = out.clone()
            out[idx] = self.fusion_model(out[idx], local)
        return self.norm(out.flatten(2).transpose(1, 2))


class HTSAT(nn.Module):
    """HTS-AT trunk: log-mel [B, C, frames, mel_bins] → clip embedding [B, num_features]
    (C is 1, or 4 for fusion: global view + three chunks). Subclasses add the mel front end."""

    def __init__(self, cfg: HTSATConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.bn0 = nn.BatchNorm2d(cfg.mel_bins)
        self.patch_embed = PatchEmbed(cfg)
        grid = cfg.spec_size // cfg.patch_size
        self.layers = nn.ModuleList(
            SwinStage(cfg.embed_dim * 2 ** i, (grid // 2 ** i, grid // 2 ** i), depth, cfg.num_heads[i],
                      cfg.window_size, merge=i < len(cfg.depths) - 1)
            for i, depth in enumerate(cfg.depths))
        self.norm = nn.LayerNorm(cfg.num_features)
        sf = cfg.spec_size // 2 ** (len(cfg.depths) - 1) // cfg.patch_size // cfg.freq_ratio
        # The tagging head is unused for embeddings but is part of every official checkpoint.
        self.tscam_conv = nn.Conv2d(cfg.num_features, cfg.num_classes, (sf, 3), padding=(0, 1))
        self.head = nn.Linear(cfg.num_classes, cfg.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _to_image(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, frames, mels] → the square [B, C, spec_size, spec_size] image HTS-AT reads: frames
        stretched (bicubic) to spec_size·freq_ratio, then freq_ratio time slices stacked along frequency."""
        cfg, r = self.cfg, self.cfg.freq_ratio
        frames, mels = cfg.spec_size * r, cfg.spec_size // r
        if x.shape[2] > frames or x.shape[3] > mels:
            raise ValueError(f"HTS-AT takes at most {frames} frames × {mels} mel bins, got {tuple(x.shape[2:])}")
        if x.shape[2] < frames:
            x = F.interpolate(x, (frames, x.shape[3]), mode="bicubic", align_corners=True)
        if x.shape[3] < mels:
            x = F.interpolate(x, (x.shape[2], mels), mode="bicubic", align_corners=True)
        b, c, t, f = x.shape
        x = x.permute(0, 1, 3, 2).reshape(b, c, f, r, t // r).permute(0, 1, 3, 2, 4)
        return x.reshape(b, c, r * f, t // r)

    def forward(self, mel: torch.Tensor, longer: torch.Tensor | None = None) -> torch.Tensor:
        x = self.bn0(mel.transpose(1, 3)).transpose(1, 3)
        x = self.patch_embed(self._to_image(x), longer)
        for stage in self.layers:
            x = stage(x)
        return self.norm(x).mean(dim=1)  # = the official avg-pool over the regrouped token map


class CLAPAudio(HTSAT):
    """LAION-CLAP's `audio_branch`: HTS-AT with its own log-mel front end."""

    def __init__(self, cfg: HTSATConfig) -> None:
        super().__init__(cfg)
        self.spectrogram_extractor = PowerSpectrogram(cfg.n_fft, cfg.hop_length)
        self.logmel_extractor = LogMel(cfg.sample_rate, cfg.n_fft, cfg.mel_bins, cfg.fmin, cfg.fmax)

    def log_mel(self, waveform: torch.Tensor) -> torch.Tensor:
        """[B, samples] → [B, 1, frames, mel_bins] (the non-fusion input)."""
        return self.logmel_extractor(self.spectrogram_extractor(waveform))


def projection(width: int, dim: int) -> nn.Sequential:
    """Linear → ReLU → Linear, as CLAP's and WavCaps' projection heads."""
    return nn.Sequential(nn.Linear(width, dim), nn.ReLU(), nn.Linear(dim, dim))


class _MLPLayers(nn.Module):
    """CLAP's training-only `*_transform` heads; kept so checkpoints load strictly."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.sequential = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(0.1), nn.Linear(dim, dim))


class CLAP(nn.Module):
    """LAION-CLAP with an HTS-AT audio branch and a RoBERTa text branch (pooler output)."""

    def __init__(self, audio: HTSATConfig = HTSAT_TINY, text: RobertaConfig | None = None, dim: int = 512) -> None:
        super().__init__()
        from transformers import RobertaConfig, RobertaModel

        text = text or RobertaConfig(**ROBERTA_BASE)
        self.audio_branch = CLAPAudio(audio)
        self.text_branch = RobertaModel(text)
        self.audio_projection = projection(audio.num_features, dim)
        self.text_projection = projection(text.hidden_size, dim)
        self.audio_transform = _MLPLayers(dim)
        self.text_transform = _MLPLayers(dim)
        self.logit_scale_a = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.logit_scale_t = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_audio(self, mel: torch.Tensor, longer: torch.Tensor | None = None) -> torch.Tensor:
        """Log-mel [B, 1 or 4, frames, mel_bins] (+ which clips are longer, for fusion) → unit [B, dim]."""
        return F.normalize(self.audio_projection(self.audio_branch(mel, longer)), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """RoBERTa token ids and mask → unit [B, dim] (pooler output, projected)."""
        pooled = self.text_branch(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return F.normalize(self.text_projection(pooled), dim=-1)
