"""The real all-MiniLM-L6-v2 expert: sentence-transformers-equivalent, offline, guarded."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spacebind.errors import CheckpointError
from spacebind.experts.hf_text import _check_tokenizer
from spacebind.experts.minilm import minilm_path
from spacebind.experts.registry import EXPERTS

SENTENCES = ["A man is eating food.", "A man is riding a horse.", "The new movie is awesome.", "a tiny vivid kettle"]


@pytest.fixture(scope="module")
def minilm():
    return EXPERTS.create("minilm")


def test_matches_direct_mean_pooling(minilm) -> None:
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
    assert minilm.spec.source == "minilm" and len(minilm.spec.sha256) == 64


def test_broken_tokenizer_is_refused(tmp_path) -> None:
    class Broken:
        def __call__(self, text):
            return {"input_ids": [0, 1, 2, 3, 4]}

        def __len__(self):
            return 5

    with pytest.raises(CheckpointError, match="tokenizer loaded broken"):
        _check_tokenizer(Broken(), tmp_path)
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        EXPERTS.create("minilm", path=str(tmp_path))


def test_generic_sentence_encoder_from_a_directory(minilm) -> None:
    generic = EXPERTS.create("sentence_encoder", path=str(minilm_path()))
    assert generic.spec.kwargs == {"path": str(minilm_path())} and generic.dim == 384
    torch.testing.assert_close(generic.encode("text", SENTENCES), minilm.encode("text", SENTENCES))
