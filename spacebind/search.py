"""Any-query and composable retrieval over a fused space (OmniBind): a FAISS index of a
collection, and queries of any modalities combined as a weighted sum of unit vectors.

    INDEX/manifest.json          the space (name, formula, dim, fingerprint, fused checkpoint path),
                                 the dataset, the index kind, and per modality its files, count
                                 and support (the dimensions its embeddings use, where not all)
    INDEX/<modality>.faiss       inner-product index of the space's unit embeddings of the items
    INDEX/<modality>.items.json  [{"id", "split", "label", "input"}] in index order

Items are embedded from the leaf embedding caches (`binding.ensure_caches` + `combine`), in
chunks, so nothing already cached is re-encoded and memory beyond the index itself stays bounded
by the chunk. An index is built beside its directory and swapped in whole (the old index stays
whole until then; a failed build leaves it as it was), and its manifest records the sha256 of
every file. An index loaded against another space (different fingerprint or dim), or with a
damaged file, is refused; a manifest names only files inside the index directory. Queries are
normalised: scores are cosines whatever a query vector's norm.

A hit's score is the cosine between the item and the query restricted to the dimensions the item's
modality uses. Most spaces use every dimension for every modality (then it is the inner product of
unit vectors); a bond's channel (`spacebind.bonds.bind`) leaves the channel block at zero for the
modalities it does not carry, and a query's share of that block would otherwise scale down every
score of those modalities, so that merged lists ranked one modality's items above another's.
"""
from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from spacebind.cache import dataset_key, ensure_caches
from spacebind.cache.keys import id_keys
from spacebind.errors import CheckpointError, InputError
from spacebind.io.datasets import Dataset
from spacebind.io.files import (
    atomic_path,
    check_output,
    home_dir,
    keep_other_files,
    sha256_file,
    storage_errors,
    write_json,
)
from spacebind.io.locks import dir_lock, replacing_dir
from spacebind.io.progress import track
from spacebind.modalities import check_modality
from spacebind.retrieval.mining import IndexKind, IndexOptions
from spacebind.retrieval.mining import build_index as build_faiss_index
from spacebind.space import Space
from spacebind.training.state import fingerprint

FORMAT = 1
MANIFEST = "manifest.json"


def space_fingerprint(space: Space) -> str:
    """A digest of everything that fixes `space`'s embeddings: its saved config (experts by source,
    kwargs and sha256; bonds, λ, κ, head shapes; not names or presets) and its head weights. A loaded checkpoint has the
    fingerprint of the space that was saved. Spaces the checkpoint module cannot describe fall back
    to their name, formula, dim, modalities and leaves."""
    from spacebind.checkpoint import head_tensors, space_config

    try:
        config: Any = _without_paths(space_config(space))
        tensors = head_tensors(space)
    except CheckpointError:
        config = {"name": space.name, "formula": space.formula(), "dim": space.dim, "modalities": list(space.modalities),
                  "leaves": [{"name": e.name, **_without_paths(e.spec.to_json())} for e in space.leaves()]}
        tensors = {}
    keys = sorted(tensors)
    return fingerprint(config, keys, [tensors[k].float() for k in keys])


def _without_paths(node: Any) -> Any:
    """The config without what leaves the embeddings as they are: expert checkpoint paths (moving a
    file keeps its sha256), and a bond's name, presets and record of its choices (`sweep` adds
    presets; an index built before stays valid)."""
    if isinstance(node, dict):
        dropped = {"checkpoint", *(("name", "presets", "choices") if node.get("type") == "bond" else ())}
        return {k: _without_paths(v) for k, v in node.items() if k not in dropped}
    if isinstance(node, list):
        return [_without_paths(v) for v in node]
    return node


@dataclass(frozen=True)
class Hit:
    """One retrieved item."""

    rank: int
    id: str
    modality: str
    label: str | None
    score: float
    input: str


class SearchIndex:
    """A loaded index: one FAISS index and item list per modality, and the manifest."""

    def __init__(self, root: Path, manifest: dict[str, Any], indexes: dict[str, Any], items: dict[str, list[dict[str, Any]]]) -> None:
        self.root = root
        self.manifest = manifest
        self.indexes = indexes
        self.items = items
        self._ids: dict[str, np.ndarray] = {}  # per modality, the item ids as an object array (built on first search)
        self._support = {m: _mask(entry.get("support"), self.dim, root / MANIFEST)
                         for m, entry in manifest.get("modalities", {}).items()}

    def ids_array(self, modality: str) -> np.ndarray:
        """The item ids of `modality` in index order, as a numpy object array (cached): FAISS rows
        map to ids with one fancy-indexing step."""
        ids = self._ids.get(modality)
        if ids is None or len(ids) != len(self.items[modality]):
            ids = np.empty(len(self.items[modality]), dtype=object)
            ids[:] = [item["id"] for item in self.items[modality]]
            self._ids[modality] = ids
        return ids

    @property
    def dim(self) -> int:
        return int(self.manifest["space"]["dim"])

    def support(self, modality: str) -> np.ndarray | None:
        """bool [dim]: the dimensions `modality`'s embeddings use; None when they use all."""
        return self._support.get(modality)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.indexes)

    def __len__(self) -> int:
        return sum(len(v) for v in self.items.values())


def _chunks(embed: Any, ids: list[str], chunk_size: int, label: str, progress: bool) -> Iterator[tuple[list[str], torch.Tensor]]:
    starts = range(0, len(ids), chunk_size)
    for start in track(starts, label, total=len(starts), show=progress, unit="chunks"):
        part = ids[start:start + chunk_size]
        yield part, embed(part)


def build_index(
    space: Space,
    dataset: Dataset | str | Path,
    out: str | Path,
    *,
    modalities: Sequence[str] | None = None,
    split: str | None = None,
    kind: IndexKind = "flat",
    chunk_size: int = 4096,
    cache_dir: str | Path | None = None,
    fused: str | Path | None = None,
    progress: bool = True,
    options: IndexOptions | None = None,
) -> SearchIndex:
    """Index a collection's items in `space`: one FAISS index per modality.

    Args:
        space: the (fused) space; items are embedded from its leaves' caches.
        dataset: the collection (a `Dataset` or its directory / manifest).
        out: the index directory (replaced modality by modality; manifest written last).
        modalities: which modalities to index (default: every one the space covers and the data has).
        split: only items of this split (default: all).
        kind: `flat` (exact inner product), or approximate: `ivf` (inverted lists), `hnsw` (graph),
            `pq` (product-quantized codes, exhaustive) or `ivfpq` (both); trained kinds train on
            the first `options.train_size` items.
        options: every index parameter (default `IndexOptions()`) (`IndexOptions`: HNSW M / efConstruction / efSearch,
            PQ m / bits, IVF nlist / nprobe, training size); recorded in the manifest.
        chunk_size: items embedded and added per step (bounds memory).
        cache_dir: leaf embedding caches (default `$SPACEBIND_HOME/caches/<dataset key>`).
        fused: the fused checkpoint directory the space came from, recorded in the manifest.
    """
    data = dataset if isinstance(dataset, Dataset) else Dataset.load(dataset)
    present = data.modalities()
    wanted = list(modalities) if modalities else [m for m in space.modalities if m in present]
    for m in wanted:
        check_modality(m, space.modalities, owner=f"space {space.name!r}")
        if m not in present:
            raise InputError(f"dataset {data.root} has no {m!r} items (it has {', '.join(present)})")
    if not wanted:
        raise InputError(f"space {space.name!r} covers none of the modalities of {data.root} ({', '.join(present)})")
    out = check_output(Path(out).resolve(), directory=True, what="index directory")
    if out.is_dir() and not (out / MANIFEST).is_file() and not all(_index_file(p.name) for p in out.iterdir()):
        raise InputError(f"{out} is not empty and not a spacebind index; index into a new or empty directory")
    root = Path(cache_dir) if cache_dir is not None else home_dir() / "caches" / dataset_key(data)
    caches = ensure_caches([space], data, root, progress=progress)
    options = options or IndexOptions()
    entries: dict[str, dict[str, Any]] = {}
    with _index_directory(out) as stage:
        for m in wanted:
            found = data.select(split, m)  # held anyway: items.json lists them
            chosen = [it for it, keep in zip(found, caches.usable(space, m, id_keys(it.id for it in found))) if keep]
            if not chosen:
                raise InputError(f"no {m!r} items to index in {data.root}" + (f" split {split!r}" if split else ""))
            ids = [it.id for it in chosen]
            used = np.zeros(space.dim, dtype=bool)
            chunks = _chunks(partial(_embedded, caches, space, m, used), ids, chunk_size, f"indexing {m}", progress)
            index, _ = build_faiss_index(chunks, space.dim, kind, options=options)  # rows in the order of `ids`
            _write_faiss(index, stage / f"{m}.faiss")
            items = [{"id": it.id, "split": it.split, "label": it.label, "input": it.fields[m]} for it in chosen]
            write_json(stage / f"{m}.items.json", items)
            entries[m] = {"index": f"{m}.faiss", "items": f"{m}.items.json", "count": len(ids),
                          "sha256": {f: sha256_file(stage / f) for f in (f"{m}.faiss", f"{m}.items.json")},
                          **({} if used.all() else {"support": _ranges(used)})}
        manifest = {
            "format": FORMAT,
            "space": {"name": space.name, "formula": space.formula(), "dim": space.dim,
                      "fingerprint": space_fingerprint(space), "fused": str(Path(fused).resolve()) if fused else None},
            "dataset": str(data.root), "dataset_sha256": data.sha256, "split": split,
            "kind": kind, "nlist": options.nlist if "nlist" in options.for_kind(kind) else None,
            "nprobe": options.nprobe if "nprobe" in options.for_kind(kind) else None, "options": options.for_kind(kind),
            "modalities": entries,
        }
        write_json(stage / MANIFEST, manifest)
        if stage != out:
            keep_other_files(out, stage, _index_files(out))
    return load_index(out)


@contextmanager
def _index_directory(out: Path) -> Iterator[Path]:
    """Where an index is built: beside `out`, swapped in whole (`replacing_dir`: the old index stays
    whole until the new one is complete); in `out` itself where no sibling can go there (a mount
    point, or a parent the user cannot write), with the old manifest removed first so that a
    half-written index does not load."""
    parent = next(p for p in out.parents if p.exists())  # where the sibling's directories will be made
    if not os.path.ismount(out) and os.access(parent, os.W_OK):
        with replacing_dir(out, "index being built") as stage:
            yield stage
        return
    with storage_errors(out):
        out.mkdir(parents=True, exist_ok=True)
        (out / MANIFEST).unlink(missing_ok=True)
    with dir_lock(out, "index being built"):
        yield out


def _index_file(name: str) -> bool:
    """Whether a file name is one an index build writes (a half-built index holds only those)."""
    return name == MANIFEST or name.endswith((".faiss", ".items.json"))


def _index_files(root: Path) -> set[str]:
    """The files of the index in `root` (its manifest and what it names, if it reads)."""
    try:
        entries = json.loads((root / MANIFEST).read_text(encoding="utf-8")).get("modalities") or {}
        named = {e.get(key) for e in entries.values() if isinstance(e, dict) for key in ("index", "items")}
    except (OSError, ValueError, AttributeError):
        named = set()
    return {MANIFEST, *(n for n in named if isinstance(n, str))}


def _embedded(caches: Any, space: Space, modality: str, used: np.ndarray, ids: list[str]) -> torch.Tensor:
    """The space's embeddings of `ids`, marking in `used` the dimensions any of them uses (nonzero)."""
    emb = caches.embeddings(space, modality, ids)
    used |= (emb != 0).any(dim=0).numpy()
    return emb


def _ranges(used: np.ndarray) -> list[list[int]]:
    """The runs of True in `used` as [start, end) pairs."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], used.astype(np.int8), [0]])))
    return edges.reshape(-1, 2).tolist()


def _mask(ranges: Any, dim: int, where: Path) -> np.ndarray | None:
    """`_ranges` back as a bool [dim] mask; None for all dimensions.

    Raises:
        InputError: `ranges` is not a list of [start, end] pairs with 0 ≤ start < end ≤ dim (naming `where`).
    """
    if ranges is None:
        return None
    mask = np.zeros(dim, dtype=bool)
    for pair in ranges if isinstance(ranges, list) else [None]:
        if not (isinstance(pair, list) and len(pair) == 2 and all(type(v) is int for v in pair)
                and 0 <= pair[0] < pair[1] <= dim):
            raise InputError(f"{where}: support {ranges!r} is not a list of [start, end] dimension ranges "
                             f"within [0, {dim}]; rebuild the index")
        mask[pair[0]:pair[1]] = True
    return mask


def _write_faiss(index: Any, path: Path) -> None:
    import faiss

    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))


def load_index(path: str | Path, space: Space | None = None) -> SearchIndex:
    """Load an index; with `space`, refuse it unless it was built with that same space.

    Raises:
        InputError: `path` has no manifest (it is not an index), or one of another format.
        CheckpointError: the manifest, a FAISS file or an items file is damaged or missing (naming
            the file), or the index was built with another space.
    """
    root = Path(path)
    where = root / MANIFEST
    try:
        manifest = json.loads(where.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{root} is not a spacebind index: cannot read {MANIFEST} ({exc})") from None
    except ValueError as exc:  # not UTF-8, or not JSON
        raise _damaged(where, f"not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise _damaged(where, f"a JSON {type(manifest).__name__}, not an object")
    if manifest.get("format") != FORMAT:
        raise InputError(f"{where}: format {manifest.get('format')!r}, this spacebind reads {FORMAT}")
    entries = _check_manifest(manifest, where)
    if space is not None:
        check_same_space(manifest, space, root)
    dim = manifest["space"]["dim"]
    indexes, items = {}, {}
    for m, entry in entries.items():
        for key in ("index", "items"):
            _check_sha256(root / entry[key], entry.get("sha256"), where)
        indexes[m] = _read_faiss(root / entry["index"])
        items[m] = _read_items(root / entry["items"])
        if indexes[m].ntotal != len(items[m]) or indexes[m].d != dim:
            raise _damaged(root / entry["index"], f"holds {indexes[m].ntotal} vectors of dim {indexes[m].d}, the "
                                                  f"manifest expects {len(items[m])} of dim {dim}")
    return SearchIndex(root, manifest, indexes, items)


def _damaged(path: Path, problem: str) -> CheckpointError:
    """The error for a damaged index file."""
    return CheckpointError(f"{path}: {problem}; rebuild the index with `spacebind index`")


def _check_manifest(manifest: dict[str, Any], where: Path) -> dict[str, dict[str, Any]]:
    """The manifest's modality entries, once its space and entries have the fields and types
    `build_index` writes, and every file an entry names is a bare file name (inside the index)."""
    built = manifest.get("space")
    if not (isinstance(built, dict) and isinstance(built.get("name"), str)
            and isinstance(built.get("fingerprint"), str) and type(built.get("dim")) is int and built["dim"] > 0
            and isinstance(built.get("fused"), (str, type(None)))):
        raise _damaged(where, "'space' is not an object with name, dim, fingerprint and fused")
    entries = manifest.get("modalities")
    if not (isinstance(entries, dict) and entries and all(isinstance(e, dict) for e in entries.values())):
        raise _damaged(where, "'modalities' is not an object of one entry per modality")
    for m, entry in entries.items():
        for key in ("index", "items"):
            name = entry.get(key)
            if not (isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name):
                raise _damaged(where, f"modalities.{m}.{key} is {name!r}, not the name of a file in the index "
                                      "directory")
    return entries


def _check_sha256(path: Path, recorded: Any, where: Path) -> None:
    """Raise unless `path` has the sha256 the manifest records for it (an index built before
    checksums were recorded has none: nothing to check)."""
    if recorded is None:
        return
    if not isinstance(recorded, dict):
        raise _damaged(where, "a modality's 'sha256' is not an object of checksums by file name")
    if path.name in recorded and (not path.is_file() or sha256_file(path) != recorded[path.name]):
        raise _damaged(path, f"missing, or not the file {where.name} was written with (damaged, or from "
                             "another build)")


def _read_faiss(path: Path) -> Any:
    """The FAISS index stored at `path`."""
    import faiss

    if not path.is_file():
        raise _damaged(path, "no such file")
    try:
        return faiss.read_index(str(path))
    except (RuntimeError, MemoryError):  # a truncated or foreign file; a damaged size field asks for too much
        raise _damaged(path, "not a FAISS index") from None


def _read_items(path: Path) -> list[dict[str, Any]]:
    """The item list stored at `path`: [{"id", "input", …}] in index order."""
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _damaged(path, f"cannot read it ({exc.strerror})") from None
    except ValueError as exc:  # not UTF-8, or not JSON
        raise _damaged(path, f"not valid JSON ({exc})") from None
    if not (isinstance(items, list) and all(isinstance(it, dict) and isinstance(it.get("id"), str)
                                            and isinstance(it.get("input"), str) for it in items)):
        raise _damaged(path, 'not a list of items with "id" and "input"')
    return items


def check_same_space(manifest: dict[str, Any], space: Space, where: Path) -> None:
    """Raise unless `space` is the space the index was built with (same dim and fingerprint)."""
    built = manifest["space"]
    fingerprint = space_fingerprint(space)
    if built["dim"] != space.dim or built["fingerprint"] != fingerprint:
        source = f" from {built['fused']}" if built.get("fused") else ""
        raise CheckpointError(
            f"{where} was built with space {built['name']!r}{source} (dim {built['dim']}, fingerprint "
            f"{built['fingerprint'][:12]}…), not with {space.name!r} (dim {space.dim}, fingerprint {fingerprint[:12]}…); "
            f"search with that fused checkpoint or rebuild the index with `spacebind index`"
        )


def compose(embeddings: Sequence[torch.Tensor], weights: Sequence[float] | None = None,
            blocks: Sequence[int] | None = None) -> torch.Tensor:
    """`n(Σ_i w_i·n(q_i))`: the weighted sum of unit query vectors, renormalised. Each query is a
    [dim] or [N, dim] tensor (rows composed in parallel); weights default to 1. With a space's
    `blocks` (a bond's channel), each part is composed on its own, over the queries that have it:
    its direction `n(Σ_i w_i·n(q_i,part))`, its norm the |w|-weighted mean of theirs. A text query of
    a channelled space keeps only √(1−κ) of its norm outside the channel, where images are compared,
    so a whole-vector sum would let an image query drown it there."""
    if not embeddings:
        raise InputError("no query to compose: give at least one")
    w = [1.0] * len(embeddings) if weights is None else [float(v) for v in weights]
    if len(w) != len(embeddings):
        raise InputError(f"weights: {len(w)} given for {len(embeddings)} queries; give one weight per query")
    bad = [v for v in w if not math.isfinite(v)]
    if bad:
        raise InputError(f"weights: {bad[0]} is not a finite number")
    unit = [F.normalize(e.float(), dim=-1) for e in embeddings]
    if blocks is None or len(blocks) < 2:
        total = sum(v * q for v, q in zip(w, unit))
    else:
        total = torch.cat([_compose_part(list(parts), w) for parts in zip(*(q.split(list(blocks), dim=-1) for q in unit))], dim=-1)
    if (torch.as_tensor(total).norm(dim=-1) < 1e-6).any():
        raise InputError(f"weights {w}: the weighted queries cancel out (their sum is zero)")
    return F.normalize(total, dim=-1)


def _compose_part(parts: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """One part of `compose` with blocks: the weighted sum of the queries' unit parts (those that
    have the part), scaled to the |w|-weighted mean of their norms."""
    norms = [p.norm(dim=-1, keepdim=True) for p in parts]
    direction = F.normalize(sum(v * F.normalize(p, dim=-1) for v, p in zip(weights, parts)), dim=-1)  # zero parts add 0
    mass = sum(abs(v) * (n > 1e-12).float() for v, n in zip(weights, norms))  # the queries that have the part
    norm = sum(abs(v) * n for v, n in zip(weights, norms)) / mass.clamp_min(1e-12)
    return direction * norm


def compose_query(space: Space, queries: Mapping[str, Sequence[Any]], weights: Sequence[float] | None = None) -> torch.Tensor:
    """Embed queries of any modalities in `space` and compose them into one unit vector [dim].

    `queries` maps modality → inputs (paths, arrays, strings); weights (one per input, default 1)
    follow the mapping's order, each modality's inputs in the order given.
    Example: `compose_query(space, {"text": ["a dog"], "audio": ["bark.wav"]}, [0.5, 1])`."""
    labels = query_labels(queries)
    if weights is not None and len(weights) != len(labels):
        raise InputError(f"weights: {len(weights)} given for {len(labels)} queries ({', '.join(labels)}); "
                         "give one weight per query, in the order of the queries")
    parts = []
    for m in _ordered(queries):
        check_modality(m, space.modalities, owner=f"space {space.name!r}")
        parts.extend(space.encode(m, list(queries[m])))
    return compose(parts, weights, space.blocks)


def embed_queries(space: Space, queries: Mapping[str, Sequence[Any]]) -> torch.Tensor:
    """Embed queries of any modalities in `space`, each on its own (not composed): [n, dim] unit
    rows in the order of `query_labels`, for `search_batch`."""
    parts = []
    for m in _ordered(queries):
        check_modality(m, space.modalities, owner=f"space {space.name!r}")
        parts.append(space.encode(m, list(queries[m])).float())
    if not parts:
        raise InputError("no query to embed: give at least one")
    return F.normalize(torch.cat(parts), dim=-1)


def query_labels(queries: Mapping[str, Sequence[Any]]) -> list[str]:
    """`modality:input` for every query, in the order weights follow."""
    return [f"{m}:{q if isinstance(q, (str, Path)) else type(q).__name__}" for m in _ordered(queries) for q in queries[m]]


def _ordered(queries: Mapping[str, Sequence[Any]]) -> list[str]:
    for m in queries:
        check_modality(m)
    return [m for m in queries if queries[m]]


@dataclass(frozen=True)
class SearchResults:
    """The top-k of a batch of queries, as arrays ([N, w] each, w = min(k, items searched)),
    ranked by score per row. A row with fewer than w hits is padded with row -1, id None and
    score -inf. `hits(i)` (or iteration) gives query i's `Hit`s, built on demand."""

    index: SearchIndex
    ids: np.ndarray  # [N, w] object: item ids
    rows: np.ndarray  # [N, w] int64: row in index.items[modality], -1 for padding
    scores: np.ndarray  # [N, w] float32: inner product of unit vectors (cosine similarity)
    which: np.ndarray  # [N, w] int64: each hit's modality, as a position in `searched`
    searched: tuple[str, ...]  # the modalities searched

    @property
    def modalities(self) -> np.ndarray:
        """[N, w] object: each hit's modality."""
        names = np.empty(len(self.searched), dtype=object)
        names[:] = self.searched
        return names[self.which]

    def __len__(self) -> int:
        return len(self.rows)

    def hits(self, i: int) -> list[Hit]:
        """Query i's hits, best first (padding dropped)."""
        found: list[Hit] = []
        items, names = self.index.items, self.searched
        for j, r, score in zip(self.which[i].tolist(), self.rows[i].tolist(), self.scores[i].tolist()):
            if r >= 0:
                item = items[names[j]][r]
                found.append(Hit(len(found) + 1, item["id"], names[j], item.get("label"), score, item["input"]))
        return found

    def __iter__(self) -> Iterator[list[Hit]]:
        return (self.hits(i) for i in range(len(self)))


def _query_matrix(index: SearchIndex, queries: Any) -> np.ndarray:
    """[N, dim] C-contiguous float32 from a tensor or array of shape [dim] or [N, dim]."""
    if isinstance(queries, torch.Tensor):
        queries = queries.detach().cpu()
        x = (queries if queries.dtype == torch.float32 else queries.float()).numpy()
    else:
        x = np.asarray(queries, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != index.dim:
        raise InputError(f"queries have shape {tuple(x.shape)}, the index at {index.root} holds dim {index.dim}: "
                         f"give [dim] or [N, dim]")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    bad = np.flatnonzero(~np.isfinite(norms[:, 0]) | (norms[:, 0] == 0))
    if bad.size:
        raise InputError(f"query {int(bad[0])} is {'zero' if norms[bad[0], 0] == 0 else 'not finite'}: "
                         "a query needs a direction")
    off = np.abs(norms - 1.0) > 1e-5  # scores are cosines whatever the query's norm; unit rows stay bit for bit
    return np.ascontiguousarray(np.where(off, x / norms, x), dtype=np.float32)


def search_batch(index: SearchIndex, queries: Any, k: int = 10, modalities: Sequence[str] | None = None) -> SearchResults:
    """The top-k items of each of N query vectors ([N, dim] tensor or array; [dim] is one query)
    over the index's modalities (all, or `modalities`), merged by score: one FAISS call per
    modality for the whole batch, rows mapped to ids with numpy (no per-query Python).
    Query i's hits (`results.hits(i)`) equal `search(index, queries[i], k, modalities)`."""
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}")
    x = _query_matrix(index, queries)
    wanted = list(dict.fromkeys(modalities)) if modalities else list(index.modalities)
    if modalities:
        for m in wanted:
            check_modality(m, index.modalities, owner=f"index {index.root}")
    scores, rows, ids = [], [], []
    for m in wanted:
        s, r = index.indexes[m].search(x, min(k, len(index.items[m])))
        support = index.support(m)
        if support is not None:  # cosine to the query's part on the dimensions m uses (module docstring)
            norm = np.sqrt(np.square(x[:, support]).sum(axis=1, keepdims=True))
            s = np.divide(s, norm, out=np.zeros_like(s), where=norm > 0)
        if r.size and r.max() >= len(index.items[m]):
            raise _damaged(index.root / f"{m}.faiss", f"it names row {int(r.max())} of {len(index.items[m])} items")
        found = index.ids_array(m)[r]
        if r.size and r.min() < 0:  # FAISS pads short lists with row -1 (and a huge negative score)
            missing = r < 0
            s = np.where(missing, np.float32(-np.inf), s)
            found[missing] = None
        scores.append(s)
        rows.append(r)
        ids.append(found)
    if len(wanted) == 1:  # one modality: FAISS already ranked it
        return SearchResults(index, ids[0], rows[0], scores[0], np.zeros(rows[0].shape, dtype=np.int64), tuple(wanted))
    s = np.concatenate(scores, axis=1)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]  # stable: ties keep modality order, then FAISS rank
    which = np.concatenate([np.full(r.shape, j, dtype=np.int64) for j, r in enumerate(rows)], axis=1)

    def take(parts: list[np.ndarray]) -> np.ndarray:
        return np.take_along_axis(np.concatenate(parts, axis=1), order, axis=1)

    return SearchResults(index, take(ids), take(rows), np.take_along_axis(s, order, axis=1),
                         np.take_along_axis(which, order, axis=1), tuple(wanted))


def search(index: SearchIndex, query: torch.Tensor, k: int = 10, modalities: Sequence[str] | None = None) -> list[Hit]:
    """The top-k items for one query vector [dim] over the index's modalities (all, or `modalities`),
    merged by score (cosine similarity, see the module docstring). For many queries at once,
    `search_batch` (one FAISS call for all)."""
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}")
    # numpy, not torch ops: the per-query overhead counts against fast (HNSW) indexes
    if isinstance(query, torch.Tensor):
        query = query.detach().cpu()
        q = (query if query.dtype == torch.float32 else query.float()).numpy().reshape(-1)
    else:
        q = np.asarray(query, dtype=np.float32).reshape(-1)
    if q.size != index.dim:
        raise InputError(f"query has dim {q.size}, the index at {index.root} holds dim {index.dim}")
    return search_batch(index, q, k, modalities).hits(0)
