"""A loaded dataset beyond `KEPT_ITEMS` items streams them from the manifest: it holds counts and
classes, not items; a smaller one keeps them, and `select` keeps a small split once read."""
from __future__ import annotations

import json
import pathlib
import tracemalloc
from pathlib import Path

import pytest

from spacebind.errors import InputError
from spacebind.io import datasets
from spacebind.io.datasets import ClassInfo, Dataset, Item

pytestmark = pytest.mark.unit


def _write(root: Path, n: int) -> None:
    root.mkdir(exist_ok=True)
    with (root / "manifest.jsonl").open("w", encoding="utf-8") as fh:
        for i in range(n):
            rec = {"id": f"x{i:06d}", "split": ("train", "val", "test")[i % 3], "label": f"c{i % 7}",
                   "text": f"caption number {i} " * 4}
            if i % 2:
                rec["audio"] = f"a/{i}.wav"
            fh.write(json.dumps(rec) + "\n")


@pytest.fixture
def streamed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "KEPT_ITEMS", 100)


def test_load_holds_counts_not_items(tmp_path: Path, streamed: None) -> None:
    _write(tmp_path / "d", 4_000)
    tracemalloc.start(5)
    try:
        data = Dataset.load(tmp_path / "d")
        snapshot = tracemalloc.take_snapshot()  # what is still allocated (other threads' transients aside)
    finally:
        tracemalloc.stop()
    # pathlib interns path parts (`sys.intern`): the interpreter's intern table may grow a few MB during
    # the pass, whoever runs it; that table is not the dataset's
    mine = [tracemalloc.Filter(True, datasets.__file__, all_frames=True), tracemalloc.Filter(False, pathlib.__file__)]
    held = sum(t.size for t in snapshot.filter_traces(mine).traces)
    # 4k items as Python objects take ~2.8 MB (measured: 6.96 MB for 10k; the loaded dataset 14 kB):
    # what stays is the counts, the labels and the manifest's path
    assert held < 100_000, held
    items = list(data.iter_items())
    assert len(items) == data.count() == 4_000
    assert data.count("val") == sum(it.split == "val" for it in items)
    assert data.count("train", "audio") == sum(it.split == "train" and "audio" in it.fields for it in items)
    assert data.count(modality="text") == 4_000 and data.count("test", "point") == 0
    assert data.splits == ["test", "train", "val"] and data.modalities() == ("text", "audio")  # MODALITIES order
    assert data.class_names == [f"c{k}" for k in range(7)]
    assert [it.id for it in data.iter_items("val", "audio")] == [it.id for it in data.select("val", "audio")] == [
        it.id for it in items if it.split == "val" and "audio" in it.fields]


def test_each_pass_reads_the_manifest_again_and_select_keeps_small_splits(tmp_path: Path, streamed: None) -> None:
    _write(tmp_path / "d", 240)  # 80 items a split
    data = Dataset.load(tmp_path / "d")
    assert isinstance(data.source, datasets.Manifest)
    assert len(list(data.iter_items())) == len(list(data.iter_items())) == 240
    val = data.select("val")
    all_items = data.select()  # 240 > KEPT_ITEMS: read, not kept
    (tmp_path / "d" / "manifest.jsonl").write_text('{"id": "bad", "split": "dev"}\n', encoding="utf-8")
    assert data.select("val") == val and data.select("val", "audio") == [it for it in val if "audio" in it.fields]
    assert len(all_items) == 240
    with pytest.raises(InputError, match=r"manifest.jsonl:1: field 'split'"):
        list(data.iter_items())
    with pytest.raises(InputError, match=r"manifest.jsonl:1: field 'split'"):
        data.select()


def test_a_small_dataset_keeps_its_items(tmp_path: Path) -> None:
    _write(tmp_path / "d", 30)
    data = Dataset.load(tmp_path / "d")
    assert isinstance(data.source, list) and len(data.source) == 30
    (tmp_path / "d" / "manifest.jsonl").write_text("", encoding="utf-8")
    assert len(list(data.iter_items())) == 30 and len(data.select("test")) == 10


def test_items_built_in_python_match_a_loaded_manifest(tmp_path: Path) -> None:
    _write(tmp_path / "d", 30)
    loaded = Dataset.load(tmp_path / "d")
    built = Dataset.of_items(tmp_path / "d", loaded.select())
    assert built.counts == loaded.counts and built.class_names == loaded.class_names
    assert built.templates == loaded.templates == ["{}"]
    assert list(built.iter_items("test")) == loaded.select("test")
    named = Dataset.of_items(tmp_path, [Item("a", "val", None, {"text": "t"})], [ClassInfo("dog", ("puppy",))], ["a {}"])
    assert named.classes == [ClassInfo("dog", ("puppy",))] and named.templates == ["a {}"]
    with pytest.raises(InputError, match="no split 'train'; the dataset has val"):
        named.check_split("train")
