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

from spacebind.experts._imagebind_model import ImageBindConfig, ImageBindModel, Tower

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


# open_clip's EVA02-E-14-plus in small: a timm EVA trunk (`visual.trunk.*`) with EVA-CLIP's residual
# post-norm, a CLIP text tower (`text.*`, custom_text) as the real config has.
OPEN_CLIP_TINY_EVA_NAME = "spacebind-tiny-eva-clip"
OPEN_CLIP_TINY_EVA = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 28, "timm_model_name": "spacebind_tiny_eva02_clip", "timm_model_pretrained": False,
                   "timm_pool": "token", "timm_proj": None},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    "custom_text": True,
}


def spacebind_tiny_eva02_clip(pretrained: bool = False, **kwargs: Any) -> torch.nn.Module:
    """timm's eva02_enormous_patch14_clip_224 arguments, 32 wide, 2 blocks, 28 px (a timm entry point)."""
    from timm.models.eva import Eva

    kwargs = {k: v for k, v in kwargs.items() if not k.startswith("pretrained_cfg") and k != "cache_dir"}
    return Eva(**{**dict(img_size=28, patch_size=14, embed_dim=32, depth=2, num_heads=2, mlp_ratio=15360 / 1792,
                         use_post_norm=True, global_pool="token"), **kwargs})


def to_eva_clip_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An open_clip EVA state dict in EVA-CLIP's own key layout (EVA02_CLIP_E_psz14_plus_s9B.pt):
    `visual.trunk.*` → `visual.*` (/tmp/review/experts/eva_keys.py: with EVA-CLIP's CustomCLIP for
    EVA02-CLIP-bigE-14-plus, this is the only difference between the two key sets)."""
    return {("visual." + k.removeprefix("visual.trunk.") if k.startswith("visual.trunk.") else k): v
            for k, v in state.items()}


def open_clip_eva_checkpoint(root: Path, layout: str = "eva_clip") -> tuple[Path, torch.nn.Module]:
    """The tiny EVA CLIP registered as `spacebind-tiny-eva-clip`, saved as a plain state dict in
    EVA-CLIP's layout (`layout="eva_clip"`, as EVA02_CLIP_E_psz14_plus_s9B.pt) or open_clip's."""
    import open_clip
    from timm.models import is_model, register_model

    if not is_model("spacebind_tiny_eva02_clip"):
        register_model(spacebind_tiny_eva02_clip)
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{OPEN_CLIP_TINY_EVA_NAME}.json").write_text(json.dumps(OPEN_CLIP_TINY_EVA))
    open_clip.add_model_config(root)
    torch.manual_seed(0)
    model = open_clip.create_model(OPEN_CLIP_TINY_EVA_NAME).eval()
    state = model.state_dict()
    path = root / ("EVA02_CLIP_E_psz14_plus_s9B.pt" if layout == "eva_clip" else "open_clip_pytorch_model.bin")
    torch.save(to_eva_clip_layout(state) if layout == "eva_clip" else state, path)
    return path, model


def tiny_open_clip_variant(name: str, monkeypatch: pytest.MonkeyPatch, arch: str = OPEN_CLIP_TINY_NAME) -> None:
    """Make the registered open_clip variant `name` build the tiny architecture `arch`, keeping its
    pretrained tag: open_clip's table gets `arch` → {tag: the real architecture's entry for tag}."""
    from open_clip import pretrained

    from spacebind.experts import open_clip_family

    real, dim, file, tag = open_clip_family.VARIANTS[name]
    monkeypatch.setitem(open_clip_family.VARIANTS, name, (arch, dim, file, tag))
    monkeypatch.setitem(pretrained._PRETRAINED, arch, {**pretrained._PRETRAINED.get(arch, {}),
                                                       tag: pretrained.get_pretrained_cfg(real, tag)})


def dinov2_directory(root: Path, registers: int = 0) -> tuple[Path, torch.nn.Module]:
    """A tiny DINOv2 (with `registers` register tokens: DINOv2-with-registers) saved with
    save_pretrained, with its image processor config."""
    from transformers import (
        BitImageProcessor,
        Dinov2Config,
        Dinov2Model,
        Dinov2WithRegistersConfig,
        Dinov2WithRegistersModel,
    )

    torch.manual_seed(0)
    sizes = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32,
                 patch_size=8)
    model = (Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**sizes, num_register_tokens=registers)) if registers
             else Dinov2Model(Dinov2Config(**sizes))).eval()
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


def write_remote_code(root: Path, modules: dict[str, str], model_module: str) -> Any:
    """Write a snapshot's model code files into a new `root` and import `model_module` from them
    (as the package `root.name`, so relative imports between the files work)."""
    import importlib
    import sys

    root.mkdir(parents=True)
    for module, code in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(code))
    sys.path.insert(0, str(root.parent))
    try:
        return importlib.import_module(f"{root.name}.{model_module}")
    finally:
        sys.path.remove(str(root.parent))


def internvl_snapshot(root: Path, broken_tokenizer: bool = False) -> Path:
    """A tiny InternVL-C snapshot in the official layout, with seeded weights; its model code
    follows the official interface (`encode_image(pixels, mode)`, `encode_text(ids)` reading the
    position before the padding, pad id 0)."""
    from transformers import CLIPImageProcessor

    package = write_remote_code(root, {"configuration_tiny_internvl": CONFIG_CODE,
                                       "modeling_tiny_internvl": MODEL_CODE}, "modeling_tiny_internvl")
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


IMAGEBIND_TINY = ImageBindConfig(out_dim=8, **{m: Tower(16, 1, 2) for m in ("vision", "text", "audio", "depth",
                                                                              "thermal", "imu")})


def imagebind_checkpoint(root: Path) -> tuple[Path, torch.nn.Module]:
    """A tiny ImageBind (every tower 16 wide, 1 block) saved as a plain state dict, as imagebind_huge.pth."""
    torch.manual_seed(0)
    model = ImageBindModel(IMAGEBIND_TINY).eval()
    root.mkdir(parents=True, exist_ok=True)
    path = root / "imagebind_huge.pth"
    torch.save(model.state_dict(), path)
    return path, model


POINTS_SMALL = {"npoints": 256, "num_group": 16, "group_size": 8, "encoder_dim": 32}
UNI3D_TINY = {**POINTS_SMALL, "trunk_kwargs": {"depth": 2, "embed_dim": 32, "num_heads": 2, "img_size": 28}}
ULIP2_TINY = {**POINTS_SMALL, "width": 32, "depth": 2, "heads": 2}


def seeded_state(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Every float tensor of the state random (BatchNorm variances positive), from a fixed seed."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in module.state_dict().items():
        if v.is_floating_point():
            v = torch.randn(v.shape, generator=gen) * 0.2
            v = v.abs() + 0.5 if k.endswith("running_var") else v
        state[k] = v
    module.load_state_dict(state)
    return state


def uni3d_checkpoint(root: Path, size: str = "tiny") -> tuple[Path, torch.nn.Module]:
    """A tiny Uni3D on the trunk of `size`, in DeepSpeed's model-states layout with `module.` prefixes."""
    from collections import OrderedDict

    from spacebind.experts._uni3d_model import SIZES, Uni3D, Uni3DConfig

    model = Uni3D(Uni3DConfig(trunk=SIZES[size][0], embed_dim=OPEN_CLIP_TINY["embed_dim"], **UNI3D_TINY)).eval()
    state = seeded_state(model, 1)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "model.pt"
    torch.save({"module": OrderedDict((f"module.{k}", v) for k, v in state.items()),
                "buffer_names": [k for k in state if "running" in k or "num_batches" in k], "optimizer": None,
                "param_shapes": [OrderedDict((k, v.shape) for k, v in state.items())], "global_steps": 7,
                "dp_world_size": 8, "ds_version": "0.10.3", "epoch": 3, "best_acc1": 0.5}, path)
    return path, model


def ulip2_checkpoint(root: Path) -> tuple[Path, torch.nn.Module]:
    """A tiny ULIP-2 PointBERT in the training-checkpoint layout: `state_dict` with `module.`
    prefixes (and the CLIP tower the training module held), optimizer, scaler, an argparse Namespace."""
    import argparse
    from collections import OrderedDict

    from spacebind.experts._pointbert import PointBertConfig
    from spacebind.experts.ulip2 import Ulip2

    model = Ulip2(PointBertConfig(**ULIP2_TINY), OPEN_CLIP_TINY["embed_dim"]).eval()
    state = seeded_state(model, 2)
    saved = OrderedDict((f"module.{k}", v) for k, v in state.items())
    saved["module.open_clip_model.visual.proj"] = torch.zeros(4, 16)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "ULIP-2-PointBERT-10k-colored-pc-pretrained.pt"
    args = argparse.Namespace(model="ULIP2_PointBERT_Colored", npoints=10000, lr=3e-3, evaluate_3d=False, gpu=None)
    torch.save({"epoch": 50, "state_dict": saved, "optimizer": {"state": {}, "param_groups": [{"lr": 3e-3, "params": [0]}]},
                "scaler": {"scale": 65536.0}, "best_acc1": 50.0, "args": args}, path)
    return path, model


def _point_expert(name: str) -> Callable[[Path, pytest.MonkeyPatch], dict[str, Any]]:
    def build(root: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
        clip, _ = open_clip_checkpoint(root / "clip")
        if name == "ulip2_pointbert":
            path, config = ulip2_checkpoint(root / "ulip2")[0], ULIP2_TINY
        else:
            path, config = uni3d_checkpoint(root / "uni3d", name.removeprefix("uni3d_"))[0], UNI3D_TINY
        return {"checkpoint": str(path), "clip_checkpoint": str(clip), "clip_model": OPEN_CLIP_TINY_NAME,
                "config": config}

    return build


def _imagebind(root: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    return {"checkpoint": str(imagebind_checkpoint(root)[0]), "config": IMAGEBIND_TINY.to_json()}


def _from_test_module(module: str, attribute: str, *args: Any) -> Callable[[Path, pytest.MonkeyPatch], dict[str, Any]]:
    """A builder kept beside its family's tests (the CLAP files need their tokenizer helpers)."""
    def build(root: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
        import importlib

        builder = getattr(importlib.import_module(module), attribute)
        return (builder(*args) if args else builder)(root, monkeypatch)

    return build


def _open_clip_variant(name: str) -> Callable[[Path, pytest.MonkeyPatch], dict[str, Any]]:
    def build(root: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
        if name == "eva02_clip_bige14_plus":  # EVA-CLIP's own file layout, as the OmniBind recipes name
            path, _ = open_clip_eva_checkpoint(root)
            tiny_open_clip_variant(name, monkeypatch, OPEN_CLIP_TINY_EVA_NAME)
        else:
            path, _ = open_clip_checkpoint(root)
            tiny_open_clip_variant(name, monkeypatch)
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
    "eva_clip_18b": _from_test_module("tiny_eva_clip", "eva_clip_builder"),
    "imagebind_huge": _imagebind,
    **{name: _point_expert(name) for name in ("uni3d_tiny", "uni3d_small", "uni3d_base", "uni3d_large",
                                               "uni3d_giant", "ulip2_pointbert")},
    **{name: _from_test_module("test_clap", "clap_builder", name) for name in ("clap_general.fusion",
                                                                              "clap_general.nofusion", "clap_music")},
    "wavcaps": _from_test_module("test_clap", "wavcaps_builder"),
    "dinov2": lambda root, mp: {"path": str(dinov2_directory(root)[0])},
    "minilm": lambda root, mp: {},
    "sentence_encoder": lambda root, mp: {"path": _minilm_path()},
    # the world experts are small already; they train once and are cached under $SPACEBIND_HOME
    **{name: (lambda root, mp: {}) for name in ("world_unified", "world_image_text", "world_audio_text",
                                                "world_audio_text_even", "world_audio_text_odd",
                                                "world_point_text", "world_image", "world_sensor")},
    "adapted": lambda root, mp: {"expert": "world_image"},  # an image encoder with thermal/event/video adapters
}
