"""Unimodal world experts: one tower of a world expert on its own, as a frozen unimodal encoder.

`world_image` is the image tower of `world_image_text` (or of `world_unified`): an image encoder
with no text side, the world's stand-in for DINOv2 in unimodal → multimodal binding."""
from __future__ import annotations

from pathlib import Path

from spacebind.registry import EXPERTS
from spacebind.space import Expert, ExpertSpec
from spacebind.world.experts import CONFIGS, make_world_expert


def unimodal_world_expert(name: str, modality: str, source: str, concepts_seed: int = 0, num_concepts: int = 24,
                          checkpoint: str | Path | None = None, device: str = "cpu", progress: bool = True) -> Expert:
    """The `modality` tower of the world expert `source`, named `name`.

    Raises:
        ValueError: `source` is not a world expert with a `modality` tower.
    """
    if source not in CONFIGS or modality not in CONFIGS[source].widths:
        options = [n for n, c in CONFIGS.items() if modality in c.widths]
        raise ValueError(f"{name}: source {source!r} is not a world expert with a {modality} tower; "
                         f"expected one of {', '.join(options)}")
    full = make_world_expert(source, concepts_seed, num_concepts, checkpoint, device, progress)
    kwargs = {**full.spec.kwargs, "source": source}
    spec = ExpertSpec(source=name, kwargs=kwargs, checkpoint=full.spec.checkpoint, sha256=full.spec.sha256)
    return Expert(name, full.dim, {modality: full.encoders[modality]}, spec=spec)


@EXPERTS.register("world_image", modalities=("image",), dim=CONFIGS["world_image_text"].dim, licence="apache-2.0",
                  description="procedural world: the image tower alone (source=world_image_text|world_unified)")
def world_image(source: str = "world_image_text", concepts_seed: int = 0, num_concepts: int = 24,
                checkpoint: str | None = None, device: str = "cpu", progress: bool = True) -> Expert:
    """A unimodal image encoder: the image tower of the world expert `source`."""
    return unimodal_world_expert("world_image", "image", source, concepts_seed, num_concepts, checkpoint, device,
                                 progress)
