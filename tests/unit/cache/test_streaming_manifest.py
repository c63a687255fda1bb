"""Embedding a manifest as a stream: the same cache as from a loaded Dataset, a chunk of items at a time."""
from __future__ import annotations

import gc
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from toy_experts import multi_expert

from spacebind.cache import store
from spacebind.cache.store import EmbeddingCache, embed_dataset
from spacebind.errors import InputError
from spacebind.io.datasets import Dataset, Item, Manifest
from spacebind.space import Expert


def _mixed(root: Path, n: int = 37) -> Path:
    """Text on every item (one blank: a bad item), an image on every third, splits alternating."""
    (root / "image").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        rec = {"id": f"s{i:03d}", "split": "train" if i % 2 else "test", "text": "" if i == 7 else f"caption {i}"}
        if i % 3 == 0:
            Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(root / "image" / f"{i}.png")
            rec["image"] = f"image/{i}.png"
        lines.append(json.dumps(rec))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return root


def _shards(cache: Path) -> dict[str, tuple[list[list[str]], list[str]]]:
    """Per modality: the shards' ids, their checksums (data and metadata; checked against the files
    when embedding finished) and the bad items. Whole-file bytes vary: safetensors orders metadata
    keys at random."""
    manifest = json.loads((cache / "manifest.json").read_text())
    opened = EmbeddingCache.open(cache)
    return {m: (list(opened.shard_ids(m)), [s["sha256"] for s in e["shards"]], e["bad"])
            for m, e in manifest["modalities"].items()}


@pytest.mark.parametrize("splits", [None, ("test",)])
def test_streamed_manifest_gives_the_loaded_datasets_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           splits: tuple[str, ...] | None) -> None:
    data = _mixed(tmp_path / "data")
    toy = multi_expert("toy", 8, ("image", "text"), 0)
    loaded = embed_dataset(toy, Dataset.load(data), tmp_path / "loaded", splits=splits, shard_size=4, progress=False)
    monkeypatch.setattr(store, "STREAM_ITEMS", 9)  # windows of two shards
    streamed = embed_dataset(toy, Manifest.open(data), tmp_path / "streamed", splits=splits, shard_size=4,
                             progress=False)
    assert _shards(tmp_path / "streamed") == _shards(tmp_path / "loaded")
    assert streamed.bad("text") == loaded.bad("text") and len(streamed.ids("image")) > 4
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "loaded").rglob("*.safetensors")}
    embed_dataset(toy, Manifest.open(data), tmp_path / "loaded", splits=splits, shard_size=4, progress=False)
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "loaded").rglob("*.safetensors")}  # resumed


def test_streaming_holds_one_chunk_of_items(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _mixed(tmp_path / "data", n=60)
    alive: list[int] = []

    def encode(xs: list[str]) -> torch.Tensor:
        gc.collect()
        # this manifest's ids only (s000…s059): other tests' world items ("s7-train-…") may be alive too
        alive.append(sum(1 for o in gc.get_objects() if type(o) is Item and re.fullmatch(r"s\d{3}", o.id)))
        return torch.ones(len(xs), 8)

    monkeypatch.setattr(store, "STREAM_ITEMS", 8)  # windows of two shards of 4
    cache = embed_dataset(Expert.from_encoders("stub", {"text": encode}, dim=8), Manifest.open(data),
                          tmp_path / "cache", shard_size=4, batch_size=2, progress=False)
    assert len(cache.ids("text")) == 59 and len(alive) > 20
    assert max(alive) <= 8


def test_bad_line_is_refused_as_by_load_before_anything_is_written(tmp_path: Path) -> None:
    data = _mixed(tmp_path / "data", n=10)
    with (data / "manifest.jsonl").open("a") as fh:
        fh.write('{"id": "s001", "text": "again"}\n')
    with pytest.raises(InputError) as by_load:
        Dataset.load(data)
    toy = multi_expert("toy", 8, ("image", "text"), 0)
    with pytest.raises(InputError) as streamed:
        embed_dataset(toy, Manifest.open(data), tmp_path / "cache", progress=False)
    assert str(streamed.value) == str(by_load.value) and "manifest.jsonl:11: duplicate item id" in str(by_load.value)
    assert not (tmp_path / "cache" / "manifest.json").exists()
