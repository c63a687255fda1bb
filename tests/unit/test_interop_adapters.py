"""A fused space where open_clip, sentence-transformers and CLIP_benchmark code expects a model;
`Space.to` for devices (CPU here) and dtypes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from toy_experts import multi_expert

from spacebind.bonds.bind import BoundSpace
from spacebind.bonds.projector import MLPProjector
from spacebind.errors import InputError
from spacebind.interop.adapters import OpenCLIPModel, SentenceEncoder, TextTokens, load_clip_benchmark

TEXTS = ["a small red cube", "a huge blue cone", "tiny green torus"]


class ModuleEncoder(torch.nn.Module):
    """An in-memory expert encoder that is an nn.Module (moved by `Space.to`)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(16, 4)

    def forward(self, arrays: list[np.ndarray]) -> torch.Tensor:
        feats = torch.stack([torch.as_tensor(np.resize(np.asarray(a, np.float32).ravel(), 16)) for a in arrays])
        return self.proj(feats.to(self.proj.weight.device))


def toy_space() -> BoundSpace:
    torch.manual_seed(0)
    u = multi_expert("U", 8, ("text", "image"), 0)
    e = multi_expert("E", 6, ("text", "image"), 1)
    return BoundSpace(u, [e], "combination", {"E": MLPProjector(6, 8, hidden=16).eval()}, lambdas={"text": 0.3})


def test_to_moves_heads_and_casts_what_encode_returns() -> None:
    space = toy_space()
    before = space.encode("text", TEXTS)
    assert space.to("cpu") is space and space.device == torch.device("cpu")
    assert space.to(torch.float64) is space
    head = space.heads["E"]
    assert all(p.dtype == torch.float64 for p in head.parameters())
    out = space.encode("text", TEXTS)
    assert out.dtype == torch.float64 and out.device.type == "cpu"
    torch.testing.assert_close(out.float(), before, rtol=1e-5, atol=1e-6)
    space.to("cpu", torch.float32)
    assert space.encode("text", TEXTS).dtype == torch.float32
    with pytest.raises(InputError, match="floating type"):
        space.to(torch.int64)


def test_to_moves_module_encoders_of_in_memory_experts() -> None:
    from spacebind.space import Space

    encoder = ModuleEncoder()
    expert = Space.from_encoders("M", {"image": encoder}, dim=4)
    moved = []
    encoder.to = lambda device: moved.append(device) or encoder  # type: ignore[method-assign]
    expert.to("meta")
    assert moved == [torch.device("meta")] and expert.device == torch.device("meta")
    expert.to("meta")  # already there: nothing moves again
    assert moved == [torch.device("meta")]


def test_open_clip_interface_encodes_images_and_texts() -> None:
    space = toy_space()
    model = OpenCLIPModel(space, image_size=8)
    assert isinstance(model, torch.nn.Module) and not model.training
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in space.heads["E"].parameters())
    model.train()
    assert not space.heads["E"].training
    tokens = model.tokenizer(TEXTS)
    assert isinstance(tokens, TextTokens) and tokens.to("cpu") is tokens and list(tokens) == TEXTS
    torch.testing.assert_close(model.encode_text(tokens), space.encode("text", TEXTS), rtol=0, atol=0)
    pixels = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    batch = torch.stack([model.preprocess(Image.fromarray(pixels)), model.preprocess(pixels)])
    assert batch.shape == (2, 8, 8, 3) and batch.dtype == torch.uint8
    # the shorter side resized, the centre cropped (CLIP's first steps): no squashing of non-square images
    banded = np.zeros((40, 80, 3), np.uint8)
    banded[:, :5, 0] = banded[:, 75:, 0] = 255  # red bands well outside the centre square
    banded[:, 5:75, 2] = 255
    square = model.preprocess(banded).numpy()
    assert square.shape == (8, 8, 3) and square[..., 0].max() < 8 and square[..., 2].min() > 247  # squashed: red edges
    expected = space.encode("image", [b.numpy() for b in batch])
    torch.testing.assert_close(model.encode_image(batch), expected, rtol=0, atol=0)
    image_features, text_features = model(batch, tokens)
    assert image_features.shape == (2, 8) and text_features.shape == (3, 8)
    assert model.to(torch.float64) is model and model.encode_text(tokens).dtype == torch.float64


def test_sentence_transformers_encode() -> None:
    space = toy_space()
    st = SentenceEncoder(space)
    assert st.get_sentence_embedding_dimension() == 8
    expected = space.encode("text", TEXTS).numpy()
    out = st.encode(TEXTS, batch_size=2, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)
    assert isinstance(out, np.ndarray) and out.shape == (3, 8)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)  # batches of 2 round differently
    one = st.encode(TEXTS[0])
    assert one.shape == (8,)
    np.testing.assert_allclose(np.linalg.norm(one), 1.0, rtol=1e-6)
    tensor = st.encode(TEXTS, convert_to_tensor=True, show_progress_bar=True)
    assert isinstance(tensor, torch.Tensor) and tensor.shape == (3, 8)
    assert st.encode([], convert_to_numpy=True).shape == (0, 8)
    st.to(torch.bfloat16)  # numpy has no bfloat16: converted as sentence-transformers does
    half = st.encode(TEXTS)
    assert isinstance(half, np.ndarray) and half.dtype == np.float32
    np.testing.assert_allclose(half, expected, rtol=0, atol=2e-2)


def test_clip_benchmark_loader_contract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`(model, transform, tokenizer)` as CLIP_benchmark's `load_clip` returns; its zero-shot loop's calls."""
    monkeypatch.setenv("SPACEBIND_HOME", str(tmp_path / "home"))
    space = toy_space()
    out = space.save(tmp_path / "export")
    model, transform, tokenizer = load_clip_benchmark(model_name="", pretrained=str(out), cache_dir=None, device="cpu",
                                                      experts={e.name: e for e in space.leaves()})
    model.eval()
    texts = tokenizer(TEXTS).to("cpu")
    classifier = model.encode_text(texts)
    images = torch.stack([transform(Image.new("RGB", (40, 30), c)) for c in ["red", "blue"]]).to("cpu")
    logits = 100.0 * model.encode_image(images) @ classifier.T
    assert logits.shape == (2, 3)
    torch.testing.assert_close(classifier, space.encode("text", TEXTS), rtol=0, atol=0)


def test_open_clip_texts_live_where_images_do_in_a_space_with_a_channel() -> None:
    """CLIP_benchmark's zero-shot classifier is a plain mean of a class's template embeddings. In a
    bond with a channel images are [e, 0]: the adapter gives texts on the image dimensions only, so
    that plain mean classifies as spacebind's own per-part class embeddings do."""
    from spacebind.evaluation.metrics import class_embeddings

    torch.manual_seed(0)
    u, e = multi_expert("U", 8, ("text", "image"), 0), multi_expert("E", 6, ("text", "audio"), 1)
    space = BoundSpace(u, [e], "combination", {"E": MLPProjector(6, 8, hidden=16).eval()}, lambdas={"text": 0.3},
                       channels={"text": 0.999, "audio": 0.5})
    assert space.support("image").tolist() == [True] * 8 + [False] * 6 and bool(space.support("text").all())
    assert bool(space.support("audio").all()) and bool(toy_space().support("image").all())
    model = OpenCLIPModel(space, image_size=None)
    classes = [f"object {i}" for i in range(12)]
    templates = ["a {}", "a photo of a {}", "the {} again", "{}, seen"]
    prompts = [t.format(c) for c in classes for t in templates]
    texts = model.encode_text(TextTokens(prompts))
    assert bool((texts[:, 8:] == 0).all()) and torch.allclose(texts.norm(dim=-1), torch.ones(len(prompts)))
    plain_mean = torch.nn.functional.normalize(texts.view(12, 4, -1).mean(dim=1), dim=-1)  # CLIP_benchmark's
    ours = class_embeddings(space.encode("text", prompts), 12, space.blocks)
    images = model.encode_image([np.random.default_rng(i).random((8, 8, 3)) for i in range(40)])
    assert torch.equal((images @ plain_mean.T).argmax(1), (images @ ours.T).argmax(1))
