"""Embedding caches: expert embeddings of a dataset, computed once, stored as float16 shards.

    OUT/manifest.json                       expert, checkpoint sha256, dataset, per-modality shards
    OUT/<modality>/shard-00000.safetensors  `embeddings` [n, dim] float16; ids in the metadata

Shards are written atomically, each recording the ids it was planned for, so an interrupted run
resumes without recomputing finished shards; the manifest lists them once a modality is done. A
cache made by another expert, checkpoint, dataset or shard layout is refused. Bad items are
recorded with their reasons and skipped.

Each shard carries a sha256 of its data and metadata (`sha256` in its metadata, repeated in the
manifest). Embedding checks it before trusting a finished shard and recomputes a shard that does
not match (with a warning naming it); reading checks it too and refuses the cache. A verified
shard is not hashed again in the same process while its size and mtime stay the same.
One job at a time embeds into a cache directory (`spacebind.io.locks`).

Under torchrun, shard k is embedded by rank k % world size (each rank writes its own shard
files) and rank 0 writes the manifest after all ranks finished the modality; a rank that dies
loses only the shard it was writing.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from collections import Counter
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from safetensors import safe_open

from spacebind.cache._embed_loop import AdaptiveBatch, autocast, loaded_shards
from spacebind.errors import CacheError, InputError
from spacebind.io.datasets import Dataset, Item, Manifest
from spacebind.io.files import save_tensors, sha256_file, write_json
from spacebind.io.inputs import LoadResult
from spacebind.io.locks import job_lock
from spacebind.io.progress import track
from spacebind.space import Expert
from spacebind.training import distributed

FORMAT = 2  # 2: shards carry a sha256 of their content
STREAM_ITEMS = 65536  # items read from the manifest at a time (rounded down to whole shards, at least one)
_IDENTITY = ("expert", "source", "kwargs", "sha256", "dim", "dataset_sha256", "shard_size", "splits")


def _digest(ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def _header(expert: Expert, dataset: Dataset | Manifest, shard_size: int, splits: Sequence[str] | None) -> dict[str, Any]:
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


def _content_sha256(emb: torch.Tensor, meta: dict[str, str]) -> str:
    """sha256 of a shard's float16 data and of its metadata (ids, plan, bad items), `sha256` aside."""
    h = hashlib.sha256(emb.contiguous().view(-1).view(torch.uint8).numpy())
    h.update(json.dumps({k: v for k, v in meta.items() if k != "sha256"}, sort_keys=True).encode())
    return h.hexdigest()


# path → (inode, size, mtime_ns, sha256) of the shards checked in this process
_VERIFIED: dict[str, tuple[int, int, int, str]] = {}


def _stamp(path: Path, sha256: str | None) -> tuple[int, int, int, str | None]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns, sha256


def _verified_shard(path: Path) -> tuple[dict[str, str], torch.Tensor | None]:
    """A shard's metadata and float16 data (None when verified earlier in this process).

    Raises:
        CacheError: unreadable, no checksum, or data and metadata that do not match it.
    """
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            stamp = _stamp(path, meta.get("sha256"))
            if _VERIFIED.get(str(path)) == stamp:
                return meta, None
            emb = fh.get_tensor("embeddings")
    except Exception as exc:  # safetensors raises its own types for damaged files
        raise CacheError(f"{path}: unreadable shard ({exc})") from None
    if "sha256" not in meta:
        raise CacheError(f"{path}: shard has no checksum (written by an older spacebind)")
    if _content_sha256(emb, meta) != meta["sha256"]:
        raise CacheError(f"{path}: shard data do not match their checksum (the file was changed or damaged)")
    _VERIFIED[str(path)] = stamp
    return meta, emb


def _shard_ok(path: Path, planned: str) -> dict[str, str] | None:
    """The shard's metadata if it exists, is intact (checksum) and holds the planned items; a damaged
    shard is reported and recomputed."""
    if not path.is_file():
        return None
    try:
        meta, _ = _verified_shard(path)
    except CacheError as exc:
        warnings.warn(f"{exc}; recomputing it", stacklevel=3)
        return None
    if meta.get("planned") != planned:
        return None
    return meta


def embed_dataset(
    expert: Expert,
    dataset: Dataset | Manifest,
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

    A `Manifest` streams: it is read once to validate it and count items, then once per modality,
    holding about `STREAM_ITEMS` items at a time; a loaded `Dataset` gives the same cache.

    Args:
        modalities, splits: only these (default: every modality both cover, all splits).
        shard_size: items per shard file (part of the cache's identity).
        batch_size: encoder batch size (default: the expert's); halved on out-of-memory. Inputs are
            decoded in groups of this size within a shard, so memory does not grow with `shard_size`.
        workers: DataLoader processes decoding the next shards' files while the expert runs.
        precision: `fp32`, or `bf16` / `fp16` autocast on CUDA (no effect on CPU).
        progress: show a progress bar.

    Under torchrun, every rank calls this; see the module docstring.

    Raises:
        InputError: `shard_size` below 1; a bad manifest line (before anything is written).
        LockError: another job is embedding into `out` (`$SPACEBIND_LOCK_WAIT` seconds to wait).
    """
    if shard_size < 1:
        raise InputError(f"shard_size must be at least 1, got {shard_size}")
    out = Path(out)
    with job_lock(out, "embedding cache"):
        return _embed_locked(expert, dataset, out, modalities, splits, shard_size, batch_size, workers, precision,
                             progress)


def _embed_locked(expert: Expert, dataset: Dataset | Manifest, out: Path, modalities: Sequence[str] | None,
                  splits: Sequence[str] | None, shard_size: int, batch_size: int | None, workers: int,
                  precision: str, progress: bool) -> "EmbeddingCache":
    """`embed_dataset` once its job holds the cache's lock."""
    present, counts = _survey(dataset, splits)
    header = _header(expert, dataset, shard_size, splits)
    manifest_path = out / "manifest.json"
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text(encoding="utf-8"))
        _check_same(old, header, out)
        header["modalities"] = old.get("modalities", {})
    distributed.barrier()  # every rank has checked the old manifest before rank 0 rewrites it
    if distributed.is_main():
        write_json(manifest_path, header)
    wanted = modalities or [m for m in expert.modalities if m in present]
    rank, world = distributed.rank(), distributed.world_size()
    batch = AdaptiveBatch(batch_size or expert.batch_size)
    window = max(1, STREAM_ITEMS // shard_size)
    for m in wanted:
        if m not in expert.modalities:
            raise CacheError(f"expert {expert.name!r} does not cover {m!r} (it covers {', '.join(expert.modalities)})")
        items = (it for it in dataset.iter_items() if m in it.fields and (not splits or it.split in splits))
        plans: list[str] = []
        shards = _shard_stream(m, _planned(items, shard_size, plans), plans, out, rank, world, window, batch,
                               workers)
        with autocast(precision):
            for k, chunk, groups in track(shards, f"embedding {m} with {expert.name}",
                                          total=len(range(rank, -(-counts.get(m, 0) // shard_size), world)),
                                          show=progress):
                if groups is not None:
                    _embed_shard(expert, m, chunk, groups, _shard_path(out, m, k), plans[k], batch)
                del chunk, groups  # hold no shard's items while the next window is read
        distributed.barrier()
        if distributed.is_main():
            header["modalities"][m] = _entry(m, [_shard_path(out, m, k) for k in range(len(plans))], plans)
            write_json(manifest_path, header)
    distributed.barrier()
    return EmbeddingCache.open(out)


def _survey(dataset: Dataset | Manifest, splits: Sequence[str] | None) -> tuple[set[str], Counter[str]]:
    """One pass over the items (validating a manifest whole before anything is written): the
    modalities present in any split, and each modality's item count within `splits`."""
    present: set[str] = set()
    counts: Counter[str] = Counter()
    for it in dataset.iter_items():
        present.update(it.fields)
        if not splits or it.split in splits:
            counts.update(it.fields.keys())
    return present, counts


def _planned(items: Iterator[Item], shard_size: int, plans: list[str]) -> Iterator[tuple[int, list[Item]]]:
    """Consecutive shards of `shard_size` items (the last one shorter), appending each one's plan
    (digest of its ids) to `plans` as it is read."""
    chunk: list[Item] = []
    for it in items:
        chunk.append(it)
        if len(chunk) == shard_size:
            plans.append(_digest([c.id for c in chunk]))
            yield len(plans) - 1, chunk
            chunk = []
    if chunk:
        plans.append(_digest([c.id for c in chunk]))
        yield len(plans) - 1, chunk


def _shard_path(out: Path, modality: str, k: int) -> Path:
    return out / modality / f"shard-{k:05d}.safetensors"


def _shard_stream(modality: str, shards: Iterator[tuple[int, list[Item]]], plans: list[str], out: Path, rank: int,
                  world: int,
                  window: int, batch: AdaptiveBatch, workers: int,
                  ) -> Iterator[tuple[int, list[Item], Iterator[LoadResult] | None]]:
    """This rank's shards (k % world == rank) as (k, items, loaded groups or None when the shard is
    already done), read `window` shards at a time: one decoding pipeline per window, and no more
    than a window of items held."""
    while True:
        block = list(islice((s for s in shards if s[0] % world == rank), window))
        if not block:
            return
        todo = [(k, chunk) for k, chunk in block if _shard_ok(_shard_path(out, modality, k), plans[k]) is None]
        loaded = dict(zip((k for k, _ in todo), (g for _, g in loaded_shards(modality, todo, batch.size, workers))))
        yield from ((k, chunk, loaded.get(k)) for k, chunk in block)
        del block, todo, loaded
def _embed_shard(expert: Expert, modality: str, chunk: list[Item], groups: Iterator[LoadResult], path: Path,
                 planned: str, batch: AdaptiveBatch) -> None:
    """Encode a shard group by group (each group's decoded inputs dropped before the next decodes), then write it."""
    rows: list[torch.Tensor] = []
    ids: list[str] = []
    bad: list[dict[str, str]] = []
    offset = 0
    for result in groups:
        emb, keep, enc_bad = _encode_lenient(expert, modality, result.loaded, batch)
        rows.append(emb.to(torch.float16))
        ids += [chunk[offset + result.indices[i]].id for i in keep]
        bad += [{"id": chunk[offset + i].id, "reason": r} for i, r in result.bad]
        bad += [{"id": chunk[offset + result.indices[i]].id, "reason": r} for i, r in enc_bad]
        offset += len(result.indices) + len(result.bad)
        del result
    data = torch.cat(rows) if rows else torch.empty(0, expert.dim, dtype=torch.float16)
    meta = {"ids": json.dumps(ids), "planned": planned, "bad": json.dumps(bad)}
    meta["sha256"] = _content_sha256(data, meta)
    save_tensors(path, {"embeddings": data}, metadata=meta)
    _VERIFIED[str(path)] = _stamp(path, meta["sha256"])  # written here: no need to hash it again


def _entry(modality: str, paths: list[Path], plans: list[str]) -> dict[str, Any]:
    """The manifest entry of a modality from its finished shards' metadata."""
    entry: dict[str, Any] = {"shards": [], "bad": []}
    for path, planned in zip(paths, plans):
        meta = _shard_ok(path, planned)
        if meta is None:
            raise CacheError(f"{path}: shard missing or damaged after embedding {modality}; rerun to recompute it")
        entry["shards"].append({"file": f"{modality}/{path.name}", "ids": json.loads(meta["ids"]), "sha256": meta["sha256"]})
        entry["bad"].extend(json.loads(meta["bad"]))
    return entry


@lru_cache(maxsize=16)
def _read_shard(path: str, mtime_ns: int) -> tuple[dict[str, str], torch.Tensor]:
    """A shard's metadata and data as float32, checked against its checksum."""
    meta, emb = _verified_shard(Path(path))
    if emb is None:
        with safe_open(path, framework="pt") as fh:
            emb = fh.get_tensor("embeddings")
    return meta, emb.float()


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
            raise CacheError(f"{root}/manifest.json: format {manifest.get('format')!r}, expected {FORMAT}; rerun "
                             "`spacebind embed` (or fuse) on it to bring it up to date")
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
        shard = self._entry(modality)["shards"][k]
        path = self.root / shard["file"]
        try:
            meta, emb = _read_shard(str(path), path.stat().st_mtime_ns)
            if meta["sha256"] != shard["sha256"] or json.loads(meta["ids"]) != shard["ids"]:
                raise CacheError(f"{path}: shard is not the one {self.root / 'manifest.json'} lists (other checksum or ids)")
        except (OSError, CacheError) as exc:
            raise CacheError(f"{exc}; rerun `spacebind embed` (or fuse) on this cache to recompute it") from None
        return emb

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
