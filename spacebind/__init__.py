"""spacebind: bind pretrained embedding spaces into one fused multimodal space."""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from spacebind.errors import CacheError, CheckpointError, ExpertError, InputError, RecipeError, SpacebindError
from spacebind.io.datasets import Dataset
from spacebind.space import Expert, ExpertSpec, Space

try:
    __version__ = version("spacebind")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0+unknown"


def load(directory: Any, **kwargs: Any) -> Space:
    """Load a fused checkpoint directory (see `spacebind.checkpoint.load`)."""
    from spacebind.checkpoint import load as load_checkpoint

    return load_checkpoint(directory, **kwargs)


def create_expert(name: str, **kwargs: Any) -> Expert:
    """Build a registered expert (or `module:attribute` user code) by name."""
    from spacebind.experts import build_expert

    return build_expert(name, kwargs)


__all__ = [
    "CacheError", "CheckpointError", "Dataset", "Expert", "ExpertError", "ExpertSpec", "InputError", "RecipeError",
    "Space", "SpacebindError", "__version__", "create_expert", "load",
]
