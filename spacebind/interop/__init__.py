"""A fused space among other tools: the Hugging Face Hub (`hub`: push, load by repo id) and model
interfaces other libraries expect (`adapters`: open_clip, sentence-transformers, CLIP_benchmark)."""
from __future__ import annotations

from spacebind.interop.adapters import OpenCLIPModel, SentenceEncoder, SpaceModule, TextTokens, load_clip_benchmark
from spacebind.interop.hub import checkpoint_directory, parse_hub_id, push_directory, push_space

__all__ = [
    "OpenCLIPModel", "SentenceEncoder", "SpaceModule", "TextTokens", "checkpoint_directory", "load_clip_benchmark",
    "parse_hub_id", "push_directory", "push_space",
]
