"""Cache integrity: tampered shards are recomputed, never used; one job at a time per cache directory."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tiny_datasets import tiny_dataset
from toy_experts import Counting, multi_expert

from spacebind.cache import store
from spacebind.cache.store import EmbeddingCache, embed_dataset
from spacebind.errors import CacheError, LockError
from spacebind.io.locks import LOCK_NAME, dir_lock
from spacebind.space import Expert, ExpertSpec


def toy(counter: Counting | None = None, name: str = "toy", dim: int = 8) -> Expert:
    fn = multi_expert(name, dim, ("text",), 0).encoders["text"]
    return Expert(name, dim, {"text": counter or fn}, spec=ExpertSpec(source=name), batch_size=4)


def new_process() -> None:
    """Forget this process's verdicts, as a later run would."""
    store._VERIFIED.clear()
    store._read_shard.cache_clear()


def tamper(path: Path, edit) -> None:
    """Rewrite a shard with edited data or metadata but its old checksum."""
    with safe_open(str(path), framework="pt") as fh:
        meta, emb = fh.metadata(), fh.get_tensor("embeddings")
    emb, meta = edit(emb.clone(), dict(meta))
    save_file({"embeddings": emb}, str(path), metadata=meta)


def flip_value(emb, meta):
    emb[1, 2] = -emb[1, 2]
    return emb, meta


def put_nan(emb, meta):
    emb[0, 0] = float("nan")
    return emb, meta


def edit_id(emb, meta):
    ids = json.loads(meta["ids"])
    ids[0] = "item99"
    return emb, {**meta, "ids": json.dumps(ids)}


@pytest.mark.parametrize("edit", [flip_value, put_nan, edit_id])
def test_a_tampered_shard_is_refused_on_read_and_recomputed_on_resume(tmp_path: Path, edit) -> None:
    data = tiny_dataset(tmp_path / "data", corrupt=None)
    cache_dir = tmp_path / "cache"
    embed_dataset(toy(), data, cache_dir, shard_size=5, progress=False)
    shard = cache_dir / "text" / "shard-00001.safetensors"
    tamper(shard, edit)
    new_process()
    with pytest.raises(CacheError, match=f"{shard}: shard data do not match their checksum.*rerun"):
        EmbeddingCache.open(cache_dir).embeddings("text")
    counter = Counting(toy().encoders["text"])
    with pytest.warns(UserWarning, match=f"{shard}: shard data do not match their checksum.*recomputing it"):
        cache = embed_dataset(toy(counter), data, cache_dir, shard_size=5, progress=False)
    assert counter.items == 5  # that shard only
    new_process()
    expected = toy().encode("text", [it.fields["text"] for it in list(data.iter_items())])
    torch.testing.assert_close(EmbeddingCache.open(cache_dir).embeddings("text"), expected, atol=2e-3, rtol=0)
    assert cache.ids("text") == [it.id for it in list(data.iter_items())]


def test_a_shard_with_other_ids_than_the_manifest_lists_is_refused(tmp_path: Path) -> None:
    """Ids live only in the shards; manifest.json lists each shard's checksum and its ids' checksum.
    A shard rewritten with swapped ids and a matching checksum of its own is still refused."""
    data = tiny_dataset(tmp_path / "data", corrupt=None)
    embed_dataset(toy(), data, tmp_path / "cache", shard_size=5, progress=False)
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert all("ids" not in s and s["n"] == 5 for s in manifest["modalities"]["text"]["shards"][:-1])
    shard = tmp_path / "cache" / "text" / "shard-00000.safetensors"

    def swap(emb, meta):
        ids = json.loads(meta["ids"])
        ids[0], ids[1] = ids[1], ids[0]
        meta = {**meta, "ids": json.dumps(ids)}
        return emb, {**meta, "sha256": store._content_sha256(emb, meta)}

    tamper(shard, swap)
    new_process()
    cache = EmbeddingCache.open(tmp_path / "cache")
    with pytest.raises(CacheError, match="shard-00000.safetensors: shard ids are not the ones .*manifest.json lists"):
        cache.ids("text")
    with pytest.raises(CacheError, match="shard-00000.safetensors: shard is not the one .*manifest.json lists"):
        cache.embeddings("text")


def test_an_edited_id_is_caught_when_ids_are_read_without_the_data(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "data", corrupt=None)
    embed_dataset(toy(), data, tmp_path / "cache", shard_size=5, progress=False)
    tamper(tmp_path / "cache" / "text" / "shard-00001.safetensors", edit_id)
    new_process()
    cache = EmbeddingCache.open(tmp_path / "cache")
    assert cache.count("text") == len(list(data.iter_items()))  # from manifest.json alone
    with pytest.raises(CacheError, match="shard-00001.safetensors: shard ids are not the ones .*lists.*rerun"):
        cache.ids("text")


def test_a_second_job_on_a_locked_cache_is_refused_naming_the_holder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("SPACEBIND_LOCK_WAIT", raising=False)  # refuse at once, whatever the caller's setting
    data = tiny_dataset(tmp_path / "data", corrupt=None)
    cache_dir = tmp_path / "cache"
    holding, release = threading.Event(), threading.Event()

    def first_job() -> None:  # holds the lock as a running embed would
        with dir_lock(cache_dir, "embedding cache"):
            holding.set()
            release.wait(30)

    thread = threading.Thread(target=first_job)
    thread.start()
    try:
        holding.wait(30)
        holder = f"pid {os.getpid()} on {socket.gethostname()} since "
        with pytest.raises(LockError, match=f"another job is using this embedding cache \\({holder}"):
            embed_dataset(toy(name="other", dim=6), data, cache_dir, shard_size=5, progress=False)
    finally:
        release.set()
        thread.join()
    assert not (cache_dir / "manifest.json").exists()  # the refused job wrote nothing
    embed_dataset(toy(), data, cache_dir, shard_size=5, progress=False)
    assert not (cache_dir / LOCK_NAME).exists()  # the owner deletes the lock when it lets go


def test_a_job_in_another_process_holds_the_lock_and_a_waiting_job_gets_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("SPACEBIND_LOCK_WAIT", raising=False)
    data = tiny_dataset(tmp_path / "data", corrupt=None)
    cache_dir = tmp_path / "cache"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from spacebind.io.locks import dir_lock\n"
         "with dir_lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(float(sys.argv[2]))\n"
         "print('released', flush=True)",
         str(cache_dir), "3"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockError, match=f"pid {holder.pid} on "):
            embed_dataset(toy(), data, cache_dir, shard_size=5, progress=False)
        monkeypatch.setenv("SPACEBIND_LOCK_WAIT", "60")  # the option: wait for the holder instead
        embed_dataset(toy(), data, cache_dir, shard_size=5, progress=False)
        assert holder.stdout.readline().strip() == "released"
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_a_lock_whose_owner_record_cannot_be_written_is_released(tmp_path: Path, monkeypatch) -> None:
    import errno

    from spacebind.errors import StorageError
    from spacebind.io import locks

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(locks.os, "write", full)
    with pytest.raises(StorageError, match=str(tmp_path)):
        with dir_lock(tmp_path, "embedding cache"):
            pass
    monkeypatch.undo()  # the disk has room again: the lock is free, in this process and in others
    with dir_lock(tmp_path, "embedding cache"):
        pass
    code = "import sys; from spacebind.io.locks import dir_lock\nwith dir_lock(sys.argv[1]): print('locked')"
    other = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert other.stdout.strip() == "locked", other.stderr


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "data", corrupt=None)
    cache_dir = tmp_path / "cache"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    cache_dir.mkdir()
    (cache_dir / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                                   "since": "2020-01-01T00:00:00+00:00"}))
    cache = embed_dataset(toy(), data, cache_dir, shard_size=5, progress=False)
    assert len(cache.ids("text")) == 23 and not (cache_dir / LOCK_NAME).exists()


def test_a_modality_the_dataset_lacks_has_no_usable_ids_even_without_a_cache_entry() -> None:
    """A dataset with no point items: asking for the base's usable point ids must not need a
    cache entry the embed step never wrote (it raised CacheError in target choice)."""
    from spacebind.cache import CacheSet
    from spacebind.space import Space

    class NoEntries:
        def ids(self, modality: str) -> list[str]:
            raise AssertionError(f"asked the cache for {modality!r}")

    space = Space.from_encoders("U", {"point": lambda xs: None, "text": lambda xs: None}, dim=2)
    assert CacheSet({"U": NoEntries()}).usable_ids(space, "point", []) == []
