"""Pseudo pairs by retrieval (FreeBind / OmniBind): seed items of one modality retrieve their
nearest items of another modality inside an expert that covers both. FAISS (exact `flat` inner
product by default; `ivf`, `hnsw`, `pq` or `ivfpq` for large pools, see `IndexOptions`), streamed over the embedding cache in chunks; the
result can be stored on disk and is reused when the same mining is asked again. Items are cache
rows (numpy int64), not id lists: ids are resolved from the cache's shards only when asked for."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable, Iterator, Literal, Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from safetensors import safe_open

from spacebind.cache.store import EmbeddingCache
from spacebind.errors import CacheError, InputError
from spacebind.io.files import save_tensors, sha256_file
from spacebind.io.progress import track

IndexKind = Literal["flat", "ivf", "hnsw", "pq", "ivfpq"]
INDEX_KINDS: tuple[str, ...] = ("flat", "ivf", "hnsw", "pq", "ivfpq")


def _unknown_kind(kind: str) -> InputError:
    """The error for an index kind not in `INDEX_KINDS`."""
    return InputError(f"unknown index {kind!r}; expected one of {', '.join(INDEX_KINDS)}")


@dataclass(frozen=True)
class IndexOptions:
    """Parameters of the approximate index kinds (each kind reads only its own; docs/decisions.md).

    ivf / ivfpq: `nlist` lists, `nprobe` probed per query. hnsw: `hnsw_m` links per node,
    `ef_construction` and `ef_search` candidate-list sizes. pq / ivfpq: `pq_m` sub-quantizers
    (must divide the dimension) of `pq_bits` bits each (`pq_m` × `pq_bits` / 8 bytes a vector).
    Trained kinds (ivf, pq, ivfpq) train on the first `train_size` vectors streamed."""

    nlist: int = 256
    nprobe: int = 16
    hnsw_m: int = 32
    ef_construction: int = 40
    ef_search: int = 64
    pq_m: int = 32
    pq_bits: int = 8
    train_size: int = 65_536

    def for_kind(self, kind: str) -> dict[str, int]:
        """The options `kind` uses (recorded in manifests and cache keys).

        Raises:
            InputError: `kind` is not one of `INDEX_KINDS`.
        """
        used = {"flat": (), "ivf": ("nlist", "nprobe"), "hnsw": ("hnsw_m", "ef_construction", "ef_search"),
                "pq": ("pq_m", "pq_bits"), "ivfpq": ("nlist", "nprobe", "pq_m", "pq_bits")}.get(kind)
        if used is None:
            raise _unknown_kind(kind)
        return {k: getattr(self, k) for k in used}


class MiningIndex(BaseModel):
    """The FAISS index a recipe's mining searches (a pseudo dataset's `index`, `routed.router.index`):
    exact `flat` by default, or an approximate kind for pools too large to hold as float32, with the
    `IndexOptions` fields it reads, e.g. `{kind: ivfpq, options: {nlist: 1024, pq_m: 64}}`; a bare kind
    (`index: hnsw`) keeps every option's default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: IndexKind = "flat"
    options: dict[str, int] = Field(default_factory=dict, description="IndexOptions fields (positive integers)")

    @model_validator(mode="before")
    @classmethod
    def _bare_kind(cls, value: object) -> object:
        return {"kind": value} if isinstance(value, str) else value

    @field_validator("options")
    @classmethod
    def _known_options(cls, value: dict[str, int]) -> dict[str, int]:
        known = [f.name for f in fields(IndexOptions)]
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(f"unknown index option(s) {unknown}; expected some of {known}")
        small = sorted(k for k, v in value.items() if v < 1)
        if small:
            raise ValueError(f"index option(s) {small} must be at least 1")
        return value

    def index_options(self) -> IndexOptions:
        return IndexOptions(**self.options)


def new_index(kind: str, dim: int, options: IndexOptions) -> "object":
    """An empty FAISS inner-product index of `kind` (untrained for ivf, pq and ivfpq)."""
    import faiss

    o = options
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind in ("pq", "ivfpq") and dim % o.pq_m:
        raise InputError(f"a {kind} index with pq_m={o.pq_m} needs a dimension divisible by {o.pq_m}, got {dim}")
    if kind == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, o.nlist, faiss.METRIC_INNER_PRODUCT)
    elif kind == "ivfpq":
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, o.nlist, o.pq_m, o.pq_bits, faiss.METRIC_INNER_PRODUCT)
    elif kind == "pq":
        return faiss.IndexPQ(dim, o.pq_m, o.pq_bits, faiss.METRIC_INNER_PRODUCT)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, o.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = o.ef_construction
        index.hnsw.efSearch = o.ef_search
        return index
    else:
        raise _unknown_kind(kind)
    index.nprobe = o.nprobe
    return index


def _min_train(kind: str, options: IndexOptions) -> int:
    """The fewest training vectors FAISS accepts for `kind`."""
    need = {"ivf": options.nlist, "pq": 2 ** options.pq_bits, "ivfpq": max(options.nlist, 2 ** options.pq_bits)}
    return need.get(kind, 0)

@dataclass
class Neighbours:
    """For each seed item, the rows and similarities of its k nearest pool items.

    Items are rows of `cache` (positions in cache order, `EmbeddingCache.rows`): `seed_rows` of the
    seed modality, `pool_rows` of the target modality; `indices` point into `pool_rows`. Their ids
    are resolved from the cache's shards only when `seed_ids` / `pool_ids` are read."""

    cache: EmbeddingCache
    seed_modality: str
    target_modality: str
    seed_rows: np.ndarray  # [N] int64 rows of the seed modality in `cache`
    pool_rows: np.ndarray  # [P] int64 rows of the target modality in `cache`
    indices: torch.Tensor  # [N, k] int64, into pool_rows
    scores: torch.Tensor  # [N, k] float32, descending

    def __len__(self) -> int:
        return len(self.seed_rows)

    @cached_property
    def seed_ids(self) -> list[str]:
        return self.cache.ids_at(self.seed_modality, self.seed_rows)

    @cached_property
    def pool_ids(self) -> list[str]:
        return self.cache.ids_at(self.target_modality, self.pool_rows)

    def weights(self, mode: Literal["softmax", "top1"] = "softmax", temperature: float = 0.05) -> torch.Tensor:
        """[N, k] weights over the neighbours: softmax of similarity / temperature, or all on the top-1."""
        if mode == "top1":
            w = torch.zeros_like(self.scores)
            w[:, 0] = 1.0
            return w
        return torch.softmax(self.scores / temperature, dim=1)

    def targets(self, embed: Callable[[list[str]], torch.Tensor], mode: Literal["softmax", "top1"] = "softmax",
                temperature: float = 0.05, blocks: Sequence[int] | None = None) -> torch.Tensor:
        """Each seed's pseudo partner: the weighted mean of its neighbours' embeddings (from `embed`,
        e.g. another space's cache), L2-normalised; part by part with that space's `blocks`."""
        pool = self.pool_ids
        return self.targets_at(lambda at: embed([pool[i] for i in at.tolist()]), mode, temperature, blocks=blocks)

    def targets_at(self, embed_at: Callable[[np.ndarray], torch.Tensor], mode: Literal["softmax", "top1"] = "softmax",
                   temperature: float = 0.05, chunk_size: int = 65536, blocks: Sequence[int] | None = None
                   ) -> torch.Tensor:
        """`targets` from `embed_at(positions in pool_rows)`, `chunk_size` seeds at a time (so the
        [N, k, dim] neighbour embeddings are never held whole)."""
        return weighted_means(self.weights(mode, temperature), self.indices, embed_at, chunk_size, blocks)


def part_mean(rows: torch.Tensor, blocks: Sequence[int], weights: torch.Tensor | None = None) -> torch.Tensor:
    """The (weighted) mean over dim -2 of unit rows [..., n, d] taken part by part (`blocks`: a
    space's part widths): each part renormalised to its mean norm in the rows, then the whole to
    unit length, so rows agreeing more in one part do not reweigh the parts. `weights`: [n], or one
    row of weights per mean ([..., n]), each summing to 1."""
    w = torch.full(rows.shape[-2:-1], 1.0 / rows.shape[-2]) if weights is None else weights
    w = w.to(rows.device, rows.dtype)
    parts = []
    for part in rows.split(list(blocks), dim=-1):
        norm = (part.norm(dim=-1) * w).sum(dim=-1, keepdim=True)
        parts.append(torch.nn.functional.normalize((part * w.unsqueeze(-1)).sum(dim=-2), dim=-1) * norm)
    return torch.nn.functional.normalize(torch.cat(parts, dim=-1), dim=-1)


def weighted_means(weights: torch.Tensor, neighbours: torch.Tensor, embed_at: Callable[[np.ndarray], torch.Tensor],
                   chunk_size: int = 65536, blocks: Sequence[int] | None = None) -> torch.Tensor:
    """Row i: the L2-normalised `weights[i]`-weighted sum of `embed_at(neighbours[i])` (weights and
    neighbours [N, k]; `embed_at` maps positions to rows), `chunk_size` rows at a time (so the
    [N, k, dim] neighbour embeddings are never held whole). With the target space's `blocks` (a
    bond's channel), the mean is taken part by part (`part_mean`), so neighbours agreeing more in
    one part do not shrink the other. A pseudo partner (`Neighbours.targets`)."""
    parts = []
    for a in range(0, len(neighbours), chunk_size):
        idx = neighbours[a:a + chunk_size]
        stacked = embed_at(idx.flatten().numpy()).view(*idx.shape, -1)
        w = weights[a:a + chunk_size]
        if blocks is not None and len(blocks) > 1:
            parts.append(part_mean(stacked, blocks, w))
        else:
            parts.append(torch.nn.functional.normalize((w.unsqueeze(-1) * stacked).sum(dim=1), dim=-1))
    return torch.cat(parts) if parts else embed_at(np.empty(0, dtype=np.int64))[:0]


def _embedding_chunks(chunks: Iterable[tuple[Sequence[str], torch.Tensor]], ids: list[str]) -> Iterator[torch.Tensor]:
    for chunk_ids, emb in chunks:
        ids += chunk_ids
        yield emb


def build_index(chunks: Iterable[tuple[list[str], torch.Tensor]], dim: int, kind: IndexKind = "flat",
                options: IndexOptions | None = None) -> tuple["object", list[str]]:
    """A FAISS inner-product index over streamed (ids, embeddings) chunks. Trained kinds (ivf,
    pq, ivfpq) buffer the first `options.train_size` vectors (at least the first chunk), train
    on them, then add everything."""
    ids: list[str] = []
    index, _ = _build(_embedding_chunks(chunks, ids), dim, kind, options)
    return index, ids


def _build(chunks: Iterable[torch.Tensor], dim: int, kind: IndexKind = "flat",
           options: IndexOptions | None = None) -> tuple["object", int]:
    """`build_index` over embedding chunks alone: (index, vectors added)."""
    options = options or IndexOptions()
    count = 0
    index = new_index(kind, dim, options)
    trained = bool(index.is_trained)  # type: ignore[attr-defined]
    pending: list[np.ndarray] = []
    buffered = 0
    for emb in chunks:
        x = np.ascontiguousarray(emb.float().numpy(), dtype=np.float32)
        count += len(x)
        if trained:
            index.add(x)  # type: ignore[attr-defined]
            continue
        pending.append(x)
        buffered += len(x)
        if buffered >= options.train_size:
            _train(index, kind, options, pending)
            trained, pending = True, []
    if pending:
        _train(index, kind, options, pending)
    if not count:
        raise InputError("the pool is empty: nothing to retrieve from")
    return index, count


def _train(index: "object", kind: str, options: IndexOptions, parts: list[np.ndarray]) -> None:
    """Train `index` on the buffered vectors, then add them."""
    x = np.concatenate(parts) if len(parts) > 1 else parts[0]
    need = _min_train(kind, options)
    if len(x) < need:
        detail = f"nlist={options.nlist}" if kind == "ivf" else f"nlist={options.nlist}, pq_bits={options.pq_bits}" \
            if kind == "ivfpq" else f"pq_bits={options.pq_bits}"
        raise InputError(f"an {kind.upper()} index with {detail} needs at least {need} vectors to train, got {len(x)}")
    index.train(x)  # type: ignore[attr-defined]
    index.add(x)  # type: ignore[attr-defined]


def search(index: "object", chunks: Iterable[tuple[list[str], torch.Tensor]], k: int,
           progress: bool = False, total: int | None = None) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Top-k of every query chunk; memory is bounded by the chunk size (plus the [N, k] result)."""
    ids: list[str] = []
    scores, indices = _search(index, _embedding_chunks(chunks, ids), k, progress, total)
    return ids, scores, indices


def _search(index: "object", chunks: Iterable[torch.Tensor], k: int, progress: bool = False,
            total: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`search` over embedding chunks alone: [N, k] scores and indices."""
    scores, indices = [], []
    for emb in track(chunks, "mining neighbours", total=total, show=progress, unit="chunks"):
        s, i = index.search(np.ascontiguousarray(emb.float().numpy(), dtype=np.float32), k)  # type: ignore[attr-defined]
        scores.append(torch.from_numpy(s))
        indices.append(torch.from_numpy(i).long())
    if not scores:
        return torch.empty(0, k), torch.empty(0, k, dtype=torch.long)
    return torch.cat(scores), torch.cat(indices)


def _stream(cache: EmbeddingCache, modality: str, rows: np.ndarray, chunk_size: int) -> Iterator[torch.Tensor]:
    """Embeddings of `rows` in their order, `chunk_size` at a time."""
    for a in range(0, len(rows), chunk_size):
        yield cache.embeddings_at(modality, rows[a:a + chunk_size])


def _rows(cache: EmbeddingCache, modality: str, ids: Sequence[str] | None, rows: np.ndarray | Sequence[int] | None,
          what: str) -> np.ndarray:
    """The rows a mining reads: given, found from ids (all must be in the cache), or all in cache order."""
    if ids is not None and rows is not None:
        raise InputError(f"give {what}_ids or {what}_rows, not both")
    if rows is not None:
        return np.asarray(rows, dtype=np.int64).reshape(-1)
    if ids is None:
        return np.arange(cache.count(modality), dtype=np.int64)
    ids = list(ids)
    found = cache.rows(modality, ids)
    if (found < 0).any():
        missing = [ids[j] for j in np.flatnonzero(found < 0)[:6].tolist()]
        raise CacheError(f"cache {cache.root} has no {modality} embeddings for ids {missing[:5]}"
                         f"{' …' if len(missing) > 5 else ''}")
    return found


def _key(cache: EmbeddingCache, seed: str, target: str, k: int, kind: str, options: IndexOptions,
         seed_rows: np.ndarray | None, pool_rows: np.ndarray | None) -> str:
    """sha256 of what a mining depends on: the cache's manifest (which pins every shard's ids and
    data), the modalities, k, the index and its options, and the seed and pool rows (streamed into
    the hash as int64 bytes; "*" for all)."""
    head = [sha256_file(cache.root / "manifest.json"), seed, target, str(k), kind,
            json.dumps({**options.for_kind(kind), "train_size": options.train_size}, sort_keys=True), "rows-v1"]
    h = hashlib.sha256("|".join(head).encode())
    for rows in (seed_rows, pool_rows):
        h.update(b"|")
        if rows is None:
            h.update(b"*")
            continue
        h.update(str(len(rows)).encode() + b":")
        for a in range(0, len(rows), 1 << 20):
            h.update(np.ascontiguousarray(rows[a:a + (1 << 20)], dtype="<i8").tobytes())
    return h.hexdigest()


def _filled(indices: torch.Tensor, scores: torch.Tensor, kind: str, options: IndexOptions
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """FAISS's missing neighbours (index -1: an approximate index probed too few cells) as the seed's
    top-1 with score -inf, so they get no weight and never name a pool item; a seed with no
    neighbour at all is an error."""
    missing = indices < 0
    if not missing.any():
        return indices, scores
    empty = int(missing[:, 0].sum())
    if empty:
        raise InputError(f"the {kind} index found no neighbour for {empty} of {len(indices)} seeds; search more of "
                         f"it (nprobe={options.nprobe}, ef_search={options.ef_search}) or use a flat index")
    indices, scores = indices.clone(), scores.clone()
    indices[missing] = indices[:, :1].expand_as(indices)[missing]
    scores[missing] = float("-inf")
    return indices, scores


def mine(
    cache: EmbeddingCache,
    seed_modality: str,
    target_modality: str,
    *,
    k: int = 5,
    index: IndexKind = "flat",
    chunk_size: int = 4096,
    seed_ids: Sequence[str] | None = None,
    pool_ids: Sequence[str] | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    options: IndexOptions | None = None,
    seed_rows: np.ndarray | Sequence[int] | None = None,
    pool_rows: np.ndarray | Sequence[int] | None = None,
) -> Neighbours:
    """Seed items of `seed_modality` (all, or `seed_ids`, or `seed_rows` of the cache) retrieve their
    k nearest items of `target_modality` (all, or `pool_ids`, or `pool_rows`) in the expert of
    `cache`. With `out`, the result is stored as `out/neighbours.safetensors` (rows, indices,
    scores; no ids) and reused when the same mining is asked again. `options` sets the index
    parameters (default `IndexOptions()`). Memory: the given rows, the index, the [N, k] result and
    one chunk of embeddings; no per-item Python objects."""
    for m in (seed_modality, target_modality):
        if m not in cache.modalities:
            raise CacheError(f"cache {cache.root} has no {m!r} embeddings (it has {', '.join(cache.modalities)})")
    options = options or IndexOptions()
    all_seeds, all_pool = seed_ids is None and seed_rows is None, pool_ids is None and pool_rows is None
    seeds = _rows(cache, seed_modality, seed_ids, seed_rows, "seed")
    pool = _rows(cache, target_modality, pool_ids, pool_rows, "pool")
    key = _key(cache, seed_modality, target_modality, k, index, options,
               None if all_seeds else seeds, None if all_pool else pool)
    path = Path(out) / "neighbours.safetensors" if out is not None else None
    if path is not None and path.is_file():
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            if meta.get("key") == key and "seed_rows" in fh.keys():
                return Neighbours(cache, seed_modality, target_modality, fh.get_tensor("seed_rows").numpy(),
                                  fh.get_tensor("pool_rows").numpy(),
                                  *_filled(fh.get_tensor("indices"), fh.get_tensor("scores"), index, options))
    faiss_index, _ = _build(_stream(cache, target_modality, pool, chunk_size), cache.dim, index, options)
    k = min(k, len(pool))
    total = -(-len(seeds) // chunk_size)
    scores, indices = _search(faiss_index, _stream(cache, seed_modality, seeds, chunk_size), k, progress, total)
    indices, scores = _filled(indices, scores, index, options)
    result = Neighbours(cache, seed_modality, target_modality, seeds, pool, indices, scores)
    if path is not None:
        meta = {"key": key, "expert": cache.expert, "cache_manifest_sha256": sha256_file(cache.root / "manifest.json"),
                "seed_modality": seed_modality, "target_modality": target_modality, "k": str(k), "index": index,
                "rows": "seed_rows / pool_rows: rows of the cache (cache order); indices: into pool_rows"}
        save_tensors(path, {"indices": indices, "scores": scores, "seed_rows": torch.from_numpy(np.ascontiguousarray(seeds)),
                            "pool_rows": torch.from_numpy(np.ascontiguousarray(pool))}, metadata=meta)
    return result
