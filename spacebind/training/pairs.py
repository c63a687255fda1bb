"""Training pairs read from embedding-cache shards instead of memory (caches larger than memory).

`CachePairs` holds, for each side of N pairs, the cache shard and row of every pair's embedding
(two int32 arrays; the embeddings stay on disk). `gather(idx)` reads a batch shard by shard
through one byte-bounded LRU of float16 shards (`ShardLRU`, at most `max_mb` of shard data held;
rows are copied out as float32, so nothing keeps an evicted shard alive). `epoch_order` visits the
pairs in shard blocks: the source side's shards in a (seed, epoch)-shuffled order, cut into windows
of `window` shards, rows shuffled within each window; so a batch touches about `window` source
shards and every shard is read about once an epoch when both sides follow the same item order.

A side may also be a `SpaceSide`: a bound space's rows, combined batch by batch from the rows of
its leaves' shards (the same LRU), so a bond onto a bound space streams too.

`train_projector(CachePairs(...), None, config=...)` trains on it; its epoch order differs from
the in-memory path's, so the weights do too, by order only: the same order gives the same weights
bit for bit (`tests/unit/training/test_pairs.py`). Shards are checked against their checksums on
first read, as `EmbeddingCache` reads them. See docs/decisions.md (2026-12-01, caches larger
than memory).
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors import safe_open

from spacebind.cache.store import EmbeddingCache, verified_shard
from spacebind.errors import CacheError, InputError

if TYPE_CHECKING:
    from spacebind.space import Space

DEFAULT_MB = 256.0


@dataclass(frozen=True)
class ShardFile:
    """One shard of a cache modality: its file, manifest checksum, rows and width."""

    path: Path
    sha256: str
    rows: int
    dim: int

    @property
    def nbytes(self) -> int:
        return self.rows * self.dim * 2  # float16


def shard_files(cache: EmbeddingCache, modality: str) -> list[ShardFile]:
    """The shards of `modality` in cache order, sizes read from their headers (no data read)."""
    files = []
    for shard in cache._entry(modality)["shards"]:
        path = cache.root / shard["file"]
        try:
            with safe_open(str(path), framework="pt") as fh:
                rows, dim = fh.get_slice("embeddings").get_shape()
        except Exception as exc:  # safetensors raises its own types for damaged files
            raise CacheError(f"{path}: unreadable shard ({exc}); rerun `spacebind embed` on this cache") from None
        files.append(ShardFile(path, shard["sha256"], int(rows), int(dim)))
    return files


@dataclass
class ShardLRU:
    """Float16 shards read whole, the least recently used dropped once more than `max_bytes` are
    held (the shard being read always stays). Counters: `reads` (files read), `hits`,
    `max_held_bytes` and `max_held_shards` (the most held at once)."""

    max_bytes: int
    held: OrderedDict[ShardFile, torch.Tensor] = field(default_factory=OrderedDict)
    reads: int = 0
    hits: int = 0
    max_held_bytes: int = 0
    max_held_shards: int = 0

    @property
    def held_bytes(self) -> int:
        return sum(s.nbytes for s in self.held)

    def get(self, shard: ShardFile) -> torch.Tensor:
        if shard in self.held:
            self.hits += 1
            self.held.move_to_end(shard)
            return self.held[shard]
        while self.held and self.held_bytes + shard.nbytes > self.max_bytes:
            self.held.popitem(last=False)
        data = _read(shard)
        self.reads += 1
        self.held[shard] = data
        self.max_held_bytes = max(self.max_held_bytes, self.held_bytes)
        self.max_held_shards = max(self.max_held_shards, len(self.held))
        return data


def _read(shard: ShardFile) -> torch.Tensor:
    """A shard's float16 data, checked against its checksum (once per process, see `store`)."""
    try:
        meta, emb = verified_shard(shard.path)
        if meta["sha256"] != shard.sha256:
            raise CacheError(f"{shard.path}: shard is not the one its manifest lists (other checksum)")
        if emb is None:
            with safe_open(str(shard.path), framework="pt") as fh:
                emb = fh.get_tensor("embeddings")
    except (OSError, CacheError) as exc:
        raise CacheError(f"{exc}; rerun `spacebind embed` (or fuse) on this cache to recompute it") from None
    if tuple(emb.shape) != (shard.rows, shard.dim):
        raise CacheError(f"{shard.path}: shard changed while training (shape {tuple(emb.shape)})")
    return emb


Part = tuple[EmbeddingCache, str, "Sequence[str] | np.ndarray"]  # (cache, modality, ids or `id_keys`)


class _Side:
    """One side of the pairs: the shard table and each pair's (shard, row)."""

    def __init__(self, parts: Sequence[Part]) -> None:
        self.shards: list[ShardFile] = []
        shard_ids, rows = [], []
        for cache, modality, ids in parts:
            files = shard_files(cache, modality)
            starts = torch.tensor([0] + [f.rows for f in files]).cumsum(0)
            found = cache.rows(modality, ids)
            if (found < 0).any():
                missing = np.flatnonzero(found < 0)
                named = f"ids {[ids[j] for j in missing[:5].tolist()]}" if not isinstance(ids, np.ndarray) else "items"
                raise CacheError(f"cache {cache.root} has no {modality} embeddings for {len(missing)} {named}"
                                 f"{' …' if len(missing) > 5 else ''}")
            global_rows = torch.from_numpy(found)
            k = torch.searchsorted(starts, global_rows, right=True) - 1
            shard_ids.append(k + len(self.shards))
            rows.append(global_rows - starts[k])
            self.shards += files
        dims = {f.dim for f in self.shards}
        if len(dims) > 1:
            raise InputError(f"pairs read from caches of different widths {sorted(dims)} on one side")
        self.dim = dims.pop() if dims else 0
        self.shard = torch.cat(shard_ids).to(torch.int32) if shard_ids else torch.empty(0, dtype=torch.int32)
        self.row = torch.cat(rows).to(torch.int32) if rows else torch.empty(0, dtype=torch.int32)

    def gather(self, idx: torch.Tensor, lru: ShardLRU) -> torch.Tensor:
        """Float32 rows of pairs `idx`, shard by shard in ascending shard order."""
        out = torch.empty(len(idx), self.dim)
        shard = self.shard[idx]
        for k in torch.unique(shard).tolist():
            at = (shard == k).nonzero().squeeze(1)
            out[at] = lru.get(self.shards[k])[self.row[idx[at]].long()].float()
        return out

    @property
    def files(self) -> list[ShardFile]:
        """Every shard this side reads."""
        return self.shards

    @property
    def block_bytes(self) -> int:
        """The most shard data one source shard of a block brings in on this side (at least 1)."""
        return max((s.nbytes for s in self.shards), default=1)

    def key(self) -> list[torch.Tensor]:
        ident = hashlib.sha256("\n".join(f"{s.sha256}:{s.rows}:{s.dim}" for s in self.shards).encode()).digest()
        return [torch.frombuffer(bytearray(ident), dtype=torch.uint8), self.shard, self.row]


class SpaceSide:
    """One side of the pairs whose rows are a space's `combine` of its leaves' cached rows (a bound
    space, whose embeddings come from several caches). A part `(modality, keys)` reads every leaf
    covering the modality through a `_Side` of that leaf's cache, and each batch is combined as it
    is read. The shard-block order follows the part's first leaf.

    Args:
        space: the space whose rows these are (`combine` over its leaves).
        caches: each leaf's embedding cache, by leaf name.
        parts: `(modality, id_keys)` in order, concatenated like `torch.cat`.
    """

    def __init__(self, space: "Space", caches: Mapping[str, EmbeddingCache],
                 parts: Sequence[tuple[str, np.ndarray]]) -> None:
        self.space, self.dim = space, space.dim
        self.parts: list[tuple[str, int, int, dict[str, _Side]]] = []
        self.shards: list[ShardFile] = []
        shard_ids, start = [], 0
        for modality, keys in parts:
            leaves = {leaf.name: _Side([(caches[leaf.name], modality, keys)]) for leaf in space.leaves_for(modality)}
            first = next(iter(leaves.values()))
            shard_ids.append(first.shard.long() + len(self.shards))
            self.shards += first.shards
            self.parts.append((modality, start, start + len(keys), leaves))
            start += len(keys)
        self.shard = torch.cat(shard_ids).to(torch.int32) if shard_ids else torch.empty(0, dtype=torch.int32)

    @property
    def files(self) -> list[ShardFile]:
        """Every shard this side reads: each part's leaves'."""
        return [f for *_, leaves in self.parts for side in leaves.values() for f in side.shards]

    @property
    def block_bytes(self) -> int:
        """The most shard data one shard of a block brings in: a shard of every leaf of a part."""
        return max((sum(side.block_bytes for side in leaves.values()) for *_, leaves in self.parts), default=1)

    def gather(self, idx: torch.Tensor, lru: ShardLRU) -> torch.Tensor:
        """Float32 rows of pairs `idx`: each part's leaf rows, combined by the space."""
        out = torch.empty(len(idx), self.dim)
        for modality, start, stop, leaves in self.parts:
            at = ((idx >= start) & (idx < stop)).nonzero().squeeze(1)
            if len(at):
                local = idx[at] - start
                out[at] = self.space.combine(modality, {name: side.gather(local, lru) for name, side in leaves.items()})
        return out

    def key(self) -> list[torch.Tensor]:
        """Each leaf side's key, and what decides how the space combines them: every bond's λ, κ
        (routed: scales), and head weights."""
        digest = hashlib.sha256()
        for node in getattr(self.space, "bonds", list)():
            digest.update(repr((node.lambdas, getattr(node, "channels", None), getattr(node, "scales", None))).encode())
            for name, head in sorted(node.heads.items()):
                for key, tensor in head.state_dict().items():
                    digest.update(f"{name}.{key}".encode())
                    digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        keys = [side.key() for *_, leaves in self.parts for side in leaves.values()]
        return [torch.frombuffer(bytearray(digest.digest()), dtype=torch.uint8), *(t for k in keys for t in k)]


class CachePairs:
    """N training pairs read from cache shards: pair i is (src embedding of `src_ids[i]`, tgt
    embedding of `tgt_ids[i]`), built from parts so several (cache, modality) combinations can be
    concatenated in order like `torch.cat` of their tensors.

    Args:
        src, tgt: parts `(cache, modality, ids)`, the ids as strings or as `id_keys`, or a
            `SpaceSide`; the parts of a side must have one width, and the two sides the same number
            of ids in all.
        max_mb: shard data held in memory at most (MB of float16, both sides together).
        window: source shards per block of the epoch order (default: as many source and target
            shards as fit in half of `max_mb`, at least 1).

    Raises:
        InputError: sides of different lengths, or a shard larger than `max_mb`.
        CacheError: an id missing from its cache, or an unreadable shard header.
    """

    def __init__(self, src: Sequence[Part] | SpaceSide,
                 tgt: Sequence[Part] | SpaceSide, *, max_mb: float = DEFAULT_MB,
                 window: int | None = None) -> None:
        self.src, self.tgt = (side if isinstance(side, SpaceSide) else _Side(side) for side in (src, tgt))
        if len(self.src.shard) != len(self.tgt.shard):
            raise InputError(f"paired sides of {len(self.src.shard)} and {len(self.tgt.shard)} rows")
        self.lru = ShardLRU(int(max_mb * 2**20))
        largest = max((s.nbytes for s in self.src.files + self.tgt.files), default=0)
        if largest > self.lru.max_bytes:
            raise InputError(f"a shard of {largest / 2**20:.1f} MB does not fit max_mb={max_mb}")
        if window is None:
            window = max(1, self.lru.max_bytes // 2 // max(1, self.src.block_bytes + self.tgt.block_bytes))
        if window < 1:
            raise InputError(f"window must be at least 1 shard, got {window}")
        self.window = window

    def __len__(self) -> int:
        return len(self.src.shard)

    @property
    def dims(self) -> tuple[int, int]:
        return self.src.dim, self.tgt.dim

    def gather(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The float32 (src, tgt) rows of pairs `idx` [b], in that order.

        Raises:
            InputError: a row holds NaN or infinite values."""
        idx = idx.cpu()
        x, y = self.src.gather(idx, self.lru), self.tgt.gather(idx, self.lru)
        if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
            raise InputError("training pairs: a cached row holds NaN or infinite values")
        return x, y

    def epoch_order(self, seed: int, epoch: int) -> torch.Tensor:
        """The (seed, epoch)-determined order of the pairs in one epoch, in blocks of `window`
        source shards (shuffled shard order, rows shuffled within a block)."""
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        rank = torch.empty(len(self.src.shards), dtype=torch.int64)
        rank[torch.randperm(len(self.src.shards), generator=g)] = torch.arange(len(self.src.shards))
        rows = torch.randperm(len(self), generator=g)
        block = rank[self.src.shard[rows].long()] // self.window
        return rows[torch.sort(block, stable=True).indices]

    def key_tensors(self) -> list[torch.Tensor]:
        """What identifies the data of a run (for its resumable state): the shards' checksums and
        every pair's (shard, row) on both sides, plus the epoch-order window."""
        return [*self.src.key(), *self.tgt.key(), torch.tensor([self.window])]
