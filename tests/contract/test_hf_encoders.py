"""Hugging Face unimodal encoders from local directories: tiny DINOv2 saved with save_pretrained, tiny
sentence encoders (a random BERT with hand-written sentence-transformers modules)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_checkpoints import dinov2_directory

from spacebind.errors import CheckpointError, InputError
from spacebind.experts.registry import EXPERTS


@pytest.fixture(scope="module")
def tiny_dinov2(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    return dinov2_directory(tmp_path_factory.mktemp("dinov2"))


@pytest.mark.parametrize("registers", [0, 4])
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_dinov2_from_disk(tiny_dinov2, tmp_path: Path, pooling: str, registers: int) -> None:
    """Mean pooling averages the patch tokens only: DINOv2-with-registers' register tokens (after
    the CLS token) are not patches."""
    from transformers import AutoImageProcessor

    root, model = dinov2_directory(tmp_path, registers) if registers else tiny_dinov2
    expert = EXPERTS.create("dinov2", path=str(root), pooling=pooling)
    assert expert.dim == 32 and expert.modalities == ("image",)
    images = [np.random.default_rng(i).integers(0, 256, (40, 48, 3), dtype=np.uint8) for i in range(2)]
    pixels = AutoImageProcessor.from_pretrained(str(root))(images=images, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (2, 3, 32, 32)
    with torch.no_grad():
        hidden = model(pixel_values=pixels).last_hidden_state
    assert hidden.shape[1] == 1 + registers + 16  # CLS, registers, 4 × 4 patches
    want = hidden[:, 0] if pooling == "cls" else hidden[:, 1 + registers:].mean(1)
    torch.testing.assert_close(expert.encode("image", images), torch.nn.functional.normalize(want, dim=-1), atol=1e-5, rtol=0)


def test_missing_files_and_bad_pooling(tiny_dinov2, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="needs model.safetensors, config.json and preprocessor_config.json"):
        EXPERTS.create("dinov2", path=str(tmp_path))
    with pytest.raises(InputError, match=r"pooling='max' \(expected Literal\['cls', 'mean'\]"):
        EXPERTS.create("dinov2", path=str(tiny_dinov2[0]), pooling="max")


_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "dog", "runs", "on", "the", "beach", "quantum", "notes",
          "man", "is", "eating", "food", "riding", "horse", "movie", "new", "awesome", "."]
_SENTENCES = ["a man is eating food.", "the dog runs on the beach", "a new movie", "quantum notes on a horse"]
_ST = "sentence_transformers.models."


def _sentence_folder(root: Path, pooling: str | None, dense: bool = False) -> Path:
    """A random 16-wide BERT; with `pooling`, a modules.json (Transformer, Pooling, [Dense], Normalize) in the
    layout sentence-transformers' hub models use; without it, a plain Hugging Face folder."""
    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel, BertTokenizer

    root.mkdir()
    BertTokenizer(vocab={word: i for i, word in enumerate(_VOCAB)}).save_pretrained(root)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(_VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64)).save_pretrained(root)
    if pooling is None:
        return root
    modules = [("Transformer", ""), ("Pooling", "1_Pooling"), *[("Dense", "2_Dense")] * dense,
               ("Normalize", "3_Normalize")]
    (root / "modules.json").write_text(json.dumps(
        [{"idx": i, "name": str(i), "path": p, "type": _ST + t} for i, (t, p) in enumerate(modules)]))
    (root / "1_Pooling").mkdir()
    (root / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 16, f"pooling_mode_{pooling}": True}))
    if dense:
        (root / "2_Dense").mkdir()
        (root / "2_Dense" / "config.json").write_text(json.dumps({"in_features": 16, "out_features": 8, "bias": True,
                                                                  "activation_function": "torch.nn.Tanh"}))
        save_file({"linear.weight": torch.randn(8, 16), "linear.bias": torch.randn(8)},
                  root / "2_Dense" / "model.safetensors")
    return root


def _hidden(root: Path, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The BERT's last hidden states and attention mask, computed without sentence-transformers."""
    from transformers import AutoModel, AutoTokenizer

    batch = AutoTokenizer.from_pretrained(str(root))(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return AutoModel.from_pretrained(str(root)).eval()(**batch).last_hidden_state, batch["attention_mask"]


def _reference(root: Path, texts: list[str]) -> torch.Tensor:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(root), device="cpu", local_files_only=True, trust_remote_code=False)
    return torch.nn.functional.normalize(st.encode(texts, convert_to_tensor=True), dim=-1)


@pytest.mark.parametrize("pooling", ["cls_token", "mean_tokens", None])
def test_sentence_encoder_honours_pooling(tmp_path: Path, pooling: str | None) -> None:
    root = _sentence_folder(tmp_path / "st", pooling)
    expert = EXPERTS.create("sentence_encoder", path=str(root))
    got = expert.encode("text", _SENTENCES)
    hidden, mask = _hidden(root, _SENTENCES)
    cls = torch.nn.functional.normalize(hidden[:, 0], dim=-1)
    mean = torch.nn.functional.normalize((hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True), dim=-1)
    assert expert.dim == 16 and (cls - mean).abs().max() > 0.1
    torch.testing.assert_close(got, cls if pooling == "cls_token" else mean, atol=1e-5, rtol=0)  # no modules.json: mean
    torch.testing.assert_close(got, _reference(root, _SENTENCES), atol=1e-6, rtol=0)
    assert expert.spec.kwargs == {"path": str(root)}  # the model's own max_seq_length: nothing to record
    assert expert.spec.checkpoint == str(root / "model.safetensors") and len(expert.spec.sha256) == 64


def test_sentence_encoder_dense_layer_and_max_length(tmp_path: Path) -> None:
    root = _sentence_folder(tmp_path / "st", "cls_token", dense=True)
    expert = EXPERTS.create("sentence_encoder", path=str(root))
    assert expert.dim == 8
    torch.testing.assert_close(expert.encode("text", _SENTENCES), _reference(root, _SENTENCES), atol=1e-6, rtol=0)
    long = ["a dog runs on the beach " * 5, "a dog runs on the beach " * 6]  # same first 4 tokens
    short = EXPERTS.create("sentence_encoder", path=str(root), max_length=4)
    assert short.spec.kwargs["max_length"] == 4
    cut = short.encode("text", long)
    torch.testing.assert_close(cut[0], cut[1])
    assert not torch.allclose(*expert.encode("text", long))


def test_sentence_encoder_keeps_the_models_own_max_seq_length(tmp_path: Path) -> None:
    """sentence-transformers reads max_seq_length from sentence_bert_config.json (384 for
    all-mpnet-base-v2, 128 for all-roberta-large-v1); the expert keeps it unless told otherwise."""
    root = _sentence_folder(tmp_path / "st", "mean_tokens")
    (root / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 6, "do_lower_case": False}))
    long = ["a dog runs on the beach " * 5, "a dog runs on the beach " * 6]  # same first 6 tokens
    expert = EXPERTS.create("sentence_encoder", path=str(root))
    assert expert.spec.kwargs == {"path": str(root)}
    cut = expert.encode("text", long)
    torch.testing.assert_close(cut[0], cut[1])
    torch.testing.assert_close(cut, _reference(root, long), atol=1e-6, rtol=0)
    longer = EXPERTS.create("sentence_encoder", path=str(root), max_length=64)
    assert longer.spec.kwargs == {"path": str(root), "max_length": 64}
    assert not torch.allclose(*longer.encode("text", long))
    again = EXPERTS.create("sentence_encoder", **longer.spec.kwargs)  # the spec rebuilds the same expert
    torch.testing.assert_close(again.encode("text", long), longer.encode("text", long), atol=0, rtol=0)


def test_sentence_encoder_refuses_pickles_and_foreign_code(tmp_path: Path) -> None:
    root = _sentence_folder(tmp_path / "st", "cls_token", dense=True)
    (root / "2_Dense" / "model.safetensors").rename(root / "2_Dense" / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="2_Dense holds pickled weights"):
        EXPERTS.create("sentence_encoder", path=str(root))
    (root / "2_Dense" / "pytorch_model.bin").unlink()
    (root / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "", "type": "os.system"}]))
    with pytest.raises(CheckpointError, match="cannot load .*not part of Sentence Transformers"):
        EXPERTS.create("sentence_encoder", path=str(root))
    (root / "modules.json").write_text("[{")
    with pytest.raises(CheckpointError, match="unreadable .*modules.json"):
        EXPERTS.create("sentence_encoder", path=str(root))
