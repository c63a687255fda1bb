"""Embedding edge cases a reviewer reproduced: odd ids, broken or degenerate encoders, bad settings
and what a killed job leaves (each failed before its fix)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from spacebind.cache._embed_loop import AdaptiveBatch
from spacebind.cache.cache_set import ensure_caches
from spacebind.cache.store import EmbeddingCache, embed_dataset
from spacebind.errors import CacheError, ExpertError, InputError
from spacebind.io.datasets import Dataset, Item
from spacebind.space import Expert, ExpertSpec, Space

DIM = 4


def text_data(root: Path, ids: list[str]) -> Path:
    root.mkdir(parents=True)
    lines = [json.dumps({"id": i, "split": "train", "text": f"text {k}"}) for k, i in enumerate(ids)]
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def table(xs: list[str]) -> torch.Tensor:
    return torch.stack([torch.randn(DIM, generator=torch.Generator().manual_seed(len(x) * 31 + ord(x[-1])))
                        for x in xs])


def test_a_lone_surrogate_id_embeds_and_reads_back(tmp_path: Path) -> None:
    """JSON allows "a\\ud800"; hashing it with a strict UTF-8 encode crashed the embedding."""
    data = text_data(tmp_path / "data", ["a\ud800", "b"])
    cache = embed_dataset(Space.from_encoders("T", {"text": table}, dim=DIM), Dataset.load(data), tmp_path / "c",
                          progress=False)
    assert cache.ids("text") == ["a\ud800", "b"] and cache.embeddings("text", ["a\ud800"]).shape == (1, DIM)


def test_items_built_in_python_need_their_own_ids(tmp_path: Path) -> None:
    items = [Item("x", "train", None, {"text": "one"}), Item("x", "test", None, {"text": "two"})]
    with pytest.raises(InputError, match="duplicate item id 'x'"):
        Dataset.of_items(tmp_path, items)


def test_an_encoder_of_the_wrong_shape_stops_the_job_and_degenerate_rows_are_bad_items(tmp_path: Path) -> None:
    """A shape bug used to mark every item bad (a finished, empty cache); an all-zero row was
    stored as a zero vector, and huge (or tiny) finite values overflowed (or underflowed) to zero."""
    data = Dataset.load(text_data(tmp_path / "data", ["a", "b", "c"]))
    wrong = Space.from_encoders("W", {"text": lambda xs: torch.ones(len(xs), DIM - 1)}, dim=DIM)
    with pytest.raises(ExpertError, match=r"returned shape \(3, 3\), expected \(3, 4\)"):
        embed_dataset(wrong, data, tmp_path / "wrong", progress=False)

    def odd(xs: list[str]) -> torch.Tensor:  # the texts of items a, b, c are "text 0", "text 1", "text 2"
        out = table(xs).double()
        out[[x == "text 0" for x in xs]] = 0.0
        out[[x == "text 1" for x in xs]] *= 4e37  # finite in float64, beyond float32's norm
        out[[x == "text 2" for x in xs]] *= 1e-30  # below float32's normalisation eps
        return out

    cache = embed_dataset(Space.from_encoders("O", {"text": odd}, dim=DIM), data, tmp_path / "odd", progress=False)
    assert cache.ids("text") == ["b", "c"] and [b["id"] for b in cache.bad("text")] == ["a"]
    assert "embedded it as all zeros" in cache.bad("text")[0]["reason"]
    torch.testing.assert_close(cache.embeddings("text").float().norm(dim=1), torch.ones(2), atol=2e-3, rtol=0)


def test_settings_are_checked_before_the_manifest_records_them_and_a_damaged_manifest_is_named(tmp_path: Path) -> None:
    data = Dataset.load(text_data(tmp_path / "data", ["a", "b"]))
    expert = Space.from_encoders("T", {"text": table}, dim=DIM)
    with pytest.raises(InputError, match="precision 'bf-16'; expected one of fp32, bf16, fp16"):
        embed_dataset(expert, data, tmp_path / "c", precision="bf-16", progress=False)
    assert not (tmp_path / "c" / "manifest.json").exists()
    path_kwargs = Expert("P", DIM, {"text": table}, spec=ExpertSpec(source="toy", kwargs={"root": tmp_path}))
    embed_dataset(path_kwargs, data, tmp_path / "p", progress=False)  # a Path kwarg crashed the header's JSON
    (tmp_path / "p" / "manifest.json").write_text("{not json")
    with pytest.raises(CacheError, match="manifest.json: not valid JSON"):
        embed_dataset(path_kwargs, data, tmp_path / "p", progress=False)


def test_a_resumed_job_removes_a_killed_shard_write(tmp_path: Path) -> None:
    data = Dataset.load(text_data(tmp_path / "data", ["a", "b"]))
    expert = Space.from_encoders("T", {"text": table}, dim=DIM)
    embed_dataset(expert, data, tmp_path / "c", progress=False)
    leftover = tmp_path / "c" / "text" / ".shard-00000.safetensors.x1y2.tmp"
    leftover.write_bytes(b"half a shard")
    assert EmbeddingCache.open(tmp_path / "c").ids("text") == ["a", "b"]
    embed_dataset(expert, data, tmp_path / "c", progress=False)
    assert not leftover.exists()


def test_a_cpu_allocation_failure_halves_the_batch() -> None:
    sizes = []

    def work(size: int) -> torch.Tensor:
        sizes.append(size)
        if size > 2:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:116] DefaultCPUAllocator: can't allocate memory")
        return torch.zeros(size)

    assert len(AdaptiveBatch(8).run(work)) == 2 and sizes == [8, 4, 2]
    with pytest.raises(RuntimeError, match="a bug"):
        AdaptiveBatch(8).run(lambda size: (_ for _ in ()).throw(RuntimeError("a bug")))


def test_reusing_an_in_memory_experts_cache_warns_that_its_encoders_cannot_be_checked(tmp_path: Path) -> None:
    data = Dataset.load(text_data(tmp_path / "data", ["a", "b"]))
    ensure_caches([Space.from_encoders("mine", {"text": table}, dim=DIM)], data, tmp_path / "caches", progress=False)
    changed = Space.from_encoders("mine", {"text": lambda xs: -table(xs)}, dim=DIM)
    with pytest.warns(UserWarning, match="reusing the embeddings of in-memory expert 'mine'"):
        ensure_caches([changed], data, tmp_path / "caches", progress=False)
