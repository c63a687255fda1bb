"""Pseudo pairs by retrieval (FreeBind / OmniBind): seed items of one modality retrieve their
nearest items of another modality inside an expert that covers both. FAISS (exact `flat` inner
product by default; `ivf`, `hnsw`, `pq` or `ivfpq` for large pools, see `IndexOptions`), streamed over the embedding cache in chunks; the
result can be stored on disk and is reused when the same mining is asked again."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Literal, Sequence

import numpy as np
import torch
from safetensors import safe_open

from spacebind.cache.store import EmbeddingCache
from spacebind.errors import CacheError, InputError
from spacebind.io.files import save_tensors, sha256_file
from spacebind.io.progress import track

IndexKind = Literal["flat", "ivf", "hnsw", "pq", "ivfpq"]
INDEX_KINDS: tuple[str, ...] = ("flat", "ivf", "hnsw", "pq", "ivfpq")


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
        """The options `kind` uses (recorded in manifests and cache keys)."""
        used = {"flat": (), "ivf": ("nlist", "nprobe"), "hnsw": ("hnsw_m", "ef_construction", "ef_search"),
                "pq": ("pq_m", "pq_bits"), "ivfpq": ("nlist", "nprobe", "pq_m", "pq_bits")}[kind]
        return {k: getattr(self, k) for k in used}


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
        raise InputError(f"unknown index {kind!r}; expected one of {', '.join(INDEX_KINDS)}")
    index.nprobe = o.nprobe
    return index


def _min_train(kind: str, options: IndexOptions) -> int:
    """The fewest training vectors FAISS accepts for `kind`."""
    need = {"ivf": options.nlist, "pq": 2 ** options.pq_bits, "ivfpq": max(options.nlist, 2 ** options.pq_bits)}
    return need.get(kind, 0)

@dataclass
class Neighbours:
    """For each seed item, the ids and similarities of its k nearest pool items."""

    seed_ids: list[str]
    pool_ids: list[str]
    indices: torch.Tensor  # [N, k] int64, into pool_ids
    scores: torch.Tensor  # [N, k] float32, descending

    def weights(self, mode: Literal["softmax", "top1"] = "softmax", temperature: float = 0.05) -> torch.Tensor:
        """[N, k] weights over the neighbours: softmax of similarity / temperature, or all on the top-1."""
        if mode == "top1":
            w = torch.zeros_like(self.scores)
            w[:, 0] = 1.0
            return w
        return torch.softmax(self.scores / temperature, dim=1)

    def targets(self, embed: Callable[[list[str]], torch.Tensor], mode: Literal["softmax", "top1"] = "softmax",
                temperature: float = 0.05) -> torch.Tensor:
        """Each seed's pseudo partner: the weighted mean of its neighbours' embeddings (from `embed`,
        e.g. another space's cache), L2-normalised."""
        flat = embed([self.pool_ids[i] for i in self.indices.flatten().tolist()])
        stacked = flat.view(*self.indices.shape, -1)
        mixed = (self.weights(mode, temperature).unsqueeze(-1) * stacked).sum(dim=1)
        return torch.nn.functional.normalize(mixed, dim=-1)


def build_index(chunks: Iterable[tuple[list[str], torch.Tensor]], dim: int, kind: IndexKind = "flat",
                options: IndexOptions | None = None) -> tuple["object", list[str]]:
    """A FAISS inner-product index over streamed (ids, embeddings) chunks. Trained kinds (ivf,
    pq, ivfpq) buffer the first `options.train_size` vectors (at least the first chunk), train
    on them, then add everything."""
    options = options or IndexOptions()
    ids: list[str] = []
    index = new_index(kind, dim, options)
    trained = bool(index.is_trained)  # type: ignore[attr-defined]
    pending: list[np.ndarray] = []
    buffered = 0
    for chunk_ids, emb in chunks:
        x = np.ascontiguousarray(emb.numpy(), dtype=np.float32)
        ids += chunk_ids
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
    if not ids:
        raise InputError("the pool is empty: nothing to retrieve from")
    return index, ids


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
    scores, indices = [], []
    for chunk_ids, emb in track(chunks, "mining neighbours", total=total, show=progress):
        s, i = index.search(np.ascontiguousarray(emb.numpy(), dtype=np.float32), k)  # type: ignore[attr-defined]
        ids += chunk_ids
        scores.append(torch.from_numpy(s))
        indices.append(torch.from_numpy(i).long())
    return ids, torch.cat(scores), torch.cat(indices)


def _stream(cache: EmbeddingCache, modality: str, ids: Sequence[str] | None, chunk_size: int) -> Iterable[tuple[list[str], torch.Tensor]]:
    """(ids, embeddings) chunks of the whole cache, or of the given ids in their order."""
    if ids is None:
        yield from cache.iter_chunks(modality, chunk_size)
        return
    wanted = list(ids)
    for i in range(0, len(wanted), chunk_size):
        yield wanted[i:i + chunk_size], cache.embeddings(modality, wanted[i:i + chunk_size])


def _key(cache: EmbeddingCache, seed: str, target: str, k: int, kind: str, options: IndexOptions,
         seed_ids: Sequence[str] | None, pool_ids: Sequence[str] | None) -> str:
    parts = [sha256_file(cache.root / "manifest.json"), seed, target, str(k), kind,
             json.dumps({**options.for_kind(kind), "train_size": options.train_size}, sort_keys=True),
             "\n".join(seed_ids) if seed_ids is not None else "*", "\n".join(pool_ids) if pool_ids is not None else "*"]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


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
) -> Neighbours:
    """Seed items of `seed_modality` (all, or `seed_ids`) retrieve their k nearest items of
    `target_modality` (all, or `pool_ids`) in the expert of `cache`. With `out`, the result is
    stored as `out/neighbours.safetensors` and reused when the same mining is asked again.
    `options` sets the index parameters (default `IndexOptions()`)."""
    for m in (seed_modality, target_modality):
        if m not in cache.modalities:
            raise CacheError(f"cache {cache.root} has no {m!r} embeddings (it has {', '.join(cache.modalities)})")
    options = options or IndexOptions()
    key = _key(cache, seed_modality, target_modality, k, index, options, seed_ids, pool_ids)
    path = Path(out) / "neighbours.safetensors" if out is not None else None
    if path is not None and path.is_file():
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            if meta.get("key") == key:
                return Neighbours(json.loads(meta["seed_ids"]), json.loads(meta["pool_ids"]),
                                  fh.get_tensor("indices"), fh.get_tensor("scores"))
    faiss_index, pool = build_index(_stream(cache, target_modality, pool_ids, chunk_size), cache.dim, index, options)
    k = min(k, len(pool))
    total = -(-len(seed_ids if seed_ids is not None else cache.ids(seed_modality)) // chunk_size)
    ids, scores, indices = search(faiss_index, _stream(cache, seed_modality, seed_ids, chunk_size), k, progress, total)
    result = Neighbours(ids, pool, indices, scores)
    if path is not None:
        meta = {"key": key, "seed_ids": json.dumps(ids), "pool_ids": json.dumps(pool), "expert": cache.expert,
                "seed_modality": seed_modality, "target_modality": target_modality, "k": str(k), "index": index}
        save_tensors(path, {"indices": indices, "scores": scores}, metadata=meta)
    return result
