"""open_clip models (CLIP, EVA-CLIP, SigLIP, DFN, …) from local checkpoint files.

Weights load through `open_clip.create_model_and_transforms(name, pretrained=<local file>)`,
which loads strictly with `weights_only=True`. Models whose text tower uses a Hugging Face
tokenizer (SigLIP) need its files in a local directory (`tokenizer=`); nothing is downloaded.

Texts longer than the context are cut as open_clip does (`truncation="eot"`: end-of-text forced
into the last position, where the text towers pool); `truncation="official"` cuts as Uni3D's and
ULIP's evaluation tokenizers (`utils/tokenizer.py`), without re-inserting end-of-text."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from spacebind.errors import CheckpointError, InputError
from spacebind.experts.registry import EXPERTS
from spacebind.io.files import sha256_file
from spacebind.space import Expert, ExpertSpec

Truncation = Literal["eot", "official"]
TRUNCATIONS = ("eot", "official")


def check_truncation(truncation: str) -> None:
    """Refuse an unknown `truncation` (before any weights load)."""
    if truncation not in TRUNCATIONS:
        raise InputError(f"truncation {truncation!r}; expected 'eot' or 'official'")


def cut_ids(bpe: Any, texts: list[str]) -> torch.Tensor:
    """[N, context] ids as Uni3D's / ULIP's `utils/tokenizer.py`: [sot] + BPE + [eot] cut at the
    context length, end-of-text not re-inserted, zero-padded."""
    rows = [[bpe.sot_token_id, *bpe.encode(text), bpe.eot_token_id][:bpe.context_length] for text in texts]
    ids = torch.zeros(len(rows), bpe.context_length, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row)
    return ids


def _tokenizer(model_name: str, tokenizer: str | Path | None, truncation: Truncation = "eot") -> Any:
    """`texts -> ids` for `model_name`; `truncation="official"` only for the CLIP BPE tokenizer."""
    import open_clip
    from open_clip.tokenizer import HFTokenizer

    check_truncation(truncation)
    text_cfg = (open_clip.get_model_config(model_name) or {}).get("text_cfg", {})
    hf_name = text_cfg.get("hf_tokenizer_name")
    if not hf_name:
        bpe = open_clip.get_tokenizer(model_name)  # CLIP BPE: ships inside open_clip
        return bpe if truncation == "eot" else partial(cut_ids, bpe)
    if truncation != "eot":
        raise InputError(f"truncation='official' needs the CLIP BPE tokenizer; {model_name!r} uses {hf_name!r}")
    if tokenizer is None or not Path(tokenizer).is_dir():
        raise CheckpointError(
            f"open_clip model {model_name!r} uses the Hugging Face tokenizer {hf_name!r}: download its files "
            f"(tokenizer.json / spiece.model, tokenizer_config.json) into a directory and pass tokenizer=DIR"
        )
    return HFTokenizer(str(tokenizer), context_length=text_cfg.get("context_length", 77),
                       **text_cfg.get("tokenizer_kwargs", {}))


def open_clip_expert(
    model: str,
    checkpoint: str | Path,
    *,
    name: str | None = None,
    tokenizer: str | Path | None = None,
    device: str = "cpu",
    batch_size: int = 64,
    source: str = "open_clip",
    truncation: Truncation = "eot",
) -> Expert:
    """An image-text expert from an open_clip architecture name and a local weights file; texts
    over the context are cut as `truncation` says (see the module docstring)."""
    import open_clip

    path = Path(checkpoint)
    if not path.is_file():
        raise CheckpointError(f"open_clip {model!r}: no checkpoint file at {path} (download the weights for this "
                              f"architecture, e.g. open_clip_pytorch_model.bin, and give its path)")
    if model not in open_clip.list_models():
        raise InputError(f"open_clip has no model config {model!r}; see open_clip.list_models()")
    tokenize = _tokenizer(model, tokenizer, truncation)
    try:
        net, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=str(path), device=device)
    except RuntimeError as exc:  # strict loading: missing / unexpected keys
        raise CheckpointError(f"{path}: does not match open_clip {model!r}: {exc}") from None
    net.eval()

    def encode_image(images: list[np.ndarray]) -> torch.Tensor:
        from PIL import Image

        pixels = torch.stack([preprocess(Image.fromarray(a)) for a in images]).to(device)
        return net.encode_image(pixels).float()

    def encode_text(texts: list[str]) -> torch.Tensor:
        return net.encode_text(tokenize(texts).to(device)).float()

    dim = int(net.text_projection.shape[1]) if getattr(net, "text_projection", None) is not None else \
        int(encode_text(["a"]).shape[1])
    kwargs = {"model": model, "checkpoint": str(path)} if source == "open_clip" else {"checkpoint": str(path)}
    if tokenizer is not None:
        kwargs["tokenizer"] = str(tokenizer)
    spec = ExpertSpec(source=source, kwargs=kwargs, checkpoint=str(path), sha256=sha256_file(path))
    encoders = {"image": torch.no_grad()(encode_image), "text": torch.no_grad()(encode_text)}
    return Expert(name or source, dim, encoders, spec=spec, batch_size=batch_size)


@EXPERTS.register("open_clip", modalities=("image", "text"), description="any open_clip architecture from a local weights file")
def open_clip_any(model: str, checkpoint: str, tokenizer: str | None = None, device: str = "cpu", batch_size: int = 64) -> Expert:
    """`spacebind.create_expert("open_clip", model="ViT-B-32", checkpoint="...")`."""
    return open_clip_expert(model, checkpoint, tokenizer=tokenizer, device=device, batch_size=batch_size)


# The open_clip experts OmniBind and ULIP-2 use (architecture, output dim, what the file is).
VARIANTS = {
    "eva02_clip_bige14_plus": ("EVA02-E-14-plus", 1024, "EVA02_CLIP_E_psz14_plus_s9B.pt (EVA-CLIP, laion2b_s9b_b144k)"),
    "dfn5b_clip_vit_h14": ("ViT-H-14-quickgelu", 1024, "DFN5B-CLIP-ViT-H-14 open_clip_pytorch_model.bin"),
    "siglip_large_patch16_384": ("ViT-L-16-SigLIP-384", 1024, "ViT-L-16-SigLIP-384 open_clip_pytorch_model.bin + tokenizer dir"),
    "siglip_so400m_384": ("ViT-SO400M-14-SigLIP-384", 1152, "ViT-SO400M-14-SigLIP-384 open_clip_pytorch_model.bin + tokenizer dir"),
    "openclip_vit_bigg14": ("ViT-bigG-14", 1280, "ViT-bigG-14 laion2b_s39b_b160k open_clip_pytorch_model.bin"),
}


def _variant(registry_name: str, checkpoint: str, tokenizer: str | None = None, device: str = "cpu",
             batch_size: int = 64) -> Expert:
    model = VARIANTS[registry_name][0]
    return open_clip_expert(model, checkpoint, name=registry_name, tokenizer=tokenizer, device=device,
                            batch_size=batch_size, source=registry_name)


for _name, (_model, _dim, _file) in VARIANTS.items():
    EXPERTS.register(_name, modalities=("image", "text"), dim=_dim, checkpoint=_file,
                     description=f"open_clip {_model}; needs checkpoint= {_file}")(partial(_variant, _name))
