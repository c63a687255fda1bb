"""EVA-CLIP-18B: a tiny snapshot in the official layout (config with auto_map + its own model code,
sharded pytorch_model.bin weights, the real CLIP BPE tokenizer files, no preprocessor config),
loaded from disk through the expert."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from tiny_eva_clip import eva_clip_snapshot

from spacebind.errors import CheckpointError, InputError
from spacebind.experts.eva_clip_18b import MAX_LENGTH, image_processor, text_ids
from spacebind.experts.registry import EXPERTS

TEXTS = ["a photo of a red panda", "The CAT's toy, isn't it?", "hello   world!!  naïve café", " ".join(["dog"] * 100)]


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory, one_thread) -> Path:
    return eva_clip_snapshot(tmp_path_factory.mktemp("eva") / "tiny_eva_clip_snapshot")


def _tokenizer(snapshot: Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(snapshot), local_files_only=True)


def test_remote_code_needs_explicit_consent(snapshot: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"configuration_tiny_evaclip\.py, modeling_tiny_evaclip\.py\).*"
                                              r"name: eva_clip_18b.*trust_remote_code: true"):
        EXPERTS.create("eva_clip_18b", checkpoint=str(snapshot))
    with pytest.raises(CheckpointError, match="no config.json.*BAAI/EVA-CLIP-18B"):
        EXPERTS.create("eva_clip_18b", checkpoint=str(snapshot / "nowhere"), trust_remote_code=True)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="holds no weights"):
        EXPERTS.create("eva_clip_18b", checkpoint=str(tmp_path), trust_remote_code=True)
    with pytest.raises(CheckpointError, match="dtype 'int8'"):
        EXPERTS.create("eva_clip_18b", checkpoint=str(snapshot), trust_remote_code=True, dtype="int8")


def test_text_ids_equal_open_clip_tokenize(snapshot: Path) -> None:
    ids = text_ids(_tokenizer(snapshot), TEXTS)
    want = open_clip.tokenize(TEXTS)  # [4, 77], padded with 0
    assert ids.shape == (4, MAX_LENGTH)  # the 100-word text is truncated to 77, eot kept
    real = want != 0
    assert torch.equal(ids[real], want[real])
    assert (ids[~real] == 49407).all()  # padded with <|endoftext|>
    assert ids[0, :8].tolist() == [49406, 320, 1125, 539, 320, 736, 12952, 49407]
    assert ids[3, -1] == 49407 and ids[3, -2] == ids[3, 1]  # truncated: eot at the last position
    short = text_ids(_tokenizer(snapshot), TEXTS, max_length=42)  # OmniBind's expert cuts at 42
    assert short.shape == (4, 42) and short[3, -1] == 49407 and torch.equal(short[3, :41], ids[3, :41])
    with pytest.raises(InputError, match="max_length 100: expected 2 to 77"):
        EXPERTS.create("eva_clip_18b", checkpoint=str(snapshot), trust_remote_code=True, max_length=100)


def test_pixels_follow_the_openai_clip_constants() -> None:
    mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    image = np.random.default_rng(0).integers(0, 256, (300, 240, 3), dtype=np.uint8)
    got = image_processor()(images=[image], return_tensors="pt")["pixel_values"]
    # open_clip's ViT-L-14 eval transform: resize shortest edge 224 (bicubic), centre crop, normalise
    transform = open_clip.image_transform(224, is_train=False, mean=mean, std=std)
    want = transform(Image.fromarray(image))[None]
    assert got.shape == want.shape == (1, 3, 224, 224)
    torch.testing.assert_close(got, want, atol=2e-2, rtol=0)  # measured max |diff| 0.0150: one uint8 step (1/255 / std)
    # by hand, as the constants say
    resized = np.asarray(Image.fromarray(image).resize((224, 280), Image.BICUBIC), dtype=np.float32) / 255.0
    manual = (resized[28:252] - np.array(mean)) / np.array(std)
    torch.testing.assert_close(got, torch.from_numpy(manual).permute(2, 0, 1)[None].float(), atol=2e-2, rtol=0)


def test_loads_encodes_unit_vectors_matching_the_model(snapshot: Path) -> None:
    from transformers import AutoModel

    expert = EXPERTS.create("eva_clip_18b", checkpoint=str(snapshot), trust_remote_code=True)
    assert expert.dim == 8 and set(expert.modalities) == {"image", "text"}
    assert expert.spec.checkpoint.endswith("pytorch_model.bin.index.json") and len(expert.spec.sha256) == 64
    assert expert.spec.kwargs == {"checkpoint": str(snapshot), "trust_remote_code": True, "dtype": "float32"}
    images = [np.random.default_rng(i).integers(0, 256, (300 - 40 * i, 240, 3), dtype=np.uint8) for i in range(2)]
    got_txt, got_img = expert.encode("text", TEXTS), expert.encode("image", images)
    torch.testing.assert_close(got_txt.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(got_img.norm(dim=-1), torch.ones(2))

    model = AutoModel.from_pretrained(str(snapshot), trust_remote_code=True, local_files_only=True).eval()
    pixels = image_processor()(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        want_img = F.normalize(model.encode_image(pixels), dim=-1)
        want_txt = F.normalize(model.encode_text(open_clip.tokenize(TEXTS)), dim=-1)
    torch.testing.assert_close(got_img, want_img, atol=1e-5, rtol=0)
    # open_clip's ids, padded with 0 instead of eot: the causal model reads the eot position, so equal
    torch.testing.assert_close(got_txt, want_txt, atol=1e-5, rtol=0)
    # golden: the seeded tiny model's first text embedding (computed once from this expert)
    torch.testing.assert_close(got_txt[0, :3], torch.tensor(GOLDEN_TEXT), atol=1e-4, rtol=0)
    again = EXPERTS.create("eva_clip_18b", checkpoint=str(snapshot), trust_remote_code=True)
    torch.testing.assert_close(again.encode("text", TEXTS), got_txt, rtol=0, atol=0)
    torch.testing.assert_close(again.encode("image", images), got_img, rtol=0, atol=0)


GOLDEN_TEXT = [0.4360, 0.1870, 0.5620]


def test_strict_weights(snapshot: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged"
    shutil.copytree(snapshot, damaged)
    index = json.loads((damaged / "pytorch_model.bin.index.json").read_text())
    shard = damaged / index["weight_map"].pop("text_projection.weight")
    state = torch.load(shard, weights_only=True)
    state.pop("text_projection.weight")
    torch.save(state, shard)
    (damaged / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"EVA-CLIP-18B: .*pytorch_model\.bin\.index\.json does not match "
                                              r"the model code \(missing keys: text_projection\.weight\)"):
        EXPERTS.create("eva_clip_18b", checkpoint=str(damaged), trust_remote_code=True)
