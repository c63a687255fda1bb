"""Evaluate a space on a dataset split from its item embeddings: retrieval between every pair of
modalities (both directions) and zero-shot classification. Records follow CLIP_benchmark:
`{"model", "role", "dataset", "task", "modalities", "metrics"}`; metrics are fractions."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from spacebind.evaluation.metrics import class_embeddings, retrieval_recall, zeroshot_classification
from spacebind.io.datasets import Dataset, Item
from spacebind.io.files import write_json
from spacebind.modalities import modality_pairs

if TYPE_CHECKING:
    from spacebind.cache import CacheSet
    from spacebind.space import Space

ROLES = ("base", "expert", "fused")


def _record(model: str, role: str, dataset: str, task: str, modalities: list[str], metrics: dict[str, Any]) -> dict[str, Any]:
    return {"model": model, "role": role, "dataset": dataset, "task": task, "modalities": modalities, "metrics": metrics}


def evaluate(
    *,
    model: str,
    role: str,
    dataset: Dataset,
    split: str,
    modalities: Sequence[str],
    embed_items: Callable[[str, list[str]], torch.Tensor],
    encode_text: Callable[[list[str]], torch.Tensor] | None = None,
    ks: Sequence[int] = (1, 5, 10),
    blocks: Sequence[int] | None = None,
    usable: Callable[[str, list[str]], list[str]] | None = None,
) -> list[dict[str, Any]]:
    """Records for every modality pair and every zero-shot task the space and data allow.

    `embed_items(modality, ids)` gives the space's embeddings of dataset items (from caches);
    `usable(modality, ids)` keeps the ids that have them (items a cache recorded as bad drop out);
    `encode_text(prompts)` encodes class prompts live (`blocks`: the space's, for the class centres).
    The dataset field is `<name>-<split>`.
    For pair (a, b), `{b}_retrieval_recall@k` is a-queries retrieving b-entries, and the reverse,
    as CLIP_benchmark scores captioned media: a media file that several items share (five
    captions of one clip) is one query and one gallery entry, and every partner of its items is
    correct; texts stay one entry per item."""
    if role not in ROLES:
        raise ValueError(f"role {role!r}; expected one of {', '.join(ROLES)}")
    keep = usable or (lambda modality, ids: ids)
    name = f"{dataset.name}-{split}"
    records = []
    for a, b in modality_pairs(list(modalities)):
        items = [it for it in dataset.select(split) if a in it.fields and b in it.fields]
        kept = set(keep(a, [it.id for it in items])) & set(keep(b, [it.id for it in items]))
        items = [it for it in items if it.id in kept]
        if not items:
            continue
        (ids_a, of_a), (ids_b, of_b) = distinct_entries(items, a), distinct_entries(items, b)
        ea, eb = embed_items(a, ids_a), embed_items(b, ids_b)
        metrics: dict[str, Any] = {}
        for target, q, g, query_of, gallery_of in [(b, ea, eb, of_a, of_b), (a, eb, ea, of_b, of_a)]:
            positives: list[set[int]] = [set() for _ in range(len(q))]
            for qi, gi in zip(query_of, gallery_of):
                positives[qi].add(gi)
            for k, v in retrieval_recall(q, g, [sorted(p) for p in positives], ks).items():
                metrics[f"{target}_retrieval_recall@{k}"] = v
        metrics["n"] = len(items)
        records.append(_record(model, role, name, "retrieval", [a, b], metrics))
    if encode_text is None or "text" not in modalities or not dataset.classes:
        return records
    classes = class_centres(dataset, encode_text, blocks)
    for m in modalities:
        if m == "text":
            continue
        ids, labels = labelled_items(dataset, split, m, lambda found, m=m: keep(m, found))
        if not ids:
            continue
        metrics = {**zeroshot_classification(embed_items(m, ids), labels, classes), "n": len(ids)}
        records.append(_record(model, role, name, "zeroshot_classification", [m, "text"], metrics))
    return records


def distinct_entries(items: Sequence[Item], modality: str) -> tuple[list[str], list[int]]:
    """The retrieval entries of `modality` among `items`: one per distinct media file (one per item
    for text), as the id of its first item, and each item's entry index."""
    first: dict[str, int] = {}
    ids, entry_of = [], []
    for it in items:
        key = it.media_key(modality)
        if key not in first:
            first[key] = len(ids)
            ids.append(it.id)
        entry_of.append(first[key])
    return ids, entry_of


def class_centres(dataset: Dataset, encode_text: Callable[[list[str]], torch.Tensor],
                  blocks: Sequence[int] | None = None) -> torch.Tensor:
    """Zero-shot class embeddings [classes, dim]: every template × class prompt encoded, averaged
    per class (`class_embeddings`; `blocks`: the space's)."""
    prompts = [t.format(c) for c in dataset.class_names for t in dataset.templates]
    return class_embeddings(encode_text(prompts), len(dataset.class_names), blocks)


def labelled_items(dataset: Dataset, split: str, modality: str,
                   usable: Callable[[list[str]], list[str]] | None = None) -> tuple[list[str], torch.Tensor]:
    """The ids of the split's items of `modality` whose label is a class, and their class indices:
    one per distinct (media file, label) (its first item), as retrieval counts media, so a clip with
    five captions is classified once; a file stored once per label of a multi-label item counts
    once per label (one per item for text). `usable` keeps only the ids a cache could embed."""
    index = {c: i for i, c in enumerate(dataset.class_names)}
    first: dict[tuple[str, str], str] = {}  # (media key, label) → the first item's id
    for it in dataset.select(split, modality):
        if it.label in index:
            first.setdefault((it.media_key(modality), it.label), it.id)
    kept = set(usable(list(first.values()))) if usable is not None else None
    pairs = [(i, label) for (_, label), i in first.items() if kept is None or i in kept]
    return [i for i, _ in pairs], torch.tensor([index[label] for _, label in pairs], dtype=torch.long)


def evaluate_space(
    space: "Space", role: str, caches: "CacheSet", dataset: Dataset, split: str, ks: list[int], model: str | None = None
) -> list[dict[str, Any]]:
    """Evaluate a space on a dataset split from the leaf caches (class prompts encoded live)."""
    modalities = [m for m in space.modalities if m in dataset.modalities()]
    encode_text = (lambda prompts: space.encode("text", prompts)) if "text" in space.modalities else None
    return evaluate(
        model=model or space.name, role=role, dataset=dataset, split=split, modalities=modalities,
        embed_items=lambda m, ids: caches.embeddings(space, m, ids), encode_text=encode_text, ks=tuple(ks),
        blocks=space.blocks, usable=lambda m, ids: caches.usable_ids(space, m, ids),
    )


def evaluate_checkpoint(fused: str | Path, data: str | Path, split: str = "test", ks: Sequence[int] = (1, 5, 10),
                        cache_dir: str | Path | None = None, trust_remote_code: bool = False) -> list[dict[str, Any]]:
    """`spacebind eval`: evaluate a fused checkpoint on a dataset split (retrieval between every
    modality pair, zero-shot), plus zero-shot with UniBind's class centres when the export has them.
    `fused` is a directory or a hub id (`org/name[@revision]`, see `spacebind.interop.hub`);
    `trust_remote_code`: see `spacebind.checkpoint.load`."""
    from spacebind.cache import ensure_caches
    from spacebind.unibind.model import evaluate_unibind, load_export  # they build on these metrics

    space, unibind = load_export(fused, trust_remote_code)
    dataset = Dataset.load(data)
    dataset.check_split(split)
    caches = ensure_caches([space], dataset, cache_dir)
    records = evaluate_space(space, "fused", caches, dataset, split, list(ks))
    if unibind is not None:
        records += evaluate_unibind(unibind, caches, dataset, split)
    return records


def write_records(path: str | Path, records: list[dict[str, Any]]) -> None:
    write_json(path, records)


def read_records(path: str | Path) -> list[dict[str, Any]]:
    return json.loads(Path(path).read_text(encoding="utf-8"))
