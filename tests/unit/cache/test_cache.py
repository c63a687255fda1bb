"""Embedding caches: float16 shards, resume without recompute, refusal of another expert's cache."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from tiny_datasets import tiny_dataset
from toy_experts import multi_expert

from spacebind.cache.store import EmbeddingCache, embed_dataset
from spacebind.errors import CacheError
from spacebind.space import Expert, ExpertSpec


class Counting:
    """Wraps an encoder and counts the items it encodes; can fail on the k-th call."""

    def __init__(self, fn, fail_on: int | None = None) -> None:
        self.fn, self.fail_on, self.items, self.calls = fn, fail_on, 0, 0

    def __call__(self, xs):
        self.calls += 1
        if self.calls == self.fail_on:
            raise KeyboardInterrupt("killed")
        self.items += len(xs)
        return self.fn(xs)


def expert_with(counters: dict[str, Counting], sha: str = "abc") -> Expert:
    spec = ExpertSpec(source="toy", checkpoint="toy.bin", sha256=sha)
    return Expert("toy", 8, dict(counters), spec=spec, batch_size=4)


def test_cache_contents_bad_items_and_chunks(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "data")
    toy = multi_expert("toy", 8, ("image", "text"), 0)
    cache = embed_dataset(toy, data, tmp_path / "cache", shard_size=5, progress=False)
    assert cache.modalities == ("text", "image") and cache.dim == 8 and cache.expert == "toy"
    ids = cache.ids("image")
    assert len(ids) == 22 and "item5" not in ids
    assert cache.bad("image")[0]["id"] == "item5" and "not a readable image" in cache.bad("image")[0]["reason"]
    direct = toy.encode("image", [{it.id: it for it in data.iter_items()}[i].fields["image"] for i in ids])
    torch.testing.assert_close(cache.embeddings("image"), direct, atol=2e-3, rtol=0)
    with safe_open(str(tmp_path / "cache" / "image" / "shard-00000.safetensors"), framework="pt") as fh:
        assert fh.get_slice("embeddings").get_dtype() == "F16"
    picked = ["item7", "item1", "item20"]
    torch.testing.assert_close(cache.embeddings("image", picked), direct[[ids.index(i) for i in picked]], atol=2e-3, rtol=0)
    chunks = list(cache.iter_chunks("image", chunk_size=4))
    assert [len(c[0]) for c in chunks] == [4, 4, 4, 4, 4, 2]
    torch.testing.assert_close(torch.cat([c[1] for c in chunks]), cache.embeddings("image"))
    assert not list((tmp_path / "cache").rglob("*.tmp"))
    with pytest.raises(CacheError, match="no image embeddings for ids"):
        cache.embeddings("image", ["item5"])
    with pytest.raises(CacheError, match="has no 'audio' embeddings"):
        cache.ids("audio")


def test_interrupted_embed_resumes_without_recomputing(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "data", corrupt=None)
    fn = multi_expert("toy", 8, ("text",), 0).encoders["text"]
    dying = Counting(fn, fail_on=5)  # batches of 4: shards 0 and 1 take calls 1-4
    with pytest.raises(KeyboardInterrupt):
        embed_dataset(expert_with({"text": dying}), data, tmp_path / "cache", shard_size=5, progress=False)
    assert dying.items == 10  # two shards of five finished before the kill
    resumed = Counting(fn)
    cache = embed_dataset(expert_with({"text": resumed}), data, tmp_path / "cache", shard_size=5, progress=False)
    assert resumed.items == 13 and len(cache.ids("text")) == 23
    again = Counting(fn)
    embed_dataset(expert_with({"text": again}), data, tmp_path / "cache", shard_size=5, progress=False)
    assert again.items == 0
    shard = tmp_path / "cache" / "text" / "shard-00001.safetensors"
    shard.write_bytes(b"damaged")
    repair = Counting(fn)
    with pytest.warns(UserWarning, match="shard-00001.safetensors: unreadable shard.*recomputing it"):
        embed_dataset(expert_with({"text": repair}), data, tmp_path / "cache", shard_size=5, progress=False)
    assert repair.items == 5
    full = EmbeddingCache.open(tmp_path / "cache").embeddings("text")
    torch.testing.assert_close(full, multi_expert("toy", 8, ("text",), 0).encode("text", [it.fields["text"] for it in list(data.iter_items())]), atol=2e-3, rtol=0)


def test_cache_of_another_expert_or_checkpoint_is_refused(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "data", corrupt=None)
    fn = multi_expert("toy", 8, ("text",), 0).encoders["text"]
    embed_dataset(expert_with({"text": Counting(fn)}), data, tmp_path / "cache", progress=False)
    with pytest.raises(CacheError, match="sha256='abc'.*not 'def'"):
        embed_dataset(expert_with({"text": Counting(fn)}, sha="def"), data, tmp_path / "cache", progress=False)
    other = Expert("other", 8, {"text": fn}, spec=ExpertSpec(source="other"))
    with pytest.raises(CacheError, match="expert 'toy' vs 'other'"):
        embed_dataset(other, data, tmp_path / "cache", progress=False)
    with pytest.raises(CacheError, match="shard_size"):
        embed_dataset(expert_with({"text": Counting(fn)}), data, tmp_path / "cache", shard_size=7, progress=False)
    with pytest.raises(CacheError, match="not an embedding cache"):
        EmbeddingCache.open(tmp_path / "data")


def test_caches_key_on_the_datasets_own_content_and_place(tmp_path: Path) -> None:
    """Two directories with one manifest but other media get their own default caches; a dataset
    built in Python keys on its items (its root needs no manifest, and edited items are not served
    the embeddings of the manifest's)."""
    import json

    from spacebind.cache import dataset_key
    from spacebind.io.datasets import Dataset, Item

    for name in ("v1", "v2"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.jsonl").write_text(json.dumps({"id": "a", "text": "hello"}) + "\n")
    v1, v2 = Dataset.load(tmp_path / "v1"), Dataset.load(tmp_path / "v2")
    assert v1.sha256 == v2.sha256 and dataset_key(v1) != dataset_key(v2)
    length = Expert.from_encoders("len", {"text": lambda ts: torch.tensor([[float(len(t)), 1.0] for t in ts])}, dim=2)
    built = Dataset.of_items(tmp_path / "nowhere", [Item("a", "train", None, {"text": "hi"})])
    cache = embed_dataset(length, built, tmp_path / "c0", progress=False)
    torch.testing.assert_close(cache.embeddings("text"), length.encode("text", ["hi"]), atol=1e-3, rtol=0)  # float16
    embed_dataset(length, v1, tmp_path / "c1", progress=False)
    edited = Dataset.of_items(tmp_path / "v1", [Item("a", "train", None, {"text": "a much longer caption"})])
    assert edited.sha256 != v1.sha256
    with pytest.raises(CacheError, match="was made with dataset_sha256="):
        embed_dataset(length, edited, tmp_path / "c1", progress=False)


def test_an_expert_with_tuple_kwargs_resumes_its_cache(tmp_path: Path) -> None:
    import json

    from spacebind.io.datasets import Dataset

    (tmp_path / "manifest.jsonl").write_text(json.dumps({"id": "a", "text": "x"}) + "\n")
    expert = Expert("e", 2, {"text": lambda ts: torch.ones(len(ts), 2)}, spec=ExpertSpec(source="s", kwargs={"sizes": (1, 2)}))
    first = embed_dataset(expert, Dataset.load(tmp_path), tmp_path / "c", progress=False)
    again = embed_dataset(expert, Dataset.load(tmp_path), tmp_path / "c", progress=False)  # was: made with a list
    assert torch.equal(first.embeddings("text"), again.embeddings("text"))


def test_a_cache_records_the_precision_it_ran_at(tmp_path: Path) -> None:
    """bf16 / fp16 shards never mix with fp32 ones on resume; caches made before the field resume as fp32."""
    import json

    from spacebind.io.datasets import Dataset

    (tmp_path / "manifest.jsonl").write_text(json.dumps({"id": "a", "text": "x"}) + "\n")
    expert = Expert("e", 2, {"text": lambda ts: torch.ones(len(ts), 2)}, spec=ExpertSpec(source="s"))
    embed_dataset(expert, Dataset.load(tmp_path), tmp_path / "c", progress=False, precision="bf16")
    header = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert header["precision"] == ("bf16" if torch.cuda.is_available() else "fp32")  # autocast runs on CUDA only
    header["precision"] = "fp16"  # as a GPU run would have recorded it
    (tmp_path / "c" / "manifest.json").write_text(json.dumps(header))
    with pytest.raises(CacheError, match="was made with precision='fp16', not 'fp32'"):
        embed_dataset(expert, Dataset.load(tmp_path), tmp_path / "c", progress=False)
    del header["precision"]  # a cache written before precision was recorded
    (tmp_path / "c" / "manifest.json").write_text(json.dumps(header))
    embed_dataset(expert, Dataset.load(tmp_path), tmp_path / "c", progress=False)


def test_a_changed_expert_gets_its_own_cache_and_the_old_one_is_found_again(tmp_path: Path) -> None:
    """`ensure_caches` (fuse's work directory, eval's --cache-dir): an expert given another checkpoint
    under the same name embeds anew beside the old cache instead of failing on it, and switching
    back re-encodes nothing."""
    from spacebind.cache import ensure_caches
    from spacebind.cache.cache_set import leaf_cache_dir

    data = tiny_dataset(tmp_path / "data", corrupt=None)
    fn = multi_expert("toy", 8, ("text",), 0).encoders["text"]
    counters = {sha: Counting(fn) for sha in ("abc", "def", "abc again")}
    first = ensure_caches([expert_with({"text": counters["abc"]})], data, tmp_path / "caches", progress=False)
    second = ensure_caches([expert_with({"text": counters["def"]}, sha="def")], data, tmp_path / "caches", progress=False)
    assert counters["abc"].items == counters["def"].items > 0
    assert first.caches["toy"].root != second.caches["toy"].root
    assert {p.name.split("-")[0] for p in (tmp_path / "caches").iterdir()} == {"toy"}
    again = ensure_caches([expert_with({"text": counters["abc again"]})], data, tmp_path / "caches", progress=False)
    assert counters["abc again"].items == 0 and again.caches["toy"].root == first.caches["toy"].root
    assert leaf_cache_dir(tmp_path, expert_with({"text": Counting(fn)})) == leaf_cache_dir(tmp_path, expert_with({"text": fn}))


def test_bad_items_are_kept_on_resume_and_embedded_again_with_retry_bad(tmp_path: Path) -> None:
    """A file that was unreadable and is fixed later: a plain resume keeps it bad (nothing
    recomputed); `retry_bad` embeds again only the shard that held it."""
    from PIL import Image

    data = tiny_dataset(tmp_path / "data")
    fn = multi_expert("toy", 8, ("image",), 0).encoders["image"]
    first = embed_dataset(expert_with({"image": Counting(fn)}), data, tmp_path / "cache", shard_size=5, progress=False)
    assert [b["id"] for b in first.bad("image")] == ["item5"]
    Image.new("RGB", (6, 6), (10, 200, 30)).save(tmp_path / "data" / "image" / "5.png", format="PNG")
    resumed = Counting(fn)
    cache = embed_dataset(expert_with({"image": resumed}), data, tmp_path / "cache", shard_size=5, progress=False)
    assert resumed.items == 0 and [b["id"] for b in cache.bad("image")] == ["item5"]
    retried = Counting(fn)
    cache = embed_dataset(expert_with({"image": retried}), data, tmp_path / "cache", shard_size=5, retry_bad=True,
                          progress=False)
    assert retried.items == 5 and cache.bad("image") == [] and len(cache.ids("image")) == 23
    item5 = {it.id: it for it in data.iter_items()}["item5"].fields["image"]
    torch.testing.assert_close(cache.embeddings("image", ["item5"]), expert_with({"image": fn}).encode("image", [item5]),
                               atol=2e-3, rtol=0)
