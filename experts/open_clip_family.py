"""open_clip models (CLIP, EVA-CLIP, SigLIP, DFN, …) from local checkpoint files.

Weights load through `open_clip.create_model_and_transforms(name, pretrained=<local file>)`,
which loads strictly with `weights_only=True`. Models whose text tower uses a Hugging Face
tokenizer (SigLIP) need its files in a local directory (`tokenizer=`); nothing is downloaded.

Image preprocessing: open_clip keeps it (mean/std, interpolation, resize mode) with the
*pretrained tag*, not the architecture, and merges it only when `pretrained` is a tag name; a
local file gets the OpenAI defaults (shortest-side resize + centre crop). So every variant names
its official tag and `pretrained_tag=` passes that tag's entry of open_clip's own table
(`open_clip.get_pretrained_cfg`) as `image_mean/std/interpolation/resize_mode` (SigLIP webli:
mean = std = 0.5 and squash; DFN5B: squash).

EVA-CLIP files (`EVA02_CLIP_E_psz14_plus_s9B.pt`, BAAI's own key layout `visual.blocks.*`,
`visual.pos_embed`, …) load into open_clip's timm-trunk EVA architectures (`visual.trunk.*`) after
timm's own EVA conversion (`timm.models.eva.checkpoint_filter_fn`, which strips the `visual.`
prefix); open_clip-format files of the same models load as they are.

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


def tag_preprocess(model: str, tag: str) -> dict[str, Any]:
    """`create_model_and_transforms` kwargs for the image preprocessing of open_clip's pretrained
    tag `tag` of `model`, read from open_clip's own table (what `pretrained=<tag>` would merge)."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model, tag)
    if not cfg:
        raise InputError(f"open_clip has no pretrained tag {tag!r} for {model!r}; its tags: "
                         f"{open_clip.list_pretrained_tags_by_model(model)}")
    return {"image_mean": cfg.get("mean"), "image_std": cfg.get("std"),
            "image_interpolation": cfg.get("interpolation"), "image_resize_mode": cfg.get("resize_mode")}


def _unwrap(state: Any) -> Any:
    """The tensors of a checkpoint as EVA-CLIP's `load_state_dict` finds them: the first of
    `model` / `module` / `state_dict`, a `module.` prefix stripped."""
    if isinstance(state, dict):
        state = next((state[k] for k in ("model", "module", "state_dict") if isinstance(state.get(k), dict)), state)
    if isinstance(state, dict) and state and str(next(iter(state))).startswith("module."):
        state = {str(k).removeprefix("module."): v for k, v in state.items()}
    return state


def eva_clip_state(path: Path) -> dict[str, torch.Tensor] | None:
    """The state dict of `path` if it is in EVA-CLIP's own layout (`visual.pos_embed`, no
    `visual.trunk.*`), memory-mapped; None for any other file (open_clip's loader takes those).
    Only the key names are read here: `torch.load(mmap=True)` leaves the tensors on disk."""
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open
            from safetensors.torch import load_file

            with safe_open(str(path), "pt") as f:
                keys = list(f.keys())
            state = load_file(str(path)) if "visual.pos_embed" in keys else None
        else:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not mappable (legacy pickle, .npz, TorchScript): open_clip's loader decides
        return None
    state = _unwrap(state)
    if not isinstance(state, dict) or "visual.pos_embed" not in state or \
            any(isinstance(k, str) and k.startswith("visual.trunk.") for k in state):
        return None
    return state


def eva_clip_to_open_clip(state: dict[str, torch.Tensor], net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """EVA-CLIP's keys → open_clip's timm-trunk keys: the `visual.*` tensors go through timm's EVA
    checkpoint filter (prefix `visual.` stripped, rope buffers dropped, timm's renames and
    patch/position-embedding resampling), then under `visual.trunk.`; the text tower and
    `logit_scale` already share open_clip's names."""
    from timm.models.eva import checkpoint_filter_fn

    if "text.logit_scale" in state and "logit_scale" not in state:  # as EVA-CLIP's load_checkpoint
        state = {("logit_scale" if k == "text.logit_scale" else k): v for k, v in state.items()}
    visual = {k: v for k, v in state.items() if k.startswith("visual.")}
    trunk = checkpoint_filter_fn(visual, net.visual.trunk)
    return {**{k: v for k, v in state.items() if not k.startswith("visual.")},
            **{f"visual.trunk.{k}": v for k, v in trunk.items()}}


def _load(model: str, path: Path, device: str, preprocess: dict[str, Any]) -> tuple[torch.nn.Module, Any]:
    """The open_clip model with the weights of `path` (strict) and its inference image transform."""
    import open_clip
    from timm.models.eva import Eva

    eva_state = eva_clip_state(path)
    try:
        net, _, transform = open_clip.create_model_and_transforms(
            model, pretrained=None if eva_state is not None else str(path), pretrained_text=False, device=device,
            **preprocess)
        if eva_state is not None:
            if not isinstance(getattr(net.visual, "trunk", None), Eva):
                raise RuntimeError("the file is in EVA-CLIP's layout (visual.pos_embed, visual.blocks.*), which "
                                   "loads only into open_clip's timm EVA architectures (e.g. EVA02-E-14-plus)")
            net.load_state_dict(eva_clip_to_open_clip(eva_state, net), strict=True)
    except RuntimeError as exc:  # strict loading: missing / unexpected keys
        raise CheckpointError(f"{path}: does not match open_clip {model!r}: {exc}") from None
    return net, transform


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
    pretrained_tag: str | None = None,
) -> Expert:
    """An image-text expert from an open_clip architecture name and a local weights file; texts
    over the context are cut as `truncation` says, images are preprocessed as open_clip's
    pretrained tag `pretrained_tag` says (OpenAI defaults without one; see the module docstring)."""
    import open_clip

    path = Path(checkpoint)
    if not path.is_file():
        raise CheckpointError(f"open_clip {model!r}: no checkpoint file at {path} (download the weights for this "
                              f"architecture, e.g. open_clip_pytorch_model.bin, and give its path)")
    if model not in open_clip.list_models():
        raise InputError(f"open_clip has no model config {model!r}; see open_clip.list_models()")
    preprocess_kwargs = tag_preprocess(model, pretrained_tag) if pretrained_tag is not None else {}
    tokenize = _tokenizer(model, tokenizer, truncation)
    net, preprocess = _load(model, path, device, preprocess_kwargs)
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
    if pretrained_tag is not None and source == "open_clip":  # a variant's tag is part of the variant
        kwargs["pretrained_tag"] = pretrained_tag
    spec = ExpertSpec(source=source, kwargs=kwargs, checkpoint=str(path), sha256=sha256_file(path))
    encoders = {"image": torch.no_grad()(encode_image), "text": torch.no_grad()(encode_text)}
    return Expert(name or source, dim, encoders, spec=spec, batch_size=batch_size)


@EXPERTS.register("open_clip", modalities=("image", "text"), description="any open_clip architecture from a local weights file")
def open_clip_any(model: str, checkpoint: str, tokenizer: str | None = None, device: str = "cpu", batch_size: int = 64,
                  pretrained_tag: str | None = None) -> Expert:
    """`spacebind.create_expert("open_clip", model="ViT-B-32", checkpoint="...", pretrained_tag="laion2b_s34b_b79k")`;
    `pretrained_tag` (the tag the weights were published under) selects open_clip's image preprocessing for them."""
    return open_clip_expert(model, checkpoint, tokenizer=tokenizer, device=device, batch_size=batch_size,
                            pretrained_tag=pretrained_tag)


# The open_clip experts OmniBind and ULIP-2 use (architecture, output dim, what the file is, the
# open_clip pretrained tag of those weights: it decides the image preprocessing).
VARIANTS = {
    "eva02_clip_bige14_plus": ("EVA02-E-14-plus", 1024, "EVA02_CLIP_E_psz14_plus_s9B.pt (EVA-CLIP's file) or "
                               "open_clip's EVA02-E-14-plus laion2b_s9b_b144k open_clip_pytorch_model.bin",
                               "laion2b_s9b_b144k"),
    "dfn5b_clip_vit_h14": ("ViT-H-14-quickgelu", 1024, "DFN5B-CLIP-ViT-H-14 open_clip_pytorch_model.bin", "dfn5b"),
    "siglip_large_patch16_384": ("ViT-L-16-SigLIP-384", 1024,
                                 "ViT-L-16-SigLIP-384 open_clip_pytorch_model.bin + tokenizer dir", "webli"),
    "siglip_so400m_384": ("ViT-SO400M-14-SigLIP-384", 1152,
                          "ViT-SO400M-14-SigLIP-384 open_clip_pytorch_model.bin + tokenizer dir", "webli"),
    "openclip_vit_bigg14": ("ViT-bigG-14", 1280, "ViT-bigG-14 laion2b_s39b_b160k open_clip_pytorch_model.bin",
                            "laion2b_s39b_b160k"),
}


def _variant(registry_name: str, checkpoint: str, tokenizer: str | None = None, device: str = "cpu",
             batch_size: int = 64) -> Expert:
    model, _, _, tag = VARIANTS[registry_name]
    return open_clip_expert(model, checkpoint, name=registry_name, tokenizer=tokenizer, device=device,
                            batch_size=batch_size, source=registry_name, pretrained_tag=tag)


# the Hub licence id of each variant's weights, as their publishers give it
LICENCES = {"eva02_clip_bige14_plus": "mit", "dfn5b_clip_vit_h14": "apple-amlr", "siglip_large_patch16_384": "apache-2.0",
            "siglip_so400m_384": "apache-2.0", "openclip_vit_bigg14": "mit"}

for _name, (_model, _dim, _file, _tag) in VARIANTS.items():
    EXPERTS.register(_name, modalities=("image", "text"), dim=_dim, checkpoint=_file, licence=LICENCES[_name],
                     description=f"open_clip {_model}; needs checkpoint= {_file}")(partial(_variant, _name))
