"""Training on pairs read from cache shards (`CachePairs`): the same weights as in memory in the
same order, shard-block epoch orders, resuming, and a bounded number of shards held."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from benchmarks.train_memory import write_caches
from spacebind.cache.keys import id_keys
from spacebind.errors import CacheError, InputError
from spacebind.training import trainer as training
from spacebind.training.pairs import CachePairs
from spacebind.training.threads import cpu_threads
from spacebind.training.trainer import TrainConfig, train_projector

CFG = TrainConfig(epochs=3, batch_size=64, hidden=32, lr=2e-3, patience=3)
N, SHARD = 700, 50  # 14 shards a side


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("SPACEBIND_TRAIN_THREADS", "1")
    with cpu_threads(1):
        yield


@pytest.fixture(scope="module")
def caches(tmp_path_factory: pytest.TempPathFactory):
    return write_caches(tmp_path_factory.mktemp("caches"), N, d_src=16, d_tgt=12, shard_size=SHARD)


def source(caches, max_mb: float = 0.01, window: int | None = 2, order=None) -> CachePairs:
    src, tgt = caches
    ids = src.ids("text")
    pick = ids if order is None else [ids[i] for i in order]
    return CachePairs([(src, "text", pick)], [(tgt, "text", pick)], max_mb=max_mb, window=window)



def test_parts_by_key_equal_parts_by_id_and_missing_items_are_named(caches) -> None:
    src, tgt = caches
    ids = src.ids("text")[::-3]
    by_id = CachePairs([(src, "text", ids)], [(tgt, "text", ids)])
    by_key = CachePairs([(src, "text", id_keys(ids))], [(tgt, "text", id_keys(ids))])
    assert all(torch.equal(a, b) for a, b in zip(by_id.key_tensors(), by_key.key_tensors()))
    with pytest.raises(CacheError, match=r"no text embeddings for 2 ids \['gone', 'lost'\]"):
        CachePairs([(src, "text", [ids[0], "gone", "lost"])], [(tgt, "text", ids[:3])])
    with pytest.raises(CacheError, match="no text embeddings for 1 items"):
        CachePairs([(src, "text", id_keys(["gone"]))], [(tgt, "text", id_keys(ids[:1]))])

def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_gather_reads_the_cached_rows(caches) -> None:
    src, tgt = caches
    # pairs in a scrambled item order, so the target rows of a batch sit in other shards than its source rows
    order = torch.randperm(N, generator=torch.Generator().manual_seed(1)).tolist()
    pairs = source(caches, order=order)
    x, y = src.embeddings("text"), tgt.embeddings("text")
    idx = torch.tensor([5, 699, 0, 123, 5, 350])
    gx, gy = pairs.gather(idx)
    assert gx.dtype == torch.float32 and torch.equal(gx, x[[order[i] for i in idx]])
    assert torch.equal(gy, y[[order[i] for i in idx]])
    assert len(pairs) == N and pairs.dims == (16, 12)


def test_epoch_order_visits_shards_in_blocks_and_is_seeded(caches) -> None:
    pairs = source(caches, window=3)
    order = pairs.epoch_order(seed=0, epoch=0)
    assert sorted(order.tolist()) == list(range(N))
    assert torch.equal(order, pairs.epoch_order(seed=0, epoch=0))
    assert not torch.equal(order, pairs.epoch_order(seed=0, epoch=1))
    shard = pairs.src.shard[order]
    # blocks of 3 shards (150 rows): each block holds exactly 3 shards, rows shuffled within it
    blocks = [set(shard[i:i + 3 * SHARD].tolist()) for i in range(0, N, 3 * SHARD)]
    assert [len(b) for b in blocks] == [3, 3, 3, 3, 2] and set().union(*blocks) == set(range(N // SHARD))
    assert not torch.equal(shard[:3 * SHARD], torch.sort(shard[:3 * SHARD]).values)


def test_streamed_training_equals_in_memory_training_in_the_same_order(caches, monkeypatch: pytest.MonkeyPatch) -> None:
    pairs = source(caches)
    src, tgt = caches
    x, y = src.embeddings("text"), tgt.embeddings("text")
    val = {"val_src": x[:100], "val_tgt": y[:100]}
    streamed = train_projector(pairs, None, config=CFG, progress=False, **val)
    monkeypatch.setattr(training, "epoch_order", lambda n, seed, epoch: pairs.epoch_order(seed, epoch))
    in_memory = train_projector(x, y, config=CFG, progress=False, **val)
    same_weights(streamed.head, in_memory.head)
    assert streamed.history == in_memory.history and streamed.best_epoch == in_memory.best_epoch
    # 0.01 MB (10,485 B) holds at most 8 float16 shards of 50 rows × 12 (1,200 B) or × 16 (1,600 B)
    assert pairs.lru.max_held_bytes <= 0.01 * 2**20 and pairs.lru.max_held_shards <= 8
    assert pairs.lru.reads >= 2 * N // SHARD


def test_the_lru_never_holds_more_than_its_budget(caches) -> None:
    one_shard = SHARD * 16 * 2  # the larger side's shard, float16
    pairs = source(caches, max_mb=one_shard / 2**20, window=1)
    for epoch in range(2):
        order = pairs.epoch_order(0, epoch)
        for start in range(0, N, 64):
            pairs.gather(order[start:start + 64])
    assert pairs.lru.max_held_shards == 1 and pairs.lru.max_held_bytes <= one_shard
    with pytest.raises(InputError, match="does not fit max_mb"):
        source(caches, max_mb=one_shard / 2 / 2**20)


def test_interrupted_streamed_training_resumes_to_the_same_weights(caches, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    src, tgt = caches
    val = {"val_src": src.embeddings("text")[:100], "val_tgt": tgt.embeddings("text")[:100]}
    full = train_projector(source(caches), None, config=CFG, progress=False, **val)
    real = training._end_epoch
    calls = {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        done = real(*args, **kwargs)
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed after epoch 2")
        return done

    monkeypatch.setattr(training, "_end_epoch", dying)
    with pytest.raises(KeyboardInterrupt):
        train_projector(source(caches), None, config=CFG, checkpoint_dir=tmp_path, progress=False, **val)
    monkeypatch.setattr(training, "_end_epoch", real)
    resumed = train_projector(source(caches), None, config=CFG, checkpoint_dir=tmp_path, progress=False, **val)
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2] and resumed.history == full.history
    same_weights(full.head, resumed.head)
    # other pairs (another row order) are another run: its state is set aside with a warning
    with pytest.warns(UserWarning, match="another config or other data"):
        train_projector(source(caches, order=list(reversed(range(N)))), None, config=CFG, checkpoint_dir=tmp_path,
                        progress=False, **val)


def test_a_source_takes_no_tgt_tensor(caches) -> None:
    with pytest.raises(InputError, match="takes no tgt tensor"):
        train_projector(source(caches), torch.zeros(N, 12), config=CFG, progress=False)
