"""A point encoder joined to the open_clip image-text space it was trained into (Uni3D, ULIP-2)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from spacebind.experts._point_grouping import cloud_encoder
from spacebind.io.files import sha256_file
from spacebind.space import Expert, ExpertSpec


def point_clip_expert(name: str, model: nn.Module, npoints: int, clip: Expert, *, checkpoint: Path,
                      clip_checkpoint: str, clip_model: str, default_clip_model: str,
                      config: dict[str, Any] | None, truncation: str, device: str, batch_size: int) -> Expert:
    """One text/image/point expert: `clip`'s text and image encoders plus the loaded point `model`
    (fed `npoints` points per cloud). The spec records what rebuilds it (`clip_model` and
    `truncation` only when not the default)."""
    model.eval().to(device)
    kwargs: dict[str, Any] = {"checkpoint": str(checkpoint), "clip_checkpoint": str(clip_checkpoint)}
    if clip_model != default_clip_model:
        kwargs["clip_model"] = clip_model
    if config:
        kwargs["config"] = config
    if truncation != "eot":
        kwargs["truncation"] = truncation
    spec = ExpertSpec(source=name, kwargs=kwargs, checkpoint=str(checkpoint), sha256=sha256_file(checkpoint))
    encoders = {**clip.encoders, "point": cloud_encoder(model, npoints, device)}
    return Expert(name, clip.dim, encoders, spec=spec, batch_size=batch_size)
