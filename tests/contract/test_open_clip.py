"""open_clip experts: a tiny architecture with seeded random weights, saved as a plain state dict
(the official file format), loaded through the wrapper from disk."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_checkpoints import open_clip_checkpoint

from spacebind.errors import CheckpointError
from spacebind.experts.open_clip_family import _tokenizer
from spacebind.experts.registry import EXPERTS


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    return open_clip_checkpoint(tmp_path_factory.mktemp("open_clip"))


def test_loads_from_disk_and_matches_the_model(tiny_checkpoint) -> None:
    import open_clip
    from PIL import Image

    path, model = tiny_checkpoint
    expert = EXPERTS.create("open_clip", model="spacebind-tiny-clip", checkpoint=str(path))
    assert expert.dim == 16 and expert.modalities == ("text", "image") and len(expert.spec.sha256) == 64
    images = [np.random.default_rng(i).integers(0, 256, (40, 50, 3), dtype=np.uint8) for i in range(3)]
    texts = ["a photo of a dog", "a cat"]
    _, _, preprocess = open_clip.create_model_and_transforms("spacebind-tiny-clip")
    with torch.no_grad():
        want_img = model.encode_image(torch.stack([preprocess(Image.fromarray(a)) for a in images]))
        want_txt = model.encode_text(open_clip.get_tokenizer("spacebind-tiny-clip")(texts))
    got_img, got_txt = expert.encode("image", images), expert.encode("text", texts)
    torch.testing.assert_close(got_img, torch.nn.functional.normalize(want_img, dim=-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(got_txt, torch.nn.functional.normalize(want_txt, dim=-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(got_txt.norm(dim=-1), torch.ones(2))
    again = EXPERTS.create("open_clip", model="spacebind-tiny-clip", checkpoint=str(path))
    torch.testing.assert_close(again.encode("text", texts), got_txt, rtol=0, atol=0)


def test_strict_loading_and_clear_errors(tiny_checkpoint, tmp_path: Path) -> None:
    path, model = tiny_checkpoint
    state = model.state_dict()
    del state["text_projection"]
    torch.save(state, tmp_path / "broken.bin")
    with pytest.raises(CheckpointError, match="text_projection"):
        EXPERTS.create("open_clip", model="spacebind-tiny-clip", checkpoint=str(tmp_path / "broken.bin"))
    with pytest.raises(CheckpointError, match="no checkpoint file at"):
        EXPERTS.create("eva02_clip_bige14_plus", checkpoint=str(tmp_path / "absent.pt"))
    with pytest.raises(CheckpointError, match="Hugging Face tokenizer 'timm/ViT-B-16-SigLIP'.*tokenizer=DIR"):
        _tokenizer("ViT-SO400M-14-SigLIP-384", None)


def test_published_variants_are_registered_with_their_dims() -> None:
    import open_clip

    from spacebind.experts.open_clip_family import VARIANTS

    for name, (arch, dim, _) in VARIANTS.items():
        assert open_clip.get_model_config(arch)["embed_dim"] == dim, name
    for name, dim in [("eva02_clip_bige14_plus", 1024), ("dfn5b_clip_vit_h14", 1024), ("siglip_so400m_384", 1152),
                      ("siglip_large_patch16_384", 1024), ("openclip_vit_bigg14", 1280)]:
        assert EXPERTS.entry(name).dim == dim
