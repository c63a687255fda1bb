"""Evaluate a space on a dataset split from its item embeddings: retrieval between every pair of
modalities (both directions) and zero-shot classification. Records follow CLIP_benchmark:
`{"model", "role", "dataset", "task", "modalities", "metrics"}`; metrics are fractions."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from spacebind.data import Dataset
from spacebind.fileio import write_json
from spacebind.metrics import class_embeddings, retrieval_recall, zeroshot_classification
from spacebind.modalities import modality_pairs

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
) -> list[dict[str, Any]]:
    """Records for every modality pair and every zero-shot task the space and data allow.

    `embed_items(modality, ids)` gives the space's embeddings of dataset items (from caches);
    `encode_text(prompts)` encodes class prompts live. The dataset field is `<name>-<split>`.
    For pair (a, b), `{b}_retrieval_recall@k` is a-queries retrieving b-items, and the reverse."""
    if role not in ROLES:
        raise ValueError(f"role {role!r}; expected one of {', '.join(ROLES)}")
    name = f"{dataset.name}-{split}"
    records = []
    for a, b in modality_pairs(list(modalities)):
        items = [it for it in dataset.select(split) if a in it.fields and b in it.fields]
        if not items:
            continue
        ids = [it.id for it in items]
        ea, eb = embed_items(a, ids), embed_items(b, ids)
        diagonal = list(range(len(ids)))
        metrics: dict[str, Any] = {}
        for target, q, g in [(b, ea, eb), (a, eb, ea)]:
            for k, v in retrieval_recall(q, g, diagonal, ks).items():
                metrics[f"{target}_retrieval_recall@{k}"] = v
        metrics["n"] = len(ids)
        records.append(_record(model, role, name, "retrieval", [a, b], metrics))
    if encode_text is None or "text" not in modalities or not dataset.classes:
        return records
    names = dataset.class_names
    prompts = [t.format(c) for c in names for t in dataset.templates]
    classes = class_embeddings(encode_text(prompts), len(names))
    index = {c: i for i, c in enumerate(names)}
    for m in modalities:
        if m == "text":
            continue
        items = [it for it in dataset.select(split, m) if it.label in index]
        if not items:
            continue
        feats = embed_items(m, [it.id for it in items])
        labels = torch.tensor([index[it.label] for it in items])
        metrics = {**zeroshot_classification(feats, labels, classes), "n": len(items)}
        records.append(_record(model, role, name, "zeroshot_classification", [m, "text"], metrics))
    return records


def write_records(path: str | Path, records: list[dict[str, Any]]) -> None:
    write_json(path, records)


def read_records(path: str | Path) -> list[dict[str, Any]]:
    return json.loads(Path(path).read_text(encoding="utf-8"))
