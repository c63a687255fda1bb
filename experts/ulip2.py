"""ULIP-2 (colored PointBERT): point clouds bound to the open_clip ViT-bigG-14 space, 1280-d.

The official file (`ULIP-2-PointBERT-10k-colored-pc-pretrained.pt`) is a training checkpoint:
`{'state_dict': …, 'args': argparse.Namespace, 'optimizer': …, …}` with `module.` prefixes. It
loads with `weights_only=True` and only `argparse.Namespace` allow-listed. Keys: `logit_scale`,
`pc_projection` [768, 1280], `point_encoder.*`; the ViT-bigG weights the training module held
(`open_clip_model.*`), if present, are skipped: text and images go through open_clip
`ViT-bigG-14` loaded from `clip_checkpoint=`. Texts over 75 BPE tokens keep end-of-text (open_clip's
cut); `truncation="official"` cuts as ULIP's own `utils/tokenizer.py` (77 ids, no end-of-text)."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spacebind.experts._checkpoint_io import load_strict, read_checkpoint
from spacebind.experts._point_clip import point_clip_expert
from spacebind.experts._pointbert import PointBert, PointBertConfig
from spacebind.experts.open_clip_family import Truncation, check_truncation, open_clip_expert
from spacebind.experts.registry import EXPERTS
from spacebind.space import Expert

NAME = "ulip2_pointbert"
CLIP_MODEL = "ViT-bigG-14"
CHECKPOINT_FILE = "ULIP-2-PointBERT-10k-colored-pc-pretrained.pt"
CLIP_FILE = "ViT-bigG-14 laion2b_s39b_b160k open_clip_pytorch_model.bin"


class Ulip2(nn.Module):
    """The saved module minus its open_clip tower: PointBERT features @ `pc_projection`."""

    def __init__(self, config: PointBertConfig, embed_dim: int) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.zeros([]))
        self.point_encoder = PointBert(config)
        self.pc_projection = nn.Parameter(torch.zeros(2 * config.width, embed_dim))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.point_encoder(points) @ self.pc_projection


@EXPERTS.register(NAME, modalities=("text", "image", "point"), dim=1280,
                  checkpoint=f"{CHECKPOINT_FILE} + clip_checkpoint= {CLIP_FILE}",
                  description="ULIP-2 colored PointBERT (10k xyz+rgb points) in the open_clip ViT-bigG-14 space; "
                              "needs checkpoint= and clip_checkpoint=")
def ulip2_pointbert(
    checkpoint: str,
    clip_checkpoint: str,
    clip_model: str = CLIP_MODEL,
    config: dict[str, Any] | None = None,
    truncation: Truncation = "eot",
    device: str = "cpu",
    batch_size: int = 16,
) -> Expert:
    """A text/image/point expert: ULIP-2 PointBERT from `checkpoint`, open_clip `clip_model` from
    `clip_checkpoint`. `config` overrides `PointBertConfig` fields (tests use tiny ones);
    `truncation` cuts long texts (see the module docstring)."""
    check_truncation(truncation)
    path = Path(checkpoint)
    state = read_checkpoint(path, "state_dict", CHECKPOINT_FILE, safe_globals=[argparse.Namespace])
    clip = open_clip_expert(clip_model, clip_checkpoint, name=NAME, device=device, batch_size=batch_size, source=NAME,
                            truncation=truncation)
    arch = dataclasses.replace(PointBertConfig(), **(config or {}))
    model = Ulip2(arch, clip.dim)
    load_strict(model, state, path, ignore=("open_clip_model.",))
    return point_clip_expert(NAME, model, arch.npoints, clip, checkpoint=path, clip_checkpoint=clip_checkpoint,
                             clip_model=clip_model, default_clip_model=CLIP_MODEL, config=config,
                             truncation=truncation, device=device, batch_size=batch_size)
