"""Embedding caches: expert embeddings of a dataset, computed once, stored as float16 shards.

    OUT/manifest.json                       expert, checkpoint sha256, dataset, per-modality shards
                                            (file, item count, sha256 of the shard, sha256 of its ids)
    OUT/<modality>/shard-00000.safetensors  `embeddings` [n, dim] float16; ids in the metadata

Shards are written atomically, each recording the ids it was planned for, so an interrupted run
resumes without recomputing finished shards; the manifest lists them once a modality is done. A
cache made by another expert, checkpoint, dataset or shard layout is refused. Bad items are
recorded with their reasons and skipped; `retry_bad` embeds the shards holding them again.

Each shard carries a sha256 of its data and metadata (`sha256` in its metadata, repeated in the
manifest). Embedding checks it before trusting a finished shard and recomputes a shard that does
not match (with a warning naming it); reading checks it too and refuses the cache. A verified
shard is not hashed again in the same process while its size and mtime stay the same.

The ids live only in the shards (format 3): manifest.json keeps counts and checksums, so its size
and the memory of embedding and opening a cache do not grow with the items; ids are read from a
shard's metadata when asked, checked against the `ids_sha256` the manifest lists. A format 2
cache (every id inline in manifest.json) is still read, with a warning; embedding into it again
rewrites its manifest in format 3 from the finished shards, which are kept.
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

import numpy as np
import torch
from safetensors import safe_open

from spacebind.cache._embed_loop import PRECISIONS, AdaptiveBatch, autocast, effective_precision, loaded_shards
from spacebind.cache.keys import KeyIndex, id_keys
from spacebind.errors import CacheError, InputError
from spacebind.io.datasets import Dataset, Item, Manifest, survey
from spacebind.io.files import save_tensors, write_json
from spacebind.io.inputs import LoadResult
from spacebind.io.locks import job_lock
from spacebind.io.progress import track
from spacebind.space import Expert
from spacebind.training import distributed

FORMAT = 3  # 2: shards carry a sha256 of their content; 3: ids only in the shards (manifest: counts, checksums)
LEGACY_FORMATS = (2,)  # read as is (with a warning); embedding into one rewrites its manifest
STREAM_ITEMS = 65536  # items read from the manifest at a time (rounded down to whole shards, at least one)
_IDENTITY = ("expert", "source", "kwargs", "sha256", "dim", "dataset_sha256", "shard_size", "splits", "precision")
_BEFORE = {"precision": "fp32"}  # identity fields that caches made before them lack, as those caches were made


def _digest(ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode("utf-8", "surrogatepass")).hexdigest()  # ids as `id_keys` read them


def _ids_sha256(ids_json: str) -> str:
    """sha256 of a shard's `ids` metadata (a JSON list), as manifest.json lists it."""
    return hashlib.sha256(ids_json.encode("utf-8", "surrogatepass")).hexdigest()


def _header(expert: Expert, dataset: Dataset | Manifest, shard_size: int, splits: Sequence[str] | None,
            precision: str) -> dict[str, Any]:
    return {
        "format": FORMAT, "expert": expert.name, "source": expert.spec.source,
        # as manifest.json gives it back (tuples: lists; paths and other objects: their str)
        "kwargs": json.loads(json.dumps(expert.spec.kwargs, default=str)),
        "checkpoint": expert.spec.checkpoint, "sha256": expert.spec.sha256, "dim": expert.dim,
        "dataset": str(dataset.root), "dataset_sha256": dataset.sha256,
        "shard_size": shard_size, "splits": sorted(splits) if splits else None,
        "precision": effective_precision(precision), "modalities": {},
    }


def _check_same(old: dict[str, Any], new: dict[str, Any], where: Path) -> None:
    for key in _IDENTITY:
        if old.get(key, _BEFORE.get(key)) != new.get(key):
            raise CacheError(
                f"{where} was made with {key}={old.get(key, _BEFORE.get(key))!r}, not {new.get(key)!r} "
                f"(expert {old.get('expert')!r} vs {new.get('expert')!r}); use another --out or delete it"
            )


def _encode_lenient(expert: Expert, modality: str, loaded: list[Any], batch: AdaptiveBatch) -> tuple[torch.Tensor, list[int], list[tuple[int, str]]]:
    """Encode a shard; if the batch fails, encode item by item to isolate the bad ones. An all-zero
    embedding (no direction to compare) is a bad item too."""
    try:
        emb, keep, bad = batch.run(lambda size: expert.embed_loaded(modality, loaded, size)), list(range(len(loaded))), []
    except InputError:
        rows, keep, bad = [], [], []
        for i, item in enumerate(loaded):
            try:
                rows.append(expert.embed_loaded(modality, [item]))
                keep.append(i)
            except InputError as exc:
                bad.append((i, str(exc)))
        emb = torch.cat(rows) if rows else torch.empty(0, expert.dim)
    zero = (emb == 0).all(dim=1)
    if zero.any():
        bad = sorted([*bad, *((keep[j], f"expert {expert.name!r} embedded it as all zeros")
                              for j in zero.nonzero().flatten().tolist())])
        keep = [i for i, z in zip(keep, zero.tolist()) if not z]
        emb = emb[~zero]
    return emb, keep, bad


def _content_sha256(emb: torch.Tensor, meta: dict[str, str]) -> str:
    """sha256 of a shard's float16 data and of its metadata (ids, plan, bad items), `sha256` aside."""
    h = hashlib.sha256(emb.contiguous().view(-1).view(torch.uint8).numpy())
    h.update(json.dumps({k: v for k, v in meta.items() if k != "sha256"}, sort_keys=True).encode())
    return h.hexdigest()


_WARNED_LEGACY: set[str] = set()  # caches in a legacy format already warned about in this process
# path → (inode, size, mtime_ns, sha256) of the shards checked in this process
_VERIFIED: dict[str, tuple[int, int, int, str]] = {}


def _stamp(path: Path, sha256: str | None) -> tuple[int, int, int, str | None]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns, sha256


def verified_shard(path: Path) -> tuple[dict[str, str], torch.Tensor | None]:
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
        meta, _ = verified_shard(path)
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
    retry_bad: bool = False,
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
        retry_bad: embed again the finished shards that hold bad items (a file that was missing or
            unreadable, since fixed); otherwise a resumed cache keeps its bad items as they are.
        progress: show a progress bar.

    Under torchrun, every rank calls this; see the module docstring.

    Raises:
        InputError: `shard_size` below 1, an unknown precision; a bad manifest line (before anything
            is written).
        LockError: another job is embedding into `out` (`$SPACEBIND_LOCK_WAIT` seconds to wait).
    """
    if shard_size < 1:
        raise InputError(f"shard_size must be at least 1, got {shard_size}")
    if precision not in PRECISIONS:  # before the manifest records it
        raise InputError(f"precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    out = Path(out)
    with job_lock(out, "embedding cache"):
        return _embed_locked(expert, dataset, out, modalities, splits, shard_size, batch_size, workers, precision,
                             retry_bad, progress)


def _embed_locked(expert: Expert, dataset: Dataset | Manifest, out: Path, modalities: Sequence[str] | None,
                  splits: Sequence[str] | None, shard_size: int, batch_size: int | None, workers: int,
                  precision: str, retry_bad: bool, progress: bool) -> "EmbeddingCache":
    """`embed_dataset` once its job holds the cache's lock."""
    present, counts = _survey(dataset, splits)
    header = _header(expert, dataset, shard_size, splits, precision)
    manifest_path = out / "manifest.json"
    for leftover in out.glob("*/.shard-*.tmp*"):  # a shard write a kill interrupted
        leftover.unlink(missing_ok=True)
    if manifest_path.is_file():
        try:
            old = json.loads(manifest_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise CacheError(f"{manifest_path}: not valid JSON ({exc}); delete the cache directory {out} "
                             "and embed again") from None
        _check_same(old, header, out)
        header["modalities"] = _carried(old, out)
        del old
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
                               workers, retry_bad)
        with autocast(precision):
            for k, chunk, groups in track(shards, f"embedding {m} with {expert.name}",
                                          total=len(range(rank, -(-counts.get(m, 0) // shard_size), world)),
                                          show=progress, unit="shards"):
                if groups is not None:
                    _embed_shard(expert, m, chunk, groups, _shard_path(out, m, k), plans[k], batch)
                del chunk, groups  # hold no shard's items while the next window is read
        distributed.barrier()
        if distributed.is_main():
            header["modalities"][m] = _entry(m, [_shard_path(out, m, k) for k in range(len(plans))], plans)
            write_json(manifest_path, header)
    distributed.barrier()
    return EmbeddingCache.open(out)


def _carried(old: dict[str, Any], out: Path) -> dict[str, Any]:
    """The modality entries of an existing manifest to keep: as they are in this format; a format 2
    manifest's (ids inline) rewritten from their shards' metadata, shards kept; none of an older one."""
    if old.get("format") == FORMAT:
        return old.get("modalities", {})
    if old.get("format") not in LEGACY_FORMATS:
        warnings.warn(f"{out}/manifest.json: format {old.get('format')!r} from an older spacebind; its shards are "
                      "checked and recomputed where needed", stacklevel=4)
        return {}
    warnings.warn(f"{out}/manifest.json: format {old['format']} (every item id inline) from an older spacebind; "
                  f"rewriting it in format {FORMAT} (ids only in the shards), finished shards kept", stacklevel=4)
    kept: dict[str, Any] = {}
    for m, entry in old.get("modalities", {}).items():
        try:
            kept[m] = {"shards": [_upgraded(out, shard) for shard in entry["shards"]], "bad": entry["bad"]}
        except (CacheError, KeyError, TypeError) as exc:
            warnings.warn(f"{out}: {m} embeddings dropped from the manifest ({exc}); embedding {m} recomputes them",
                          stacklevel=4)
    return kept


def _upgraded(out: Path, shard: dict[str, Any]) -> dict[str, Any]:
    """A format 2 manifest's shard entry (ids inline) in this format, checked against the shard's metadata."""
    path = out / shard["file"]
    meta = _shard_meta(path)
    if meta.get("sha256") != shard["sha256"] or json.loads(meta["ids"]) != shard["ids"]:
        raise CacheError(f"{path}: shard is not the one manifest.json lists")
    return {"file": shard["file"], "n": len(shard["ids"]), "sha256": shard["sha256"],
            "ids_sha256": _ids_sha256(meta["ids"])}


def _shard_meta(path: Path) -> dict[str, str]:
    """A shard's metadata, its data not read (nor checked)."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception as exc:  # safetensors raises its own types for damaged files
        raise CacheError(f"{path}: unreadable shard ({exc})") from None
    if "ids" not in meta or "sha256" not in meta:
        raise CacheError(f"{path}: shard metadata without ids or checksum")
    return meta


def _survey(dataset: Dataset | Manifest, splits: Sequence[str] | None) -> tuple[set[str], Counter[str]]:
    """The modalities present in any split, and each modality's item count within `splits`: from a
    loaded dataset's counts, or from one pass over a manifest (validating it whole before anything
    is written)."""
    counts = dataset.counts if isinstance(dataset, Dataset) else survey(dataset.iter_items())[0]
    present = {m for (_, m), n in counts.items() if m is not None and n}
    within: Counter[str] = Counter()
    for (split, m), n in counts.items():
        if m is not None and (not splits or split in splits):
            within[m] += n
    return present, within


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
                  world: int, window: int, batch: AdaptiveBatch, workers: int, retry_bad: bool,
                  ) -> Iterator[tuple[int, list[Item], Iterator[LoadResult] | None]]:
    """This rank's shards (k % world == rank) as (k, items, loaded groups or None when the shard is
    already done), read `window` shards at a time: one decoding pipeline per window, and no more
    than a window of items held."""
    def done(k: int) -> bool:
        meta = _shard_ok(_shard_path(out, modality, k), plans[k])
        return meta is not None and not (retry_bad and json.loads(meta["bad"]))

    while True:
        block = list(islice((s for s in shards if s[0] % world == rank), window))
        if not block:
            return
        todo = [(k, chunk) for k, chunk in block if not done(k)]
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
    """The manifest entry of a modality from its finished shards' metadata (ids stay in the shards)."""
    entry: dict[str, Any] = {"shards": [], "bad": []}
    for path, planned in zip(paths, plans):
        meta = _shard_ok(path, planned)
        if meta is None:
            raise CacheError(f"{path}: shard missing or damaged after embedding {modality}; rerun to recompute it")
        entry["shards"].append({"file": f"{modality}/{path.name}", "n": len(json.loads(meta["ids"])),
                                "sha256": meta["sha256"], "ids_sha256": _ids_sha256(meta["ids"])})
        entry["bad"].extend(json.loads(meta["bad"]))
    return entry


@lru_cache(maxsize=16)
def _read_shard(path: str, mtime_ns: int) -> tuple[dict[str, str], torch.Tensor]:
    """A shard's metadata and data as float32, checked against its checksum."""
    meta, emb = verified_shard(Path(path))
    if emb is None:
        with safe_open(path, framework="pt") as fh:
            emb = fh.get_tensor("embeddings")
    return meta, emb.float()


class EmbeddingCache:
    """Read access to a cache; shards are read lazily (a few kept in memory).

    Items are addressed by id or by row (an item's position in cache order, 0 … count - 1). Finding
    ids' rows builds, once per modality, a `KeyIndex` over the ids' 128-bit keys (24 bytes an item,
    no id strings held); `ids_at` resolves rows back to ids from the shards they fall in."""

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root = root
        self.manifest = manifest
        self._lookups: dict[str, KeyIndex] = {}

    @classmethod
    def open(cls, path: str | Path) -> "EmbeddingCache":
        root = Path(path)
        try:
            manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CacheError(f"{root} is not an embedding cache: cannot read manifest.json ({exc})") from None
        if manifest.get("format") in LEGACY_FORMATS:
            if str(root.resolve()) not in _WARNED_LEGACY:
                _WARNED_LEGACY.add(str(root.resolve()))
                warnings.warn(f"{root}/manifest.json: format {manifest['format']} from an older spacebind (every item "
                              "id inline: reading it takes memory in proportion to the cache); read as is. Rerun "
                              "`spacebind embed` (or fuse) on it to rewrite it (finished shards are kept)", stacklevel=2)
        elif manifest.get("format") != FORMAT:
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

    def count(self, modality: str) -> int:
        """How many items of `modality` the cache holds (bad items aside), from manifest.json alone."""
        return sum(s["n"] if "n" in s else len(s["ids"]) for s in self._entry(modality)["shards"])

    def shard_ids(self, modality: str) -> Iterator[list[str]]:
        """Each shard's ids in cache order, read from the shards' metadata one at a time (not their data).

        Raises:
            CacheError: a shard unreadable, or whose ids are not the ones manifest.json lists.
        """
        for k in range(len(self._entry(modality)["shards"])):
            yield self._shard_ids(modality, k)

    def _shard_ids(self, modality: str, k: int) -> list[str]:
        """Shard `k`'s ids from its metadata, checked against the `ids_sha256` manifest.json lists."""
        shard = self._entry(modality)["shards"][k]
        if "ids" in shard:  # format 2: inline, checked against the shard when its data are read
            return list(shard["ids"])
        path = self.root / shard["file"]
        try:
            ids = _shard_meta(path)["ids"]
            if _ids_sha256(ids) != shard["ids_sha256"]:
                raise CacheError(f"{path}: shard ids are not the ones {self.root / 'manifest.json'} lists "
                                 "(other checksum)")
        except CacheError as exc:
            raise CacheError(f"{exc}; rerun `spacebind embed` (or fuse) on this cache to recompute it") from None
        return json.loads(ids)

    def offsets(self, modality: str) -> np.ndarray:
        """int64 [shards + 1]: the first row of each shard, then the count (from manifest.json alone)."""
        counts = [s["n"] if "n" in s else len(s["ids"]) for s in self._entry(modality)["shards"]]
        return np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64)

    def key_index(self, modality: str) -> KeyIndex:
        """The modality's id → row lookup, built on first use from the shards' ids one shard at a time."""
        if modality not in self._lookups:
            parts = [id_keys(ids) for ids in self.shard_ids(modality)]
            keys = np.concatenate(parts) if parts else np.empty((0, 2), dtype=np.uint64)
            del parts
            self._lookups[modality] = KeyIndex(keys)
        return self._lookups[modality]

    def rows(self, modality: str, ids: Sequence[str] | np.ndarray) -> np.ndarray:
        """int64 rows of items given by id or by `id_keys` ([n, 2] uint64), -1 where the cache has none."""
        keys = ids if isinstance(ids, np.ndarray) else id_keys(ids)
        return self.key_index(modality).rows(keys)

    def ids_at(self, modality: str, rows: Sequence[int] | np.ndarray) -> list[str]:
        """The ids of `rows`, in their order, read from the shards they fall in."""
        rows = self._checked_rows(modality, rows)
        out: list[str] = [""] * len(rows)
        for k, pos, local in self._by_shard(modality, rows):
            ids = self._shard_ids(modality, k)
            for p, r in zip(pos.tolist(), local.tolist()):
                out[p] = ids[r]
        return out

    def embeddings_at(self, modality: str, rows: Sequence[int] | np.ndarray) -> torch.Tensor:
        """Float32 embeddings of `rows` (positions in cache order), in their order."""
        rows = self._checked_rows(modality, rows)
        out = torch.empty(len(rows), self.dim)
        for k, pos, local in self._by_shard(modality, rows):
            out[torch.from_numpy(pos)] = self._shard(modality, k)[torch.from_numpy(local)]
        return out

    def _checked_rows(self, modality: str, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        n = self.count(modality)
        if len(rows) and (rows.min() < 0 or rows.max() >= n):
            bad = rows[(rows < 0) | (rows >= n)][:5].tolist()
            raise CacheError(f"cache {self.root} has {n} {modality} rows; asked for rows {bad}")
        return rows

    def _by_shard(self, modality: str, rows: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(shard, positions in `rows`, rows within the shard) for each shard `rows` fall in, in shard order."""
        if not len(rows):
            return
        offsets = self.offsets(modality)
        shard = np.searchsorted(offsets, rows, side="right") - 1
        order = np.argsort(shard, kind="stable")
        cuts = np.flatnonzero(np.diff(shard[order])) + 1
        for pos in np.split(order, cuts):
            k = int(shard[pos[0]])
            yield k, pos, rows[pos] - offsets[k]

    def ids(self, modality: str) -> list[str]:
        """Every id of `modality` in cache order (a list as long as the cache: `shard_ids` streams them)."""
        return [i for ids in self.shard_ids(modality) for i in ids]

    def bad(self, modality: str) -> list[dict[str, str]]:
        return list(self._entry(modality)["bad"])

    def _shard(self, modality: str, k: int) -> torch.Tensor:
        return self._shard_read(modality, k)[1]

    def _shard_read(self, modality: str, k: int) -> tuple[list[str], torch.Tensor]:
        """Shard `k`'s ids and float32 data, checked against its own checksum (which covers its ids)
        and the one manifest.json lists."""
        shard = self._entry(modality)["shards"][k]
        path = self.root / shard["file"]
        try:
            meta, emb = _read_shard(str(path), path.stat().st_mtime_ns)
            ids = json.loads(meta["ids"])
            if meta["sha256"] != shard["sha256"] or ("ids" in shard and ids != shard["ids"]):
                raise CacheError(f"{path}: shard is not the one {self.root / 'manifest.json'} lists (other checksum or ids)")
        except (OSError, CacheError) as exc:
            raise CacheError(f"{exc}; rerun `spacebind embed` (or fuse) on this cache to recompute it") from None
        return ids, emb

    def embeddings(self, modality: str, ids: Sequence[str] | None = None) -> torch.Tensor:
        """Float32 embeddings in the order of `ids` (all, in cache order, when None)."""
        if ids is None:
            parts = [self._shard(modality, k) for k in range(len(self._entry(modality)["shards"]))]
            return torch.cat(parts) if parts else torch.empty(0, self.dim)
        rows = self.rows(modality, ids)
        if (rows < 0).any():
            missing = [ids[j] for j in np.flatnonzero(rows < 0)[:6].tolist()]
            raise CacheError(f"cache {self.root} has no {modality} embeddings for ids {missing[:5]}{' …' if len(missing) > 5 else ''}")
        return self.embeddings_at(modality, rows)

    def iter_chunks(self, modality: str, chunk_size: int = 4096) -> Iterator[tuple[list[str], torch.Tensor]]:
        """Yield (ids, embeddings) chunks in cache order without loading the whole cache."""
        ids_buf: list[str] = []
        rows_buf: list[torch.Tensor] = []
        for k in range(len(self._entry(modality)["shards"])):
            ids, rows = self._shard_read(modality, k)
            ids_buf += ids
            rows_buf.append(rows)
            while len(ids_buf) >= chunk_size:
                block = torch.cat(rows_buf)
                yield ids_buf[:chunk_size], block[:chunk_size]
                ids_buf, rows_buf = ids_buf[chunk_size:], [block[chunk_size:]]
        if ids_buf:
            yield ids_buf, torch.cat(rows_buf)
