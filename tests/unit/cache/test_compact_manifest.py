"""Memory that does not grow with the manifest: ids only in the shards (manifest.json keeps counts and
checksums), duplicate ids found from 64-bit hashes, format 2 caches (ids inline) still read."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from tiny_datasets import tiny_dataset
from toy_experts import Counting, multi_expert

from spacebind.cache import store
from spacebind.cache.store import EmbeddingCache, embed_dataset
from spacebind.errors import InputError
from spacebind.io import datasets
from spacebind.io.datasets import Dataset, Manifest
from spacebind.space import Expert, ExpertSpec


def toy(counter: Counting | None = None) -> Expert:
    fn = multi_expert("toy", 8, ("text",), 0).encoders["text"]
    return Expert("toy", 8, {"text": counter or fn}, spec=ExpertSpec(source="toy"), batch_size=4)


def _text_manifest(root: Path, ids: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.jsonl").write_text("".join(json.dumps({"id": i, "text": f"caption {i}"}) + "\n" for i in ids))
    return root


def test_ids_round_trip_through_the_shards_not_the_manifest(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "data", corrupt=None)
    cache = embed_dataset(toy(), Manifest.open(data.root), tmp_path / "cache", shard_size=5, progress=False)
    ids = [it.id for it in list(data.iter_items())]
    text = (tmp_path / "cache" / "manifest.json").read_text()
    assert not any(f'"{i}"' in text for i in ids)  # counts and checksums only
    shards = json.loads(text)["modalities"]["text"]["shards"]
    assert [s["n"] for s in shards] == [5, 5, 5, 5, 3] and all(len(s["ids_sha256"]) == 64 for s in shards)
    assert cache.ids("text") == ids and cache.count("text") == 23
    assert [len(s) for s in cache.shard_ids("text")] == [5, 5, 5, 5, 3]
    assert [i for chunk, _ in cache.iter_chunks("text", 7) for i in chunk] == ids
    pick = ["item17", "item2", "item9"]
    torch.testing.assert_close(cache.embeddings("text", pick), cache.embeddings("text")[[17, 2, 9]])


def test_duplicate_ids_are_refused_naming_the_id_and_both_lines(tmp_path: Path) -> None:
    data = _text_manifest(tmp_path / "data", ["a", "b", "c", "b", "d", "a"])
    with pytest.raises(InputError, match=r"manifest.jsonl:4: duplicate item id 'b' \(first on line 2\); "
                                         r"1 more repeated line"):
        Dataset.load(data)
    with pytest.raises(InputError, match=r"manifest.jsonl:4: duplicate item id 'b'"):
        embed_dataset(toy(), Manifest.open(data), tmp_path / "cache", progress=False)
    assert not (tmp_path / "cache" / "manifest.json").exists()


def test_colliding_hashes_of_different_ids_are_not_duplicates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _text_manifest(tmp_path / "data", ["a", "b", "c"])
    monkeypatch.setattr(datasets, "hash", lambda s: 7, raising=False)  # every id collides
    assert [it.id for it in list(Dataset.load(data).iter_items())] == ["a", "b", "c"]  # the exact re-check clears them
    _text_manifest(tmp_path / "data", ["a", "b", "a"])
    with pytest.raises(InputError, match=r"manifest.jsonl:3: duplicate item id 'a' \(first on line 1\)$"):
        Dataset.load(data)


def _to_format_2(cache_dir: Path) -> None:
    """Rewrite a cache's manifest as spacebind wrote it before ids left it (format 2: ids inline)."""
    path = cache_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    for entry in manifest["modalities"].values():
        for shard in entry["shards"]:
            with safe_open(str(cache_dir / shard["file"]), framework="pt") as fh:
                ids = json.loads(fh.metadata()["ids"])
            shard.pop("n"), shard.pop("ids_sha256")
            shard["ids"] = ids
    manifest["format"] = 2
    path.write_text(json.dumps(manifest))


def test_a_format_2_cache_is_read_with_a_warning_and_rewritten_without_recomputing(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "data", corrupt=None)
    cache_dir = tmp_path / "cache"
    embed_dataset(toy(), data, cache_dir, shard_size=5, progress=False)
    expected = EmbeddingCache.open(cache_dir).embeddings("text")
    _to_format_2(cache_dir)
    store._WARNED_LEGACY.clear()
    with pytest.warns(UserWarning, match=r"manifest.json: format 2 from an older spacebind .*read as is"):
        old = EmbeddingCache.open(cache_dir)
    assert old.ids("text") == [it.id for it in list(data.iter_items())] and old.count("text") == 23
    torch.testing.assert_close(old.embeddings("text", ["item3", "item0"]), expected[[3, 0]])
    counter = Counting(toy().encoders["text"])
    with pytest.warns(UserWarning, match=r"format 2 \(every item id inline\).*rewriting it in format 3.*kept"):
        cache = embed_dataset(toy(counter), data, cache_dir, shard_size=5, progress=False)
    assert counter.items == 0  # every shard kept
    manifest = json.loads((cache_dir / "manifest.json").read_text())
    assert manifest["format"] == store.FORMAT and "ids" not in manifest["modalities"]["text"]["shards"][0]
    assert cache.ids("text") == [it.id for it in list(data.iter_items())]
    torch.testing.assert_close(cache.embeddings("text"), expected)
