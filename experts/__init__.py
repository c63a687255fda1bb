"""Experts: frozen pretrained spaces, one file per family, registered on import."""
from spacebind.experts import (
    adapters,  # noqa: F401
    clap,  # noqa: F401
    eva_clip_18b,  # noqa: F401
    hf_vision,  # noqa: F401
    imagebind,  # noqa: F401
    internvl,  # noqa: F401
    minilm,  # noqa: F401
    open_clip_family,  # noqa: F401
    ulip2,  # noqa: F401
    uni3d,  # noqa: F401
    wavcaps,  # noqa: F401
    world,  # noqa: F401
    world_unimodal,  # noqa: F401
)
