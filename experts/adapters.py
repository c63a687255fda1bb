"""Explicit adapters: any image expert encodes thermal, event and video inputs (as UniBind does
with CLIP-style encoders).

- thermal → image: the map in [0, 1] as an 8-bit gray image, replicated to three channels;
- event → image: the RGB event frame of `spacebind.io.events.event_frame` (positive counts red,
  negative blue, on black);
- video → image: `frames` evenly spaced frames, each embedded, unit-normalised and averaged.

`adapt_expert(expert, ["thermal", "event"])` in Python; in a recipe
`experts: {it: {name: adapted, kwargs: {expert: world_image_text, adapt: [thermal, event, video]}}}`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from spacebind.errors import InputError
from spacebind.experts.registry import EXPERTS
from spacebind.io.events import event_frame
from spacebind.io.video import Video, uniform_frames
from spacebind.space import Encoder, Expert, ExpertSpec

ADAPTABLE = ("video", "thermal", "event")


def thermal_image(thermal: np.ndarray) -> np.ndarray:
    """A thermal map in [0, 1] → uint8 [H, W, 3] gray (channel replication)."""
    gray = np.rint(np.clip(thermal, 0.0, 1.0) * 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


def _per_item(image_encoder: Encoder, convert: Callable[[Any], np.ndarray]) -> Encoder:
    return lambda items: image_encoder([convert(x) for x in items])


def _video_encoder(image_encoder: Encoder, frames: int) -> Encoder:
    def encode(videos: list[Video]) -> torch.Tensor:
        stills = [f for v in videos for f in uniform_frames(v, frames)]
        emb = F.normalize(torch.as_tensor(image_encoder(stills)).float(), dim=-1)
        return emb.reshape(len(videos), frames, -1).mean(dim=1)

    return encode


def adapt_expert(expert: Expert, adapt: Sequence[str], *, frames: int = 8, spec: ExpertSpec | None = None) -> Expert:
    """`expert` with encoders for the `adapt` modalities built on its image encoder.

    Raises:
        InputError: the expert has no image encoder, or `adapt` names a modality with no adapter
            or one the expert already encodes.
    """
    if "image" not in expert.modalities:
        raise InputError(f"expert {expert.name!r} has no image encoder to adapt (it covers {', '.join(expert.modalities)})")
    for m in adapt:
        if m not in ADAPTABLE:
            raise InputError(f"no image adapter for modality {m!r}; expected any of {', '.join(ADAPTABLE)}")
        if m in expert.modalities:
            raise InputError(f"expert {expert.name!r} already encodes {m!r}; adapting it would replace its own encoder")
    if frames < 1:
        raise InputError(f"frames is {frames}; expected at least 1")
    image = expert.encoders["image"]
    make: dict[str, Callable[[], Encoder]] = {
        "thermal": lambda: _per_item(image, thermal_image),
        "event": lambda: _per_item(image, event_frame),
        "video": lambda: _video_encoder(image, frames),
    }
    encoders = {**expert.encoders, **{m: make[m]() for m in adapt}}
    return Expert(expert.name, expert.dim, encoders, spec=spec or expert.spec, batch_size=expert.batch_size)


@EXPERTS.register("adapted", modalities=("image", *ADAPTABLE),
                  description="any image expert (`expert=`, `kwargs=`) with explicit thermal/event/video adapters (`adapt=`)")
def adapted(expert: str, adapt: Sequence[str] = ADAPTABLE, kwargs: dict[str, Any] | None = None,
            frames: int = 8) -> Expert:
    """The registered expert `expert` (built with `kwargs`) adapted to the `adapt` modalities."""
    inner = EXPERTS.create(expert, **(kwargs or {}))
    spec = ExpertSpec(source="adapted", kwargs={"expert": expert, "adapt": list(adapt), "kwargs": dict(kwargs or {}),
                                                "frames": frames},
                      checkpoint=inner.spec.checkpoint, sha256=inner.spec.sha256)
    return adapt_expert(inner, adapt, frames=frames, spec=spec)
