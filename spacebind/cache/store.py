"""Embedding caches: expert embeddings of a dataset, computed once, stored as float16 shards.

    OUT/manifest.json                       expert, checkpoint sha256, dataset, per-modality shards
    OUT/<modality>/shard-00000.safetensors  `embeddings` [n, dim] float16; ids in the metadata

Shards are written atomically, each recording the ids it was planned for, so an interrupted run
resumes without recomputing finished shards; the manifest lists them once a modality is done. A
cache made by another expert, checkpoint, dataset or shard layout is refused. Bad items are
recorded with their reasons and skipped.

Under torchrun, shard k is embedded by rank k % world size (each rank writes its own shard
files) and rank 0 writes the manifest after all ranks finished the modality; a rank that dies
loses only the shard it was writing.
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from safetensors import safe_open

from spacebind.cache._embed_loop import AdaptiveBatch, autocast, loaded_shards
from spacebind.errors import CacheError, InputError
from spacebind.io.datasets import Dataset, Item
from spacebind.io.files import save_tensors, sha256_file, write_json
from spacebind.io.inputs import LoadResult
from spacebind.io.progress import track
from spacebind.space import Expert
from spacebind.training import distributed

FORMAT = 1
_IDENTITY = ("expert", "source", "kwargs", "sha256", "dim", "dataset_sha256", "shard_size", "splits")


def _digest(ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def _header(expert: Expert, dataset: Dataset, shard_size: int, splits: Sequence[str] | None) -> dict[str, Any]:
    return {
        "format": FORMAT, "expert": expert.name, "source": expert.spec.source, "kwargs": expert.spec.kwargs,
        "checkpoint": expert.spec.checkpoint, "sha256": expert.spec.sha256, "dim": expert.dim,
        "dataset": str(dataset.root), "dataset_sha256": sha256_file(dataset.root / "manifest.jsonl"),
        "shard_size": shard_size, "splits": sorted(splits) if splits else None, "modalities": {},
    }


def _check_same(old: dict[str, Any], new: dict[str, Any], where: Path) -> None:
    for key in _IDENTITY:
        if old.get(key) != new.get(key):
            raise CacheError(
                f"{where} was made with {key}={old.get(key)!r}, not {new.get(key)!r} "
                f"(expert {old.get('expert')!r} vs {new.get('expert')!r}); use another --out or delete it"
            )


def _encode_lenient(expert: Expert, modality: str, loaded: list[Any], batch: AdaptiveBatch) -> tuple[torch.Tensor, list[int], list[tuple[int, str]]]:
    """Encode a shard; if the batch fails, encode item by item to isolate the bad ones."""
    try:
        return batch.run(lambda size: expert.embed_loaded(modality, loaded, size)), list(range(len(loaded))), []
    except InputError:
        rows, keep, bad = [], [], []
        for i, item in enumerate(loaded):
            try:
                rows.append(expert.embed_loaded(modality, [item]))
                keep.append(i)
            except InputError as exc:
                bad.append((i, str(exc)))
        return (torch.cat(rows) if rows else torch.empty(0, expert.dim)), keep, bad


def _shard_ok(path: Path, planned: str) -> dict[str, Any] | None:
    """The shard's metadata if it exists, is readable and holds the planned items."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            rows = fh.get_slice("embeddings").get_shape()[0]
    except Exception:  # a damaged shard is recomputed
        return None
    if meta.get("planned") != planned or rows != len(json.loads(meta.get("ids", "[]"))):
        return None
    return meta


def embed_dataset(
    expert: Expert,
    dataset: Dataset,
    out: str | Path,
    *,
    modalities: Sequence[str] | None = None,
    splits: Sequence[str] | None = None,
    shard_size: int = 1024,
    batch_size: int | None = None,
    workers: int = 0,
    precision: str = "fp32",
    progress: bool = True,
) -> "EmbeddingCache":
    """Embed `dataset` with `expert` into a cache at `out` (resuming one that exists).

    Args:
        modalities, splits: only these (default: every modality both cover, all splits).
        shard_size: items per shard file (part of the cache's identity).
        batch_size: encoder batch size (default: the expert's); halved on out-of-memory.
        workers: DataLoader processes decoding the next shards' files while the expert runs.
        precision: `fp32`, or `bf16` / `fp16` autocast on CUDA (no effect on CPU).
        progress: show a progress bar.

    Under torchrun, every rank calls this; see the module docstring.
    """
    out = Path(out)
    header = _header(expert, dataset, shard_size, splits)
    manifest_path = out / "manifest.json"
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text(encoding="utf-8"))
        _check_same(old, header, out)
        header["modalities"] = old.get("modalities", {})
    distributed.barrier()  # every rank has checked the old manifest before rank 0 rewrites it
    if distributed.is_main():
        write_json(manifest_path, header)
    wanted = modalities or [m for m in expert.modalities if m in dataset.modalities()]
    rank, world = distributed.rank(), distributed.world_size()
    batch = AdaptiveBatch(batch_size or expert.batch_size)
    for m in wanted:
        if m not in expert.modalities:
            raise CacheError(f"expert {expert.name!r} does not cover {m!r} (it covers {', '.join(expert.modalities)})")
        items = [it for it in dataset.select(None, m) if not splits or it.split in splits]
        chunks = [items[i:i + shard_size] for i in range(0, len(items), shard_size)]
        plans = [_digest([it.id for it in chunk]) for chunk in chunks]
        paths = [out / m / f"shard-{k:05d}.safetensors" for k in range(len(chunks))]
        todo = [(k, chunks[k]) for k in range(rank, len(chunks), world) if _shard_ok(paths[k], plans[k]) is None]
        with autocast(precision):
            for k, loaded in track(loaded_shards(m, todo, workers), f"embedding {m} with {expert.name}",
                                   total=len(todo), show=progress):
                _embed_shard(expert, m, chunks[k], loaded, paths[k], plans[k], batch)
        distributed.barrier()
        if distributed.is_main():
            header["modalities"][m] = _entry(m, paths, plans)
            write_json(manifest_path, header)
    distributed.barrier()
    return EmbeddingCache.open(out)


def _embed_shard(expert: Expert, modality: str, chunk: list[Item], result: LoadResult, path: Path, planned: str,
                 batch: AdaptiveBatch) -> None:
    emb, keep, enc_bad = _encode_lenient(expert, modality, result.loaded, batch)
    ids = [chunk[result.indices[i]].id for i in keep]
    bad = [{"id": chunk[i].id, "reason": r} for i, r in result.bad]
    bad += [{"id": chunk[result.indices[i]].id, "reason": r} for i, r in enc_bad]
    meta = {"ids": json.dumps(ids), "planned": planned, "bad": json.dumps(bad)}
    save_tensors(path, {"embeddings": emb.to(torch.float16)}, metadata=meta)


def _entry(modality: str, paths: list[Path], plans: list[str]) -> dict[str, Any]:
    """The manifest entry of a modality from its finished shards' metadata."""
    entry: dict[str, Any] = {"shards": [], "bad": []}
    for path, planned in zip(paths, plans):
        meta = _shard_ok(path, planned)
        if meta is None:
            raise CacheError(f"{path}: shard missing or damaged after embedding {modality}; rerun to recompute it")
        entry["shards"].append({"file": f"{modality}/{path.name}", "ids": json.loads(meta["ids"])})
        entry["bad"].extend(json.loads(meta["bad"]))
    return entry


@lru_cache(maxsize=16)
def _read_shard(path: str, mtime: float) -> torch.Tensor:
    with safe_open(path, framework="pt") as fh:
        return fh.get_tensor("embeddings").float()


class EmbeddingCache:
    """Read access to a cache; shards are read lazily (a few kept in memory)."""

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root = root
        self.manifest = manifest
        self._index: dict[str, dict[str, tuple[int, int]]] = {}

    @classmethod
    def open(cls, path: str | Path) -> "EmbeddingCache":
        root = Path(path)
        try:
            manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CacheError(f"{root} is not an embedding cache: cannot read manifest.json ({exc})") from None
        if manifest.get("format") != FORMAT:
            raise CacheError(f"{root}/manifest.json: format {manifest.get('format')!r}, expected {FORMAT}")
        return cls(root, manifest)

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def expert(self) -> str:
        return str(self.manifest["expert"])

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.manifest["modalities"])

    def _entry(self, modality: str) -> dict[str, Any]:
        try:
            return self.manifest["modalities"][modality]
        except KeyError:
            raise CacheError(f"cache {self.root} has no {modality!r} embeddings (it has {', '.join(self.modalities)})") from None

    def ids(self, modality: str) -> list[str]:
        return [i for shard in self._entry(modality)["shards"] for i in shard["ids"]]

    def bad(self, modality: str) -> list[dict[str, str]]:
        return list(self._entry(modality)["bad"])

    def _shard(self, modality: str, k: int) -> torch.Tensor:
        path = self.root / self._entry(modality)["shards"][k]["file"]
        return _read_shard(str(path), path.stat().st_mtime)

    def embeddings(self, modality: str, ids: Sequence[str] | None = None) -> torch.Tensor:
        """Float32 embeddings in the order of `ids` (all, in cache order, when None)."""
        if ids is None:
            parts = [self._shard(modality, k) for k in range(len(self._entry(modality)["shards"]))]
            return torch.cat(parts) if parts else torch.empty(0, self.dim)
        if modality not in self._index:
            self._index[modality] = {
                i: (k, r) for k, shard in enumerate(self._entry(modality)["shards"]) for r, i in enumerate(shard["ids"])
            }
        index = self._index[modality]
        missing = [i for i in ids if i not in index]
        if missing:
            raise CacheError(f"cache {self.root} has no {modality} embeddings for ids {missing[:5]}{' …' if len(missing) > 5 else ''}")
        out = torch.empty(len(ids), self.dim)
        by_shard: dict[int, list[tuple[int, int]]] = {}
        for pos, i in enumerate(ids):
            k, r = index[i]
            by_shard.setdefault(k, []).append((pos, r))
        for k, pairs in by_shard.items():
            pos, rows = zip(*pairs)
            out[list(pos)] = self._shard(modality, k)[list(rows)]
        return out

    def iter_chunks(self, modality: str, chunk_size: int = 4096) -> Iterator[tuple[list[str], torch.Tensor]]:
        """Yield (ids, embeddings) chunks in cache order without loading the whole cache."""
        ids_buf: list[str] = []
        rows_buf: list[torch.Tensor] = []
        for k, shard in enumerate(self._entry(modality)["shards"]):
            ids_buf += shard["ids"]
            rows_buf.append(self._shard(modality, k))
            while len(ids_buf) >= chunk_size:
                block = torch.cat(rows_buf)
                yield ids_buf[:chunk_size], block[:chunk_size]
                ids_buf, rows_buf = ids_buf[chunk_size:], [block[chunk_size:]]
        if ids_buf:
            yield ids_buf, torch.cat(rows_buf)
