"""Uni3D (tiny … giant): point clouds bound to the EVA02-E-14-plus CLIP space, 1024-d.

The point encoder loads from the official DeepSpeed file (`torch.load(f)['module']`, keys
`logit_scale`, `point_encoder.*`, optionally prefixed `module.`); text and images go through
open_clip `EVA02-E-14-plus` loaded from a second local file (`clip_checkpoint=`). Texts over 75 BPE
tokens keep end-of-text (open_clip's cut); `truncation="official"` cuts as Uni3D's own
`utils/tokenizer.py` (77 ids, no end-of-text)."""
from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path
from typing import Any

from spacebind.experts._checkpoint_io import load_strict, read_checkpoint
from spacebind.experts._point_clip import point_clip_expert
from spacebind.experts._uni3d_model import SIZES, Uni3D, Uni3DConfig
from spacebind.experts.open_clip_family import Truncation, check_truncation, open_clip_expert
from spacebind.experts.registry import EXPERTS
from spacebind.space import Expert

CLIP_MODEL = "EVA02-E-14-plus"
CLIP_FILE = "EVA02-E-14-plus open_clip_pytorch_model.bin (timm/eva02_enormous_patch14_plus_clip_224.laion2b_s9b_b144k)"


def uni3d_expert(
    size: str,
    checkpoint: str,
    clip_checkpoint: str,
    *,
    clip_model: str = CLIP_MODEL,
    config: dict[str, Any] | None = None,
    truncation: Truncation = "eot",
    device: str = "cpu",
    batch_size: int = 16,
) -> Expert:
    """A text/image/point expert: Uni3D-`size` point encoder from `checkpoint`, open_clip
    `clip_model` from `clip_checkpoint`. `config` overrides `Uni3DConfig` fields (tests use tiny
    trunks through `trunk_kwargs`); `truncation` cuts long texts (see the module docstring)."""
    check_truncation(truncation)
    name = f"uni3d_{size}"
    path = Path(checkpoint)
    state = read_checkpoint(path, "module", f"the Uni3D-{size} model.pt (BAAI/Uni3D modelzoo)")
    clip = open_clip_expert(clip_model, clip_checkpoint, name=name, device=device, batch_size=batch_size, source=name,
                            truncation=truncation)
    arch = dataclasses.replace(Uni3DConfig(trunk=SIZES[size][0], embed_dim=clip.dim), **(config or {}))
    model = Uni3D(arch)
    load_strict(model, state, path)
    return point_clip_expert(name, model, arch.npoints, clip, checkpoint=path, clip_checkpoint=clip_checkpoint,
                             clip_model=clip_model, default_clip_model=CLIP_MODEL, config=config,
                             truncation=truncation, device=device, batch_size=batch_size)

for _size, (_trunk, _width) in SIZES.items():
    EXPERTS.register(
        f"uni3d_{_size}", modalities=("text", "image", "point"), dim=1024,
        checkpoint=f"Uni3D-{_size} model.pt + clip_checkpoint= {CLIP_FILE}",
        description=f"Uni3D-{_size} (timm {_trunk}, width {_width}) in the EVA02-E-14-plus CLIP space; "
                    f"needs checkpoint= and clip_checkpoint=",
    )(partial(uni3d_expert, _size))
