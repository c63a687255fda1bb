"""Datasets as a JSONL manifest of items, with optional class names for zero-shot use.

One line per item:
    {"id": "w0-000017", "split": "train", "label": "kettle",
     "image": "image/000017.png", "audio": "audio/000017.wav", "point": "point/000017.npy",
     "text": "a small red kettle", "attributes": {"size": 0.31}}
Modality fields hold a path relative to the manifest (or absolute), or the text itself.
An item may carry any subset of modalities: paired data has several, unimodal pools one.
A `classes.json` beside the manifest lists class names, synonyms and prompt templates:
    {"templates": ["a {}"], "classes": [{"name": "kettle", "synonyms": ["teapot"]}]}
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from spacebind.errors import InputError
from spacebind.modalities import MODALITIES

MANIFEST = "manifest.jsonl"
CLASSES = "classes.json"
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


@dataclass(frozen=True)
class ClassInfo:
    name: str
    synonyms: tuple[str, ...] = ()


@dataclass
class Dataset:
    """A loaded manifest. Paths in items are absolute."""

    root: Path
    items: list[Item]
    classes: list[ClassInfo]
    templates: list[str]

    @property
    def name(self) -> str:
        return self.root.name

    @classmethod
    def load(cls, path: str | Path) -> "Dataset":
        """Load a dataset from its directory or its manifest file."""
        path = Path(path)
        manifest = path / MANIFEST if path.is_dir() else path
        if not manifest.is_file():
            raise InputError(f"no dataset manifest at {manifest} (expected a {MANIFEST} file)")
        root = manifest.parent
        items = list(_read_items(manifest))
        classes, templates = _read_classes(root / CLASSES, items)
        return cls(root=root, items=items, classes=classes, templates=templates)

    def check_split(self, split: str) -> str:
        """`split` if some item is in it, else an InputError listing the dataset's splits."""
        known = sorted({it.split for it in self.items})
        if split not in known:
            raise InputError(f"{self.root}: no split {split!r}; the dataset has {', '.join(known) or 'no items'}")
        return split

    def select(self, split: str | None = None, modality: str | None = None) -> list[Item]:
        """Items of a split (all if None) that carry `modality` (any if None), in manifest order."""
        return [
            it for it in self.items
            if (split is None or it.split == split) and (modality is None or modality in it.fields)
        ]

    def modalities(self) -> tuple[str, ...]:
        present = {m for it in self.items for m in it.fields}
        return tuple(m for m in MODALITIES if m in present)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def by_id(self) -> dict[str, Item]:
        return {it.id: it for it in self.items}


def _read_items(manifest: Path) -> Iterable[Item]:
    seen: set[str] = set()
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
            item_id = str(rec["id"])
            if item_id in seen:
                raise InputError(f"{where}: duplicate item id {item_id!r}")
            seen.add(item_id)
            split = rec.get("split", "train")
            if split not in SPLITS:
                raise InputError(f"{where}: field 'split' is {split!r}; expected one of {', '.join(SPLITS)}")
            unknown = set(rec) - set(MODALITIES) - {"id", "split", "label", "attributes"}
            if unknown:
                raise InputError(
                    f"{where}: unknown field(s) {sorted(unknown)}; modality fields are {', '.join(MODALITIES)}"
                )
            fields = {}
            for m in MODALITIES:
                if m not in rec:
                    continue
                value = rec[m]
                if m == "text":
                    if not isinstance(value, str) or not value.strip():
                        raise InputError(f"{where}: field 'text' must be a non-empty string")
                    fields[m] = value
                else:
                    if not isinstance(value, str):
                        raise InputError(f"{where}: field {m!r} must be a file path")
                    fields[m] = str((manifest.parent / value).resolve())
            label = rec.get("label")
            yield Item(item_id, split, None if label is None else str(label), fields, dict(rec.get("attributes") or {}))


def _read_classes(path: Path, items: list[Item]) -> tuple[list[ClassInfo], list[str]]:
    if not path.is_file():
        names = sorted({it.label for it in items if it.label is not None})
        return [ClassInfo(n) for n in names], ["{}"]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        classes = [ClassInfo(c["name"], tuple(c.get("synonyms", ()))) for c in data["classes"]]
        templates = list(data.get("templates") or ["{}"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: expected {{'classes': [{{'name': ...}}], 'templates': [...]}} ({exc})") from None
    for t in templates:
        if "{}" not in t:
            raise InputError(f"{path}: template {t!r} has no '{{}}' placeholder for the class name")
    return classes, templates
