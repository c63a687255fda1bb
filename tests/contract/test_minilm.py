"""The real all-MiniLM-L6-v2 expert: sentence-transformers-equivalent, offline, guarded."""
from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from spacebind.errors import CheckpointError
from spacebind.experts.hf_text import check_tokenizer
from spacebind.experts.minilm import minilm_path
from spacebind.experts.registry import EXPERTS
from spacebind.space import Expert

SENTENCES = ["A man is eating food.", "A man is riding a horse.", "The new movie is awesome.", "a tiny vivid kettle"]


def _refuse(*args: object, **kwargs: object) -> None:
    raise OSError("the MiniLM tests must not open sockets")


@pytest.fixture(scope="module")
def no_sockets() -> Iterator[None]:
    """Every connect fails, loopback included; module-scoped so it also covers the shared model load,
    which runs before conftest's function-scoped guard."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _refuse)
        yield


@pytest.fixture(scope="module")
def minilm(no_sockets: None) -> Expert:
    return EXPERTS.create("minilm")


def test_matches_direct_mean_pooling(minilm: Expert) -> None:
    from transformers import AutoModel, AutoTokenizer

    path = minilm_path()
    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
    with torch.no_grad():
        batch = tok(SENTENCES, padding=True, return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"][..., None].float()
        want = F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    got = minilm.encode("text", SENTENCES)
    assert got.shape == (4, 384)
    assert (F.cosine_similarity(got, want) > 0.999).all()
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(4))
    sims = got @ got.T
    assert sims[0, 1] > sims[0, 2]  # two sentences about a man are closer than a movie review
    assert minilm.spec.source == "minilm" and minilm.spec.kwargs == {"max_length": 256}
    assert minilm.spec.checkpoint == str(minilm_path() / "model.safetensors") and len(minilm.spec.sha256) == 64


def test_matches_sentence_transformers(minilm: Expert, no_sockets: None) -> None:
    st = pytest.importorskip("sentence_transformers")
    reference = st.SentenceTransformer(str(minilm_path()), device="cpu", local_files_only=True)
    assert reference.max_seq_length == 256  # the factory's default max_length mirrors this
    want = F.normalize(reference.encode(SENTENCES, convert_to_tensor=True), dim=-1)
    torch.testing.assert_close(minilm.encode("text", SENTENCES), want, atol=1e-6, rtol=0)


class _SameIds:
    """A tokenizer as a broken offline load leaves it: full-size, but every text maps to the same ids."""

    def __call__(self, text: str | list[str], **kwargs: object) -> dict[str, list[int]]:
        return {"input_ids": [101, 100, 102]}

    def __len__(self) -> int:
        return 30522


def test_broken_tokenizer_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_sockets: None) -> None:
    from sentence_transformers import SentenceTransformer

    monkeypatch.setattr(SentenceTransformer, "tokenizer", property(lambda self: _SameIds()))
    with pytest.raises(CheckpointError, match=f"{re.escape(str(minilm_path()))}: the tokenizer loaded broken"):
        EXPERTS.create("minilm")
    monkeypatch.setattr(SentenceTransformer, "tokenizer", property(lambda self: None))
    with pytest.raises(CheckpointError, match="no text tokenizer loaded"):
        EXPERTS.create("minilm")
    with pytest.raises(CheckpointError, match="vocabulary 5, config says 30522"):
        check_tokenizer(type("Tiny", (_SameIds,), {"__len__": lambda self: 5})(), 30522, tmp_path)
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        EXPERTS.create("minilm", path=str(tmp_path))


def test_generic_sentence_encoder_from_a_directory(minilm: Expert, no_sockets: None) -> None:
    generic = EXPERTS.create("sentence_encoder", path=str(minilm_path()))
    assert generic.spec.kwargs == {"path": str(minilm_path())} and generic.dim == 384  # its own 256 kept
    torch.testing.assert_close(generic.encode("text", SENTENCES), minilm.encode("text", SENTENCES))
