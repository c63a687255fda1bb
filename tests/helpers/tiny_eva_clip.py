"""A tiny EVA-CLIP-18B snapshot in the official layout: config.json with auto_map and its own model
code, sharded `pytorch_model.bin` weights with their index, and the real CLIP BPE tokenizer files
(vocab.json, merges.txt) derived from open_clip's bundled vocabulary. No preprocessor config, as
the official snapshot. The model code follows the official interface: `encode_image(pixels)` and a
causal `encode_text(ids)` reading the `<|endoftext|>` position (the largest id, as CLIP)."""
from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_checkpoints import write_remote_code

CONFIG_CODE = '''
from transformers import PretrainedConfig

class TinyEvaCLIPConfig(PretrainedConfig):
    model_type = "tiny_evaclip"

    def __init__(self, projection_dim=8, text_width=6, vision_width=12, vocab_size=49408,
                 max_position_embeddings=77, patch=56, **kwargs):
        super().__init__(**kwargs)
        self.projection_dim, self.text_width, self.vision_width = projection_dim, text_width, vision_width
        self.vocab_size, self.max_position_embeddings, self.patch = vocab_size, max_position_embeddings, patch
'''

MODEL_CODE = '''
import torch
from torch import nn
from transformers import PreTrainedModel
from .configuration_tiny_evaclip import TinyEvaCLIPConfig

class TinyEvaCLIPModel(PreTrainedModel):
    config_class = TinyEvaCLIPConfig

    def __init__(self, config):
        super().__init__(config)
        self.patch_embed = nn.Conv2d(3, config.vision_width, config.patch, config.patch)
        self.visual_projection = nn.Linear(config.vision_width, config.projection_dim)
        self.token_embedding = nn.Embedding(config.vocab_size, config.text_width)
        self.position_embedding = nn.Parameter(torch.randn(config.max_position_embeddings, config.text_width))
        self.text_projection = nn.Linear(config.text_width, config.projection_dim, bias=False)
        self.post_init()

    def encode_image(self, pixel_values):
        assert pixel_values.shape[-2:] == (224, 224)
        return self.visual_projection(self.patch_embed(pixel_values).flatten(2).mean(-1))

    def encode_text(self, input_ids):
        x = self.token_embedding(input_ids) + self.position_embedding[:input_ids.shape[1]]
        hidden = torch.tanh(x).cumsum(1)  # causal: position i sees tokens <= i
        return self.text_projection(hidden[torch.arange(len(input_ids)), input_ids.argmax(-1)])
'''

TOKENIZER_CONFIG = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
                    "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                    "pad_token": "<|endoftext|>", "errors": "replace"}


def clip_bpe_files(root: Path) -> None:
    """vocab.json and merges.txt of the CLIP BPE (49,408 tokens), built from open_clip's
    bpe_simple_vocab_16e6.txt.gz as its SimpleTokenizer builds its encoder."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    pairs = [tuple(line.split()) for line in merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(pair) for pair in pairs]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (root / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    (root / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(pair) for pair in pairs) + "\n")


def eva_clip_snapshot(root: Path) -> Path:
    """The tiny snapshot, seeded weights in two shards (the token embedding alone in the first)."""
    package = write_remote_code(root, {"configuration_tiny_evaclip": CONFIG_CODE,
                                       "modeling_tiny_evaclip": MODEL_CODE}, "modeling_tiny_evaclip")
    torch.manual_seed(0)
    model = package.TinyEvaCLIPModel(package.TinyEvaCLIPConfig())
    model.config.auto_map = {"AutoConfig": "configuration_tiny_evaclip.TinyEvaCLIPConfig",
                             "AutoModel": "modeling_tiny_evaclip.TinyEvaCLIPModel"}
    model.config.save_pretrained(root)
    config = json.loads((root / "config.json").read_text())
    config["text_config"] = {"vocab_size": 49408, "max_position_embeddings": 77}  # as the official config
    (root / "config.json").write_text(json.dumps(config, indent=2))
    state = model.state_dict()
    shards = [{k: v for k, v in state.items() if k.startswith("token_embedding")},
              {k: v for k, v in state.items() if not k.startswith("token_embedding")}]
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        name = f"pytorch_model-{i:05d}-of-{len(shards):05d}.bin"
        torch.save(shard, root / name)
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(v.numel() * v.element_size() for v in state.values())
    (root / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                   "weight_map": weight_map}, indent=2))
    clip_bpe_files(root)
    (root / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2))
    (root / "special_tokens_map.json").write_text(json.dumps({k: TOKENIZER_CONFIG[k] for k in (
        "bos_token", "eos_token", "unk_token", "pad_token")}, indent=2))
    return root


def eva_clip_builder(root: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The registry builder: kwargs for `EXPERTS.create("eva_clip_18b", ...)`."""
    return {"checkpoint": str(eva_clip_snapshot(root / "tiny_eva_clip_18b")), "trust_remote_code": True}
