"""open_clip experts: a tiny architecture with seeded random weights, saved as a plain state dict
(the official file format), loaded through the wrapper from disk."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_checkpoints import (
    OPEN_CLIP_TINY,
    OPEN_CLIP_TINY_EVA_NAME,
    OPEN_CLIP_TINY_NAME,
    open_clip_checkpoint,
    open_clip_eva_checkpoint,
    tiny_open_clip_variant,
)

from spacebind.errors import CheckpointError, InputError
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

    for name, (arch, dim, _, _) in VARIANTS.items():
        assert open_clip.get_model_config(arch)["embed_dim"] == dim, name
    for name, dim in [("eva02_clip_bige14_plus", 1024), ("dfn5b_clip_vit_h14", 1024), ("siglip_so400m_384", 1152),
                      ("siglip_large_patch16_384", 1024), ("openclip_vit_bigg14", 1280)]:
        assert EXPERTS.entry(name).dim == dim


# The tag each variant's weights were published under in open_clip's table (open_clip 3.3.0
# pretrained.py), which decides its image preprocessing; OmniBind's SigLIP experts use HF's
# google/siglip-*-384 processors (384 squash, mean = std = 0.5), which the webli tags match.
OFFICIAL_TAGS = {"eva02_clip_bige14_plus": "laion2b_s9b_b144k", "dfn5b_clip_vit_h14": "dfn5b",
                 "siglip_large_patch16_384": "webli", "siglip_so400m_384": "webli",
                 "openclip_vit_bigg14": "laion2b_s39b_b160k"}
IMAGES = [np.random.default_rng(i).integers(0, 256, (40 + 7 * i, 64 - 9 * i, 3), dtype=np.uint8) for i in range(3)]


def _spy_transforms(monkeypatch: pytest.MonkeyPatch) -> list:
    """The inference transforms `open_clip.create_model_and_transforms` returns from now on."""
    import open_clip

    made, real = [], open_clip.create_model_and_transforms

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        made.append(out[2])
        return out

    monkeypatch.setattr(open_clip, "create_model_and_transforms", spy)
    return made


def _encoded(model: torch.nn.Module, transform, images: list[np.ndarray]) -> torch.Tensor:
    from PIL import Image

    with torch.no_grad():
        pixels = torch.stack([transform(Image.fromarray(a)) for a in images])
        return torch.nn.functional.normalize(model.encode_image(pixels), dim=-1)


@pytest.mark.parametrize("name", sorted(OFFICIAL_TAGS))
def test_variant_preprocesses_images_as_its_pretrained_tag(name: str, tiny_checkpoint, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Each variant's transform is what open_clip builds for `pretrained=<its tag>` (mean, std,
    interpolation, resize mode), not the OpenAI defaults a local file path gets."""
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    from spacebind.experts.open_clip_family import VARIANTS

    arch, _, _, tag = VARIANTS[name]
    assert tag == OFFICIAL_TAGS[name]
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    assert cfg, f"open_clip has no tag {tag!r} for {arch!r}"
    if name.startswith("siglip"):  # the published numbers, so a wrong table lookup cannot pass unnoticed
        assert (cfg["mean"], cfg["std"], cfg["resize_mode"]) == ((0.5,) * 3, (0.5,) * 3, "squash")
    if name == "dfn5b_clip_vit_h14":
        assert cfg["resize_mode"] == "squash"
    path, model = tiny_checkpoint
    tiny_open_clip_variant(name, monkeypatch)  # the tiny architecture, carrying the real tag's entry
    made = _spy_transforms(monkeypatch)
    expert = EXPERTS.create(name, checkpoint=str(path))
    want = image_transform_v2(PreprocessCfg(size=OPEN_CLIP_TINY["vision_cfg"]["image_size"], mean=cfg["mean"],
                                            std=cfg["std"], interpolation=cfg["interpolation"],
                                            resize_mode=cfg["resize_mode"]), is_train=False)
    assert len(made) == 1 and repr(made[0]) == repr(want)
    torch.testing.assert_close(expert.encode("image", IMAGES), _encoded(model, want, IMAGES), atol=1e-5, rtol=0)
    if cfg["resize_mode"] == "squash":  # the whole frame is kept: no centre crop
        assert not any(type(t).__name__ == "CenterCrop" for t in made[0].transforms)


def test_generic_open_clip_takes_a_pretrained_tag(tiny_checkpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    import open_clip
    from open_clip import pretrained
    from open_clip.transform import PreprocessCfg, image_transform_v2

    path, model = tiny_checkpoint
    siglip = open_clip.get_pretrained_cfg("ViT-SO400M-14-SigLIP-384", "webli")
    monkeypatch.setitem(pretrained._PRETRAINED, OPEN_CLIP_TINY_NAME, {"webli": siglip})
    expert = EXPERTS.create("open_clip", model=OPEN_CLIP_TINY_NAME, checkpoint=str(path), pretrained_tag="webli")
    assert expert.spec.kwargs["pretrained_tag"] == "webli"
    want = image_transform_v2(PreprocessCfg(size=32, mean=(0.5,) * 3, std=(0.5,) * 3, resize_mode="squash"),
                              is_train=False)
    torch.testing.assert_close(expert.encode("image", IMAGES), _encoded(model, want, IMAGES), atol=1e-5, rtol=0)
    plain = EXPERTS.create("open_clip", model=OPEN_CLIP_TINY_NAME, checkpoint=str(path))
    assert "pretrained_tag" not in plain.spec.kwargs
    assert not torch.allclose(plain.encode("image", IMAGES), expert.encode("image", IMAGES), atol=1e-3)
    with pytest.raises(InputError, match="no pretrained tag 'laion9000' for 'spacebind-tiny-clip'.*'webli'"):
        EXPERTS.create("open_clip", model=OPEN_CLIP_TINY_NAME, checkpoint=str(path), pretrained_tag="laion9000")


@pytest.fixture(scope="module")
def tiny_eva(tmp_path_factory) -> tuple[Path, Path, torch.nn.Module]:
    """The tiny EVA CLIP saved in EVA-CLIP's own layout and in open_clip's (same weights)."""
    root = tmp_path_factory.mktemp("eva")
    eva_clip, model = open_clip_eva_checkpoint(root / "eva_clip", layout="eva_clip")
    official, _ = open_clip_eva_checkpoint(root / "open_clip", layout="open_clip")
    return eva_clip, official, model


def test_eva_clip_layout_loads_into_open_clips_timm_trunk(tiny_eva, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """EVA02_CLIP_E_psz14_plus_s9B.pt keeps EVA-CLIP's keys (`visual.blocks.*`, `visual.pos_embed`),
    which open_clip's loader refuses; the expert converts them (timm's EVA filter) and loads strictly."""
    import open_clip

    eva_clip, official, model = tiny_eva
    keys = list(torch.load(eva_clip, weights_only=True))
    assert "visual.pos_embed" in keys and not any(k.startswith("visual.trunk.") for k in keys)
    with pytest.raises(RuntimeError, match="Missing key.*visual.trunk"):  # what open_clip alone does with the file
        open_clip.create_model(OPEN_CLIP_TINY_EVA_NAME, pretrained=str(eva_clip))
    tiny_open_clip_variant("eva02_clip_bige14_plus", monkeypatch, OPEN_CLIP_TINY_EVA_NAME)
    texts = ["a photo of a dog", "a cat"]
    _, _, preprocess = open_clip.create_model_and_transforms(OPEN_CLIP_TINY_EVA_NAME)
    with torch.no_grad():
        want_txt = torch.nn.functional.normalize(
            model.encode_text(open_clip.get_tokenizer(OPEN_CLIP_TINY_EVA_NAME)(texts)), dim=-1)
    want_img = _encoded(model, preprocess, IMAGES)
    for path in (eva_clip, official):
        expert = EXPERTS.create("eva02_clip_bige14_plus", checkpoint=str(path))
        assert expert.dim == 16 and expert.spec.checkpoint == str(path)
        torch.testing.assert_close(expert.encode("image", IMAGES), want_img, atol=1e-5, rtol=0)
        torch.testing.assert_close(expert.encode("text", texts), want_txt, atol=1e-5, rtol=0)
    wrapped = tmp_path / "wrapped.pt"  # a training checkpoint: {"module": {"module.visual...": ...}}
    torch.save({"module": {f"module.{k}": v for k, v in torch.load(eva_clip, weights_only=True).items()}}, wrapped)
    torch.testing.assert_close(EXPERTS.create("eva02_clip_bige14_plus", checkpoint=str(wrapped)).encode("image", IMAGES),
                               want_img, atol=1e-5, rtol=0)


def test_eva_clip_layout_is_still_loaded_strictly(tiny_eva, tiny_checkpoint, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    eva_clip, _, _ = tiny_eva
    state = torch.load(eva_clip, weights_only=True)
    del state["visual.blocks.1.norm2.weight"]
    torch.save(state, tmp_path / "broken.pt")
    tiny_open_clip_variant("eva02_clip_bige14_plus", monkeypatch, OPEN_CLIP_TINY_EVA_NAME)
    with pytest.raises(CheckpointError, match=r"(?s)broken.pt: does not match .*visual\.trunk\.blocks\.1\.norm2\.weight"):
        EXPERTS.create("eva02_clip_bige14_plus", checkpoint=str(tmp_path / "broken.pt"))
    with pytest.raises(CheckpointError, match="EVA-CLIP's layout .* loads only into open_clip's timm EVA"):
        EXPERTS.create("open_clip", model=OPEN_CLIP_TINY_NAME, checkpoint=str(eva_clip))
