"""Datasets as a JSONL manifest of items, with optional class names for zero-shot use.

One line per item:
    {"id": "w0-000017", "split": "train", "label": "kettle",
     "image": "image/000017.png", "audio": "audio/000017.wav", "point": "point/000017.npy",
     "text": "a small red kettle", "attributes": {"size": 0.31}}
Modality fields hold a path relative to the manifest (or absolute), or the text itself.
Paths must stay inside the dataset directory unless `classes.json` opts out with
`"allow_outside_root": true` (symlinks are followed before the check).
An item may carry any subset of modalities: paired data has several, unimodal pools one.
A `classes.json` beside the manifest lists class names, synonyms and prompt templates:
    {"templates": ["a {}"], "classes": [{"name": "kettle", "synonyms": ["teapot"]}]}
An empty or blank `text` is kept, so that batch jobs record it as a bad item and go on.
"""
from __future__ import annotations

import hashlib
import json
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from spacebind.errors import InputError
from spacebind.io.files import sha256_file
from spacebind.modalities import MODALITIES

MANIFEST = "manifest.jsonl"
CLASSES = "classes.json"
OUTSIDE_ROOT = "allow_outside_root"  # classes.json field: let manifest paths leave the dataset directory
KEPT_ITEMS = 100_000  # a dataset, or a split `select` reads, of at most this many items is kept in memory
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Item:
    """One dataset item; `fields` maps modality → path (absolute) or text."""

    id: str
    split: str
    label: str | None
    fields: dict[str, Any]
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in MODALITIES if m in self.fields)

    def media_key(self, modality: str) -> str:
        """What identifies this item's `modality` entry when counting: its media file (items sharing
        a clip, e.g. its five captions, share it), or for text the item itself."""
        return self.id if modality == "text" else str(self.fields[modality])


@dataclass(frozen=True)
class ClassInfo:
    name: str
    synonyms: tuple[str, ...] = ()


@dataclass
class Dataset:
    """A dataset whose items are streamed from their source (a manifest, or a list built in Python);
    what one validating pass learns is held: item counts per split and modality, and the classes.
    Paths in items are absolute. A dataset of at most `KEPT_ITEMS` items keeps them (a manifest
    pass resolves and checks every path, ~0.3 ms an item of media); a larger one streams them from
    the manifest at every `iter_items` pass, and `select` keeps a split of at most `KEPT_ITEMS`
    items once read (evaluation splits are read many times)."""

    root: Path
    source: "Manifest | Sequence[Item]"
    classes: list[ClassInfo]
    templates: list[str]
    counts: Counter[tuple[str, str | None]]  # (split, modality) → items; (split, None) → the split's items
    sha256: str  # of the manifest file, or of the records of items built in Python: what caches key on
    _kept: dict[str | None, list[Item]] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.root.name

    @classmethod
    def load(cls, path: str | Path) -> "Dataset":
        """A dataset from its directory or its manifest file, read once to validate and count it.

        Raises:
            InputError: a bad manifest line, a duplicate id or a bad `classes.json` (naming the file).
        """
        manifest = Manifest.open(path)
        kept: list[Item] = []
        counts, labels = survey(_keeping(manifest.iter_items(), kept))
        classes, templates = parse_classes(manifest.root / CLASSES, manifest.info, labels)
        source = kept if sum(counts[s, None] for s in SPLITS) <= KEPT_ITEMS else manifest
        return cls(root=manifest.root, source=source, classes=classes, templates=templates, counts=counts,
                   sha256=manifest.sha256)

    @classmethod
    def of_items(cls, root: str | Path, items: Sequence[Item], classes: Sequence[ClassInfo] | None = None,
                 templates: Sequence[str] = ("{}",)) -> "Dataset":
        """A dataset of items built in Python (paths absolute); classes default to the items' labels.

        Raises:
            InputError: two items with one id (a cache would serve one for the other)."""
        seen: set[str] = set()
        for it in items:
            if it.id in seen:
                raise InputError(f"{root}: duplicate item id {it.id!r}; every item needs its own id")
            seen.add(it.id)
        counts, labels = survey(items)
        info = {"templates": list(templates)}
        if classes is not None:
            info["classes"] = [{"name": c.name, "synonyms": list(c.synonyms)} for c in classes]
        names, templates = parse_classes(Path(root) / CLASSES, info, labels)
        records = hashlib.sha256()
        for it in items:  # what a manifest line would hold: a cache of these items keys on it
            records.update(json.dumps([it.id, it.split, it.label, it.fields, it.attributes], sort_keys=True,
                                      default=str).encode() + b"\n")
        return cls(root=Path(root), source=list(items), classes=names, templates=templates, counts=counts,
                   sha256=records.hexdigest())

    def iter_items(self, split: str | None = None, modality: str | None = None) -> Iterator[Item]:
        """The items of `split` (all if None) that carry `modality` (any if None), in manifest order."""
        items = self.source.iter_items() if isinstance(self.source, Manifest) else iter(self.source)
        return (it for it in items
                if (split is None or it.split == split) and (modality is None or modality in it.fields))

    def select(self, split: str | None = None, modality: str | None = None) -> list[Item]:
        """`iter_items` as a list: for one evaluation split's items, not for pools of millions. A
        split of at most `KEPT_ITEMS` items is read once and kept."""
        if not isinstance(self.source, Manifest):
            return list(self.iter_items(split, modality))
        if split not in self._kept:
            if self.count(split) > KEPT_ITEMS:
                return list(self.iter_items(split, modality))
            self._kept[split] = list(self.iter_items(split))
        return [it for it in self._kept[split] if modality is None or modality in it.fields]

    def count(self, split: str | None = None, modality: str | None = None) -> int:
        """How many items of `split` (all if None) carry `modality` (any if None)."""
        return sum(n for (s, m), n in self.counts.items() if (split is None or s == split) and m == modality)

    @property
    def splits(self) -> list[str]:
        """The splits that hold items, sorted."""
        return sorted({s for (s, m), n in self.counts.items() if m is None and n})

    def check_split(self, split: str) -> str:
        """`split` if some item is in it, else an InputError listing the dataset's splits."""
        if split not in self.splits:
            raise InputError(f"{self.root}: no split {split!r}; the dataset has {', '.join(self.splits) or 'no items'}")
        return split

    def missing_files(self) -> list[str]:
        """One line per media file (every modality but text) that an item names and that is not there."""
        return [f"{self.root / MANIFEST}: item {it.id!r} {m}: no file {path}"
                for it in self.iter_items() for m, path in it.fields.items() if m != "text" and not Path(path).exists()]

    def modalities(self) -> tuple[str, ...]:
        present = {m for (s, m), n in self.counts.items() if m is not None and n}
        return tuple(m for m in MODALITIES if m in present)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]


def _keeping(items: Iterable[Item], kept: list[Item]) -> Iterator[Item]:
    """`items`, appending each to `kept` until there are more than `KEPT_ITEMS` (then `kept` is
    emptied and stays empty)."""
    full = False
    for it in items:
        if not full:
            kept.append(it)
            if len(kept) > KEPT_ITEMS:
                kept.clear()
                full = True
        yield it


def survey(items: Iterable[Item]) -> tuple[Counter[tuple[str, str | None]], set[str]]:
    """Item counts per (split, modality) and per (split, None), and the labels, in one pass (as
    `Dataset.counts` holds them)."""
    counts: Counter[tuple[str, str | None]] = Counter()
    labels: set[str] = set()
    for it in items:
        counts[it.split, None] += 1
        counts.update((it.split, m) for m in it.fields)
        if it.label is not None:
            labels.add(it.label)
    return counts, labels


@dataclass(frozen=True)
class Manifest:
    """A dataset's manifest read as a stream: each pass validates every line, and no more than the
    caller keeps of the items is held. `Dataset.load` adds one counting pass and the classes."""

    root: Path
    path: Path
    info: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path) -> "Manifest":
        """The manifest of a dataset directory (or the manifest file itself), with its `classes.json`."""
        path = Path(path)
        manifest = path / MANIFEST if path.is_dir() else path
        if not manifest.is_file():
            raise InputError(f"no dataset manifest at {manifest} (expected a {MANIFEST} file)")
        return cls(root=manifest.parent, path=manifest, info=read_info(manifest.parent / CLASSES))

    @property
    def sha256(self) -> str:
        """sha256 of the manifest file's bytes."""
        return sha256_file(self.path)

    def iter_items(self) -> Iterator[Item]:
        """The items in manifest order, read and validated one line at a time.

        Raises:
            InputError: at the first bad line (naming it), when the iteration reaches it; a
                duplicate id (naming it and its two lines) when the iteration reaches the end.
        """
        return _read_items(self.path, bool(self.info.get(OUTSIDE_ROOT, False)))


def _read_items(manifest: Path, outside_root: bool = False) -> Iterator[Item]:
    """The manifest's items; paths resolved, and confined to its directory unless `outside_root`.

    Duplicate ids are found with little memory: a 64-bit hash per line (8 bytes an item, not a set
    of id strings), checked once the pass reaches the end of the file; equal hashes are re-checked
    exactly (`_check_unique`), so a duplicate is reported, naming the id and both lines, after the
    last line rather than at it (before anything is written: embedding validates in a first pass).
    """
    root = manifest.parent.resolve()
    hashes = array("q")  # hash of each line's id (Python's str hash: one pass runs in one process)
    with manifest.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{manifest}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{where}: not valid JSON ({exc.msg})") from None
            if not isinstance(rec, dict) or "id" not in rec:
                raise InputError(f"{where}: each line must be an object with an 'id' field")
            if isinstance(rec["id"], bool) or not isinstance(rec["id"], (str, int)) or rec["id"] == "":
                raise InputError(f"{where}: field 'id' is {rec['id']!r}; expected a non-empty string or an integer")
            item_id = str(rec["id"])
            hashes.append(hash(item_id))
            split = rec.get("split", "train")
            if split not in SPLITS:
                raise InputError(f"{where}: field 'split' is {split!r}; expected one of {', '.join(SPLITS)}")
            unknown = set(rec) - set(MODALITIES) - {"id", "split", "label", "attributes"}
            if unknown:
                raise InputError(
                    f"{where}: unknown field(s) {sorted(unknown)}; modality fields are {', '.join(MODALITIES)}"
                )
            attributes = rec.get("attributes")
            if attributes is not None and not isinstance(attributes, dict):
                raise InputError(f"{where}: field 'attributes' is {type(attributes).__name__}; expected an object")
            label = rec.get("label")
            if isinstance(label, (dict, list)):
                raise InputError(f"{where}: field 'label' is {type(label).__name__}; expected a string")
            fields = {m: _field(rec[m], m, where, root, outside_root) for m in MODALITIES if m in rec}
            yield Item(item_id, split, None if label is None else str(label), fields, dict(attributes or {}))
    _check_unique(manifest, hashes)


def _check_unique(manifest: Path, hashes: array) -> None:
    """Raise at the first line (in file order) whose id an earlier line has; `hashes` holds the id
    hash of every line with an item, in order. It is sorted in place (8 bytes an item in all); equal
    hashes, rare unless ids truly repeat, send a second read of the file to compare those ids."""
    if len(hashes) < 2:
        return
    h = np.frombuffer(hashes, dtype=np.int64)
    h.sort()
    suspects = set(h[1:][h[1:] == h[:-1]].tolist())
    del h
    if not suspects:
        return
    first: dict[str, int] = {}
    repeats: list[tuple[int, str, int]] = []  # (line, id, its first line)
    with manifest.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            item_id = str(json.loads(line)["id"])
            if hash(item_id) not in suspects:
                continue
            if item_id in first:
                repeats.append((lineno, item_id, first[item_id]))
            else:
                first[item_id] = lineno
    if repeats:  # otherwise only hashes collided
        lineno, item_id, earlier = repeats[0]
        more = f"; {len(repeats) - 1} more repeated line(s)" if len(repeats) > 1 else ""
        raise InputError(f"{manifest}:{lineno}: duplicate item id {item_id!r} (first on line {earlier}){more}")


def _field(value: Any, modality: str, where: str, root: Path, outside_root: bool) -> str:
    """A modality field's value: text as is (blank text is a bad item later, not a bad manifest), a path
    resolved against `root` and, unless `outside_root`, inside it."""
    if modality == "text":
        if not isinstance(value, str):
            raise InputError(f"{where}: field 'text' is {type(value).__name__}; expected a string")
        return value
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise InputError(f"{where}: field {modality!r} must be a file path")
    try:
        path = (root / value).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop, a name too long
        raise InputError(f"{where}: field {modality!r}: cannot resolve the path ({type(exc).__name__})") from None
    if not outside_root and not path.is_relative_to(root):
        raise InputError(f"{where}: field {modality!r} path {value!r} leaves the dataset directory {root}; "
                         f'set "{OUTSIDE_ROOT}": true in {CLASSES} to allow paths outside it')
    return str(path)


def read_info(path: Path) -> dict[str, Any]:
    """`classes.json` as an object ({} when absent)."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected an object {{'classes': [...], 'templates': [...]}}")
    if not isinstance(data.get(OUTSIDE_ROOT, False), bool):
        raise InputError(f"{path}: field {OUTSIDE_ROOT!r} is {data[OUTSIDE_ROOT]!r}; expected true or false")
    return data


def parse_classes(path: Path, data: dict[str, Any], labels: set[str]) -> tuple[list[ClassInfo], list[str]]:
    """Class names and templates from `classes.json` (`data`); without a class list, the items' labels."""
    try:
        if "classes" in data:
            classes = [ClassInfo(c["name"], tuple(c.get("synonyms", ()))) for c in data["classes"]]
        else:
            classes = [ClassInfo(n) for n in sorted(labels)]
        templates = list(data.get("templates") or ["{}"])
    except (KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{path}: expected {{'classes': [{{'name': ...}}], 'templates': [...]}} ({exc})") from None
    for t in templates:
        if not isinstance(t, str) or "{}" not in t:
            raise InputError(f"{path}: template {t!r} has no '{{}}' placeholder for the class name")
    return classes, templates
