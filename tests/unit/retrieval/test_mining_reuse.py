"""Stored minings: a stored result is reused only for the same mining (k is part of its key), and
it is reused (no index built again)."""
from pathlib import Path

import pytest
import torch
from tiny_datasets import text_point_cache

import spacebind.retrieval.mining as mining
from spacebind.retrieval.mining import mine

N, DIM = 40, 8


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return text_point_cache(tmp_path_factory.mktemp("mine1"), N, DIM, noise=0.9, shard_size=16)


def test_a_stored_mining_of_another_k_is_not_reused(cache, tmp_path: Path) -> None:
    two = mine(cache, "text", "point", k=2, out=tmp_path, progress=False)
    three = mine(cache, "text", "point", k=3, out=tmp_path, progress=False)
    fresh = mine(cache, "text", "point", k=3, progress=False)
    assert two.indices.shape == (N, 2) and three.indices.shape == (N, 3)
    assert torch.equal(three.indices, fresh.indices)


def test_a_stored_mining_is_reused_without_building_an_index(cache, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    first = mine(cache, "text", "point", k=2, out=tmp_path, progress=False)
    monkeypatch.setattr(mining, "_build", lambda *a, **k: pytest.fail("stored neighbours must be reused"))
    again = mine(cache, "text", "point", k=2, out=tmp_path, progress=False)
    assert torch.equal(again.indices, first.indices) and torch.equal(again.scores, first.scores)
