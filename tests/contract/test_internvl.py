"""InternVL-C: a tiny snapshot in the official layout (config with auto_map + its own model code,
safetensors weights, CLIPImageProcessor config, LLaMA-style tokenizer), loaded from disk through
the wrapper. The tiny model code follows the official interface: `encode_image(pixels, mode)`
and `encode_text(ids)` reading the position before the padding (pad id 0)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from tiny_checkpoints import IMAGENET_MEAN as MEAN
from tiny_checkpoints import IMAGENET_STD as STD
from tiny_checkpoints import internvl_snapshot

from spacebind.errors import CheckpointError
from spacebind.experts.internvl import MAX_LENGTH, text_ids
from spacebind.experts.registry import EXPERTS


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> Path:
    return internvl_snapshot(tmp_path_factory.mktemp("internvl") / "tiny_internvl_snapshot")


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

    broken = internvl_snapshot(tmp_path / "broken_snapshot", broken_tokenizer=True)
    with pytest.raises(CheckpointError, match="tokenizer loaded broken"):
        EXPERTS.create("internvl_c", checkpoint=str(broken), trust_remote_code=True)


def test_text_ids_are_right_padded_whatever_the_tokenizer_pads(snapshot: Path, tmp_path: Path) -> None:
    """`encode_text` reads position `(ids > 0).sum(1) - 1`, so ids must be right-padded; transformers
    5 loads LLaMA tokenizers padding on the left, and the wrapper builds the ids itself."""
    from transformers import AutoModel

    left = tmp_path / "left_padding"
    left.mkdir()
    for f in snapshot.iterdir():
        if f.is_file():
            (left / f.name).write_bytes(f.read_bytes())
    config = json.loads((left / "tokenizer_config.json").read_text())
    (left / "tokenizer_config.json").write_text(json.dumps({**config, "padding_side": "left"}))
    tokenizer = expert_tokenizer(left)  # what the expert loads from `left`
    assert tokenizer.padding_side == "left"

    texts = ["the cat", "a photo of a red panda", "dog"]
    ids = text_ids(tokenizer, texts)
    lengths = (ids > 0).sum(1)
    assert lengths.tolist() == [6, 10, 5]  # bos, "summarize", ":", the words, eos
    for row, n in zip(ids, lengths.tolist()):
        assert (row[:n] > 0).all() and not row[n:].any() and row[n - 1] == tokenizer.eos_token_id

    expert = EXPERTS.create("internvl_c", checkpoint=str(left), trust_remote_code=True)
    batch = expert.encode("text", texts)
    alone = torch.cat([expert.encode("text", [t]) for t in texts])
    torch.testing.assert_close(batch, alone, rtol=0, atol=1e-6)

    # the same ids padded on the left read the wrong position: the check above would catch it
    model = AutoModel.from_pretrained(str(left), trust_remote_code=True, local_files_only=True).eval()
    left_ids = torch.stack([row.roll(MAX_LENGTH - n) for row, n in zip(ids, lengths.tolist())])
    with torch.no_grad():
        wrong = F.normalize(model.encode_text(left_ids), dim=-1)
    assert not torch.allclose(wrong, alone, atol=1e-3)
