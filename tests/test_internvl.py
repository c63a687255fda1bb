"""InternVL-C: a tiny snapshot in the official layout (config with auto_map + its own model code,
safetensors weights, CLIPImageProcessor config, LLaMA-style tokenizer), loaded from disk through
the wrapper. The tiny model code follows the official interface: `encode_image(pixels, mode)`
and `encode_text(ids)` reading the position before the padding (pad id 0)."""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from spacebind.errors import CheckpointError
from spacebind.experts.internvl import MAX_LENGTH, text_ids
from spacebind.experts.registry import EXPERTS

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

WORDS = ["summarize", ":", "a", "photo", "of", "red", "panda", "dog", "cat", "the"]
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # ImageNet, as the official preprocessor_config.json


def _tokenizer(vocab: dict[str, int]):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def make_snapshot(root: Path, broken_tokenizer: bool = False) -> Path:
    """Write a tiny InternVL-C snapshot with seeded weights."""
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
    model.config.qllama_config = {"vocab_size": 3 + len(WORDS)}
    model.save_pretrained(root)
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}, resample=3,
                       image_mean=MEAN, image_std=STD, do_convert_rgb=True).save_pretrained(root)
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    _tokenizer({"<unk>": 0, "<s>": 1, "</s>": 2} if broken_tokenizer else vocab).save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> Path:
    return make_snapshot(tmp_path_factory.mktemp("internvl") / "tiny_internvl_snapshot")


def test_remote_code_needs_explicit_consent(snapshot: Path) -> None:
    with pytest.raises(CheckpointError, match=r"modeling_tiny_internvl\.py.*trust_remote_code=True"):
        EXPERTS.create("internvl_c", checkpoint=str(snapshot))
    with pytest.raises(CheckpointError, match="no config.json"):
        EXPERTS.create("internvl_c", checkpoint=str(snapshot / "nowhere"), trust_remote_code=True)


def expert_tokenizer(snapshot: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(snapshot), local_files_only=True)


def test_text_ids_follow_the_official_recipe(snapshot: Path) -> None:
    ids = text_ids(expert_tokenizer(snapshot), ["a red panda", " ".join(["dog"] * 200)])
    assert ids.shape == (2, MAX_LENGTH)
    # bos, "summarize" ":" "a" "red" "panda", eos, then pad id 0
    assert ids[0, :8].tolist() == [1, 3, 4, 5, 8, 9, 2, 0] and not ids[0, 8:].any()
    assert ids[1, 0] == 1 and ids[1, -1] == 2 and (ids[1] > 0).all()  # truncated, eos kept


def test_loads_encodes_and_matches_the_model(snapshot: Path, tmp_path: Path) -> None:
    from transformers import AutoModel, CLIPImageProcessor

    expert = EXPERTS.create("internvl_c", checkpoint=str(snapshot), trust_remote_code=True)
    assert expert.dim == 8 and expert.modalities == ("text", "image") and len(expert.spec.sha256) == 64
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 240, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "x.png")
    got_img = expert.encode("image", [tmp_path / "x.png"])
    got_txt = expert.encode("text", ["a photo of a red panda", "the cat"])
    assert got_txt.shape == (2, 8)
    torch.testing.assert_close(got_txt.norm(dim=-1), torch.ones(2))

    model = AutoModel.from_pretrained(str(snapshot), trust_remote_code=True, local_files_only=True).eval()
    # the official constants, applied by hand: shortest edge 224 (bicubic), centre crop 224, ImageNet mean/std
    w, h = 224, round(300 * 224 / 240)
    resized = np.asarray(Image.fromarray(image).resize((w, h), Image.BICUBIC), dtype=np.float32) / 255.0
    top = (h - 224) // 2
    pixels = torch.from_numpy((resized[top:top + 224] - MEAN) / STD).permute(2, 0, 1)[None].float()
    processed = CLIPImageProcessor.from_pretrained(str(snapshot))(images=[image], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(processed, pixels, atol=2e-2, rtol=0)  # PIL vs processor rounding
    with torch.no_grad():
        want_img = F.normalize(model.encode_image(processed, mode="InternVL-C"), dim=-1)
        want_txt = F.normalize(model.encode_text(text_ids(expert_tokenizer(snapshot), ["the cat"])), dim=-1)
    torch.testing.assert_close(got_txt[1:], want_txt, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_img, want_img, atol=1e-5, rtol=0)
    # golden: the seeded tiny model's first text embedding (computed once from this wrapper)
    torch.testing.assert_close(got_txt[0, :3], torch.tensor(GOLDEN_TEXT), atol=1e-4, rtol=0)
    again = EXPERTS.create("internvl_c", checkpoint=str(snapshot), trust_remote_code=True)
    torch.testing.assert_close(again.encode("text", ["a photo of a red panda"]), got_txt[:1], rtol=0, atol=0)


GOLDEN_TEXT = [0.2574, 0.2695, -0.1207]


def test_strict_weights_and_broken_tokenizer(snapshot: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for f in snapshot.iterdir():
        if f.is_file():
            (damaged / f.name).write_bytes(f.read_bytes())
    state = load_file(damaged / "model.safetensors")
    state.pop("clip_projector.bias")
    state["extra.weight"] = torch.zeros(2)
    save_file(state, damaged / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"missing keys: clip_projector\.bias.*unexpected keys: extra\.weight"):
        EXPERTS.create("internvl_c", checkpoint=str(damaged), trust_remote_code=True)

    broken = make_snapshot(tmp_path / "broken_snapshot", broken_tokenizer=True)
    with pytest.raises(CheckpointError, match="tokenizer loaded broken"):
        EXPERTS.create("internvl_c", checkpoint=str(broken), trust_remote_code=True)
