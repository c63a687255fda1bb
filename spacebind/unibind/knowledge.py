"""UniBind's knowledge base: text descriptions per class.

From a user file (JSON `{class: [description, …]}`, or JSONL lines `{"class": c, "description": d}`
/ `{"class": c, "descriptions": […]}`), from a local text-generation model (transformers, local
files only, never downloaded), or, for the procedural world, generated from the concepts'
attributes — the world's stand-in for an LLM describing a class.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from spacebind.errors import InputError

KnowledgeBase = dict[str, list[str]]
"""Class name → its descriptions."""


def load_knowledge(path: str | Path) -> KnowledgeBase:
    """Read a knowledge base file (.json or .jsonl), keeping description order, dropping repeats.

    Raises:
        InputError: unreadable file, bad JSON (with the line), or a malformed entry.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"knowledge base {path}: no such file")
    text = path.read_text(encoding="utf-8")
    kb: KnowledgeBase = {}
    if path.suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{n}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("class"), str):
                raise InputError(f"{path}:{n}: expected an object with a 'class' string")
            descs = row.get("descriptions", [row.get("description")])
            _add(kb, row["class"], descs, f"{path}:{n}")
        return _checked(kb, path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: not JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected an object mapping each class to a list of descriptions")
    for name, descs in data.items():
        _add(kb, name, descs, f"{path}: class {name!r}")
    return _checked(kb, path)


def _add(kb: KnowledgeBase, name: str, descs: object, where: str) -> None:
    if not isinstance(descs, list) or not all(isinstance(d, str) and d.strip() for d in descs):
        raise InputError(f"{where}: descriptions must be a list of non-empty strings; got {descs!r}")
    bucket = kb.setdefault(name, [])
    bucket.extend(d for d in descs if d not in bucket)


def _checked(kb: KnowledgeBase, path: Path) -> KnowledgeBase:
    if not kb:
        raise InputError(f"knowledge base {path}: no classes")
    return kb


def require_classes(kb: KnowledgeBase, names: Sequence[str], source: str = "knowledge base") -> None:
    """Raise InputError naming every class of `names` the knowledge base has no description for."""
    missing = [n for n in names if not kb.get(n)]
    if missing:
        raise InputError(f"{source} has no descriptions for class(es) {missing}")


def world_knowledge(concepts_seed: int = 0, num_concepts: int = 24) -> KnowledgeBase:
    """Descriptions of the world's concepts from their attributes (the stand-in for an LLM):
    names and training synonyms in caption-like phrases, and the look, sound and shape."""
    from spacebind.world.concepts import INTENSITY_WORDS, SIZE_WORDS, make_concepts

    kb: KnowledgeBase = {}
    for c in make_concepts(concepts_seed, num_concepts):
        descs = [f"a {name}" for name in c.caption_names]
        descs += [f"a {size} {name}" for size in SIZE_WORDS for name in c.caption_names]
        descs += [f"a {word} {name}" for word in INTENSITY_WORDS for name in c.caption_names]
        descs += [
            f"a {c.name} looks like a {c.colour} {c.shape}",
            f"a {c.name} sounds like a {c.timbre} tone with a {c.rhythm} rhythm at {c.pitch:.0f} Hz",
            f"a 3d model of a {c.name} is a {c.primitive} with {c.deformation} deformation",
        ]
        kb[c.name] = descs
    return kb


def generate_knowledge(model_path: str | Path, names: Sequence[str], per_class: int = 8,
                       max_new_tokens: int = 40, seed: int = 0) -> KnowledgeBase:
    """Ask a local transformers text-generation model (a directory; never downloaded) to
    describe each class `per_class` times.

    Raises:
        InputError: `model_path` is not a local directory.
    """
    path = Path(model_path)
    if not path.is_dir():
        raise InputError(f"text-generation model {path}: no such local directory (models are never downloaded)")
    import torch
    from transformers import pipeline

    torch.manual_seed(seed)
    generate = pipeline("text-generation", model=str(path), model_kwargs={"local_files_only": True})
    kb: KnowledgeBase = {}
    for name in names:
        prompt = f"Describe what a {name} looks, sounds and feels like in one sentence:"
        outs = generate(prompt, num_return_sequences=per_class, do_sample=True, max_new_tokens=max_new_tokens,
                        return_full_text=False)
        kb[name] = [o["generated_text"].strip().split("\n")[0] or f"a {name}" for o in outs]
    return kb
