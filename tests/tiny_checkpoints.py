"""Tiny checkpoints in the official file formats, with seeded random weights: one builder per
registered expert (`BUILDERS[name](root, monkeypatch)` → the kwargs for `EXPERTS.create`)."""
from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

OPEN_CLIP_TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
OPEN_CLIP_TINY_NAME = "spacebind-tiny-clip"
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def open_clip_checkpoint(root: Path) -> tuple[Path, torch.nn.Module]:
    """A tiny open_clip model registered as `spacebind-tiny-clip`, saved as a plain state dict."""
    import open_clip

    root.mkdir(parents=True, exist_ok=True)
    (root / f"{OPEN_CLIP_TINY_NAME}.json").write_text(json.dumps(OPEN_CLIP_TINY))
    open_clip.add_model_config(root)
    torch.manual_seed(0)
    model = open_clip.create_model(OPEN_CLIP_TINY_NAME).eval()
    path = root / "open_clip_pytorch_model.bin"
    torch.save(model.state_dict(), path)
    return path, model


def dinov2_directory(root: Path) -> tuple[Path, torch.nn.Module]:
    """A tiny DINOv2 saved with save_pretrained, with its image processor config."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                          image_size=32, patch_size=8)
    model = Dinov2Model(config).eval()
    model.save_pretrained(root)
    BitImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32},
                      image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD).save_pretrained(root)
    return root, model


CONFIG_CODE = '''
from transformers import PretrainedConfig

class TinyInternVLConfig(PretrainedConfig):
    model_type = "tiny_internvl"

    def __init__(self, clip_embed_dim=8, width=12, vocab_size=32, patch=56, **kwargs):
        super().__init__(**kwargs)
        self.clip_embed_dim, self.width, self.vocab_size, self.patch = clip_embed_dim, width, vocab_size, patch
'''

MODEL_CODE = '''
import torch
from torch import nn
from transformers import PreTrainedModel
from .configuration_tiny_internvl import TinyInternVLConfig

class TinyInternVLModel(PreTrainedModel):
    config_class = TinyInternVLConfig

    def __init__(self, config):
        super().__init__(config)
        self.patch_embed = nn.Conv2d(3, config.width, config.patch, config.patch)
        self.clip_projector = nn.Linear(config.width, config.clip_embed_dim)
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.width)
        self.text_projection = nn.Parameter(torch.randn(config.width, config.clip_embed_dim))
        self.post_init()

    def encode_image(self, image, mode):
        assert mode == "InternVL-C"
        return self.clip_projector(self.patch_embed(image).flatten(2).mean(-1))

    def encode_text(self, text):
        attention_mask = text > 0
        hidden = self.tok_embeddings(text).cumsum(1)  # causal: position i sees tokens <= i
        last = hidden[torch.arange(len(text)), attention_mask.sum(1) - 1]
        return last @ self.text_projection
'''

INTERNVL_WORDS = ["summarize", ":", "a", "photo", "of", "red", "panda", "dog", "cat", "the"]

def _tokenizer(vocab: dict[str, int]):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def internvl_snapshot(root: Path, broken_tokenizer: bool = False) -> Path:
    """A tiny InternVL-C snapshot in the official layout, with seeded weights; its model code
    follows the official interface (`encode_image(pixels, mode)`, `encode_text(ids)` reading the
    position before the padding, pad id 0)."""
    import importlib
    import sys

    from transformers import CLIPImageProcessor

    root.mkdir(parents=True)
    (root / "configuration_tiny_internvl.py").write_text(textwrap.dedent(CONFIG_CODE))
    (root / "modeling_tiny_internvl.py").write_text(textwrap.dedent(MODEL_CODE))
    sys.path.insert(0, str(root.parent))
    try:
        package = importlib.import_module(f"{root.name}.modeling_tiny_internvl")
    finally:
        sys.path.remove(str(root.parent))
    torch.manual_seed(0)
    model = package.TinyInternVLModel(package.TinyInternVLConfig())
    model.config.auto_map = {"AutoConfig": "configuration_tiny_internvl.TinyInternVLConfig",
                             "AutoModel": "modeling_tiny_internvl.TinyInternVLModel"}
    model.config.qllama_config = {"vocab_size": 3 + len(INTERNVL_WORDS)}
    model.save_pretrained(root)
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}, resample=3,
                       image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD, do_convert_rgb=True).save_pretrained(root)
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(INTERNVL_WORDS)}}
    _tokenizer({"<unk>": 0, "<s>": 1, "</s>": 2} if broken_tokenizer else vocab).save_pretrained(root)
    return root


def _open_clip_variant(name: str) -> Callable[[Path, pytest.MonkeyPatch], dict[str, Any]]:
    def build(root: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
        from spacebind.experts import open_clip_family

        path, _ = open_clip_checkpoint(root)
        _, dim, file = open_clip_family.VARIANTS[name]
        monkeypatch.setitem(open_clip_family.VARIANTS, name, (OPEN_CLIP_TINY_NAME, dim, file))
        return {"checkpoint": str(path)}

    return build


def _minilm_path() -> str:
    from spacebind.experts.minilm import minilm_path

    return str(minilm_path())


BUILDERS: dict[str, Callable[[Path, pytest.MonkeyPatch], dict[str, Any]]] = {
    "open_clip": lambda root, mp: {"model": OPEN_CLIP_TINY_NAME, "checkpoint": str(open_clip_checkpoint(root)[0])},
    **{name: _open_clip_variant(name) for name in ("eva02_clip_bige14_plus", "dfn5b_clip_vit_h14",
                                                    "siglip_large_patch16_384", "siglip_so400m_384",
                                                    "openclip_vit_bigg14")},
    "internvl_c": lambda root, mp: {"checkpoint": str(internvl_snapshot(root / "tiny_internvl")),
                                    "trust_remote_code": True},
    "dinov2": lambda root, mp: {"path": str(dinov2_directory(root)[0])},
    "minilm": lambda root, mp: {},
    "sentence_encoder": lambda root, mp: {"path": _minilm_path()},
    # the world experts are small already; they train once and are cached under $SPACEBIND_HOME
    **{name: (lambda root, mp: {}) for name in ("world_unified", "world_image_text", "world_audio_text",
                                                "world_point_text")},
}
