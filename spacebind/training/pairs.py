"""Training pairs read from embedding-cache shards instead of memory (caches larger than memory).

`CachePairs` holds, for each side of N pairs, the cache shard and row of every pair's embedding
(two int32 arrays; the embeddings stay on disk). `gather(idx)` reads a batch shard by shard
through one byte-bounded LRU of float16 shards (`ShardLRU`, at most `max_mb` of shard data held;
rows are copied out as float32, so nothing keeps an evicted shard alive). `epoch_order` visits the
pairs in shard blocks: the source side's shards in a (seed, epoch)-shuffled order, cut into windows
of `window` shards, rows shuffled within each window; so a batch touches about `window` source
shards and every shard is read about once an epoch when both sides follow the same item order.

A side may also be a `SpaceSide` (a bound space's rows, combined batch by batch from the rows of
its leaves' shards, the same LRU), a `MeanSide` (weighted means of k rows: pseudo partners) or a
`ConcatSide` of sides; `subset(rows)` is a mixture member's share of the pairs.

`train_projector(CachePairs(...), None, config=...)` trains on it; its epoch order differs from
the in-memory path's, so the weights do too, by order only: the same order gives the same weights
bit for bit (`tests/unit/training/test_pairs.py`). Shards are checked against their checksums on
first read, as `EmbeddingCache` reads them. See docs/decisions.md (2026-12-01, caches larger
than memory).
"""
from __future__ import annotations

import copy
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
from spacebind.retrieval.mining import weighted_means
from spacebind.training.order import block_order

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


class Side:
    """One side of N pairs read from shards: `dim`, each pair's shard in `shards` (`shard`, which
    orders an epoch's blocks), every shard it reads (`files`), the most shard data one block shard
    brings in (`block_bytes`), `gather(idx, lru)` → float32 rows, and `key()` (what identifies it)."""

    dim: int
    shards: list[ShardFile]
    shard: torch.Tensor

    @property
    def files(self) -> list[ShardFile]:
        return self.shards

    @property
    def block_bytes(self) -> int:
        return max((s.nbytes for s in self.shards), default=1)

    def gather(self, idx: torch.Tensor, lru: ShardLRU) -> torch.Tensor:
        raise NotImplementedError

    def key(self) -> list[torch.Tensor]:
        raise NotImplementedError


class _Side(Side):
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

    def key(self) -> list[torch.Tensor]:
        ident = hashlib.sha256("\n".join(f"{s.sha256}:{s.rows}:{s.dim}" for s in self.shards).encode()).digest()
        return [torch.frombuffer(bytearray(ident), dtype=torch.uint8), self.shard, self.row]


def cache_side(parts: Sequence[Part]) -> Side:
    """The rows of cache parts `(cache, modality, ids)`, one after another (one width)."""
    return _Side(parts)


class SpaceSide(Side):
    """One side of the pairs whose rows are a space's `combine` of its leaves' cached rows (a bound
    space, whose embeddings come from several caches): the items `keys` in `modality`, each leaf
    covering the modality read through a `_Side` of its cache, combined batch by batch. The
    shard-block order follows the first leaf. Several modalities: a `ConcatSide` of these.

    Args:
        space: the space whose rows these are (`combine` over its leaves).
        caches: each leaf's embedding cache, by leaf name.
        modality, keys: the modality and the items (`id_keys`), in order.
    """

    def __init__(self, space: "Space", caches: Mapping[str, EmbeddingCache], modality: str,
                 keys: np.ndarray) -> None:
        self.space, self.modality, self.dim = space, modality, space.dim
        self.leaves = {leaf.name: _Side([(caches[leaf.name], modality, keys)]) for leaf in space.leaves_for(modality)}
        first = next(iter(self.leaves.values()))
        self.shards, self.shard = first.shards, first.shard

    @property
    def files(self) -> list[ShardFile]:
        return [f for side in self.leaves.values() for f in side.shards]

    @property
    def block_bytes(self) -> int:
        """A shard of every leaf."""
        return sum(side.block_bytes for side in self.leaves.values())

    def gather(self, idx: torch.Tensor, lru: ShardLRU) -> torch.Tensor:
        return self.space.combine(self.modality, {name: side.gather(idx, lru) for name, side in self.leaves.items()})

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
        leaves = [t for side in self.leaves.values() for t in side.key()]
        return [torch.frombuffer(bytearray(digest.digest()), dtype=torch.uint8), *leaves]


class _Over(Side):
    """A side computed from another, `inner`, whose shards it reads."""

    inner: Side

    @property
    def files(self) -> list[ShardFile]:
        return self.inner.files

    @property
    def block_bytes(self) -> int:
        return self.inner.block_bytes


class MeanSide(_Over):
    """One side whose row i is the normalised `weights[i]`-mean of k rows of `inner` (rows i·k …
    i·k + k − 1; part by part with `blocks`, the target space's): a pseudo partner, the weighted mean of mined neighbours' target embeddings
    (`spacebind.retrieval.pseudo`), computed per batch instead of stored."""

    def __init__(self, inner: Side, weights: torch.Tensor, blocks: Sequence[int] | None = None) -> None:
        n, k = weights.shape
        if len(inner.shard) != n * k:
            raise InputError(f"a mean of {k} rows for {n} pairs needs {n * k} rows, got {len(inner.shard)}")
        self.inner, self.weights, self.k, self.blocks = inner, weights.float(), k, blocks
        self.dim, self.shards, self.shard = inner.dim, inner.shards, inner.shard[::k]

    def gather(self, idx: torch.Tensor, lru: ShardLRU) -> torch.Tensor:
        rows = idx.unsqueeze(1) * self.k + torch.arange(self.k)
        return weighted_means(self.weights[idx], rows, lambda at: self.inner.gather(torch.from_numpy(at), lru),
                              chunk_size=max(1, len(idx)), blocks=self.blocks)

    def key(self) -> list[torch.Tensor]:
        return [*self.inner.key(), self.weights, torch.tensor(list(self.blocks or ()), dtype=torch.int64)]


class ConcatSide(Side):
    """Sides one after another, like `torch.cat` of their rows (one width)."""

    def __init__(self, sides: Sequence[Side]) -> None:
        dims = {side.dim for side in sides}
        if len(dims) > 1:
            raise InputError(f"pairs read from caches of different widths {sorted(dims)} on one side")
        self.sides, self.dim = list(sides), dims.pop() if dims else 0
        self.starts = np.cumsum([0, *(len(side.shard) for side in self.sides)])
        self.shards, shard_ids = [], []
        for side in self.sides:
            shard_ids.append(side.shard.long() + len(self.shards))
            self.shards = self.shards + side.shards
        self.shard = torch.cat(shard_ids).to(torch.int32) if shard_ids else torch.empty(0, dtype=torch.int32)

    @property
    def files(self) -> list[ShardFile]:
        return [f for side in self.sides for f in side.files]

    @property
    def block_bytes(self) -> int:
        return max((side.block_bytes for side in self.sides), default=1)

    def gather(self, idx: torch.Tensor, lru: ShardLRU) -> torch.Tensor:
        out = torch.empty(len(idx), self.dim)
        for side, start, stop in zip(self.sides, self.starts[:-1].tolist(), self.starts[1:].tolist()):
            at = ((idx >= start) & (idx < stop)).nonzero().squeeze(1)
            if len(at):
                out[at] = side.gather(idx[at] - start, lru)
        return out

    def key(self) -> list[torch.Tensor]:
        return [t for side in self.sides for t in side.key()]


class _RowsSide(_Over):
    """The pairs `rows` of another side (a mixture member's subset)."""

    def __init__(self, inner: Side, rows: torch.Tensor) -> None:
        self.inner, self.rows = inner, rows.long()
        self.dim, self.shards, self.shard = inner.dim, inner.shards, inner.shard[self.rows]

    def gather(self, idx: torch.Tensor, lru: ShardLRU) -> torch.Tensor:
        return self.inner.gather(self.rows[idx], lru)

    def key(self) -> list[torch.Tensor]:
        return [*self.inner.key(), self.rows]


def shard_budget(files: Sequence[ShardFile], block_bytes: int, max_mb: float) -> tuple[ShardLRU, int]:
    """A `ShardLRU` of `max_mb` MB for reading `files`, and the default shard-block window: as many
    blocks of `block_bytes` (a shard of every side a block reads) as fit in half of it, at least 1.

    Raises:
        InputError: a shard of `files` larger than `max_mb`."""
    lru = ShardLRU(int(max_mb * 2**20))
    largest = max((f.nbytes for f in files), default=0)
    if largest > lru.max_bytes:
        raise InputError(f"a shard of {largest / 2**20:.1f} MB does not fit max_mb={max_mb}")
    return lru, max(1, lru.max_bytes // 2 // max(1, block_bytes))


class CachePairs:
    """N training pairs read from cache shards: pair i is (src embedding of `src_ids[i]`, tgt
    embedding of `tgt_ids[i]`), built from parts so several (cache, modality) combinations can be
    concatenated in order like `torch.cat` of their tensors.

    Args:
        src, tgt: parts `(cache, modality, ids)`, the ids as strings or as `id_keys`, or a `Side`
            (`SpaceSide`, `MeanSide`, `ConcatSide`); the parts of a side must have one width, and
            the two sides the same number of ids in all.
        max_mb: shard data held in memory at most (MB of float16, both sides together).
        window: source shards per block of the epoch order (default: as many source and target
            shards as fit in half of `max_mb`, at least 1).

    Raises:
        InputError: sides of different lengths, or a shard larger than `max_mb`.
        CacheError: an id missing from its cache, or an unreadable shard header.
    """

    def __init__(self, src: Sequence[Part] | Side,
                 tgt: Sequence[Part] | Side, *, max_mb: float = DEFAULT_MB,
                 window: int | None = None) -> None:
        self.src, self.tgt = (side if isinstance(side, Side) else _Side(side) for side in (src, tgt))
        if len(self.src.shard) != len(self.tgt.shard):
            raise InputError(f"paired sides of {len(self.src.shard)} and {len(self.tgt.shard)} rows")
        self.lru, default = shard_budget(self.src.files + self.tgt.files, self.src.block_bytes + self.tgt.block_bytes,
                                         max_mb)
        window = default if window is None else window
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

    def subset(self, rows: torch.Tensor) -> "CachePairs":
        """The pairs `rows` of these (e.g. one mixture member's), sharing their shard LRU and window."""
        view = copy.copy(self)
        view.src, view.tgt = _RowsSide(self.src, rows), _RowsSide(self.tgt, rows)
        return view

    def epoch_order(self, seed: int, epoch: int) -> torch.Tensor:
        """The (seed, epoch)-determined order of the pairs in one epoch, in blocks of `window`
        source shards (shuffled shard order, rows shuffled within a block)."""
        return block_order(self.src.shard.long(), len(self.src.shards), self.window, seed, epoch)

    def key_tensors(self) -> list[torch.Tensor]:
        """What identifies the data of a run (for its resumable state): the shards' checksums and
        every pair's (shard, row) on both sides, plus the epoch-order window."""
        return [*self.src.key(), *self.tgt.key(), torch.tensor([self.window])]
