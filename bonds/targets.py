"""Which of the target space's modalities a projector learns from (a bond's `pairing`).

A projector src → tgt learns from pairs (src_a(item), tgt_b(item')) whose target side is one of
tgt's modalities b. `same` keeps b = a (FreeBind), `cross` keeps b ≠ a, `all` keeps every b.
`auto` (the default) keeps the modalities the target space embeds reliably: b's reliability is
the target space's own zero-shot acc1 of b's items against the class prompts on the val split
(when the dataset has classes and the target covers text), else its mean R@1 between b and its
other modalities on paired val items; b is kept when its reliability is at least
`RELIABLE_SHARE` of the best one. A weak modality of the target (the base's audio in
`U + c(audio-text expert)`) would otherwise anchor the expert's strong embedding on a poor one.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch

from spacebind.errors import InputError
from spacebind.evaluation.evaluate import class_centres, labelled_items
from spacebind.evaluation.metrics import retrieval_recall
from spacebind.io.datasets import Dataset
from spacebind.space import Space

if TYPE_CHECKING:
    from spacebind.cache import CacheSet

PAIRINGS: tuple[str, ...] = ("auto", "same", "cross", "all")
RELIABLE_SHARE = 0.5


@dataclass
class Targets:
    """The target modalities kept for a projector, and the reliabilities that chose them (auto)."""

    pairing: str
    kept: list[str]
    reliability: dict[str, float]
    measure: str  # "zero-shot acc1", "R@1" or "" (not measured)

    def admits(self, source: str, target: str) -> bool:
        """Whether a pair (source modality → target modality) trains the projector."""
        if self.pairing == "same":
            return source == target
        if self.pairing == "cross":
            return source != target
        return target in self.kept

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def choose_targets(pairing: str, tgt: Space, caches: "CacheSet", dataset: Dataset, split: str = "val") -> Targets:
    """The target modalities a projector into `tgt` learns from (see the module docstring)."""
    if pairing not in PAIRINGS:
        raise InputError(f"unknown pairing {pairing!r}; expected one of {', '.join(PAIRINGS)}")
    everything = list(tgt.modalities)
    if pairing != "auto":
        return Targets(pairing, everything, {}, "")
    reliability, measure = _zero_shot(tgt, caches, dataset, split), "zero-shot acc1"
    if len(reliability) < 2:
        reliability, measure = _paired_recall(tgt, caches, dataset, split), "R@1"
    if len(reliability) < 2 or max(reliability.values()) <= 0:
        return Targets(pairing, everything, reliability, measure)
    best = max(reliability.values())
    kept = [m for m in everything if m not in reliability or reliability[m] >= RELIABLE_SHARE * best]
    return Targets(pairing, kept, {m: round(v, 4) for m, v in reliability.items()}, measure)


def _zero_shot(tgt: Space, caches: "CacheSet", dataset: Dataset, split: str) -> dict[str, float]:
    """Per modality of `tgt`, its zero-shot acc1 on the labelled items of the split."""
    if "text" not in tgt.modalities or not dataset.classes:
        return {}
    classes = class_centres(dataset, lambda prompts: tgt.encode("text", prompts), tgt.blocks)
    out = {}
    for m in tgt.modalities:
        labelled, classes_of = labelled_items(dataset, split, m)
        label = dict(zip(labelled, classes_of.tolist()))
        ids = caches.usable_ids(tgt, m, labelled)
        if ids:
            labels = torch.tensor([label[i] for i in ids])
            out[m] = float(((caches.embeddings(tgt, m, ids) @ classes.T).argmax(dim=1) == labels).float().mean())
    return out


def _paired_recall(tgt: Space, caches: "CacheSet", dataset: Dataset, split: str) -> dict[str, float]:
    """Per modality of `tgt`, its mean R@1 (both directions) against its other modalities on paired items."""
    scores: dict[str, list[float]] = {}
    items = dataset.select(split)
    for a in tgt.modalities:
        for b in tgt.modalities:
            if a >= b:
                continue
            ids = [it.id for it in items if a in it.fields and b in it.fields]
            ids = caches.usable_ids(tgt, b, caches.usable_ids(tgt, a, ids))
            if len(ids) < 2:
                continue
            ea, eb = caches.embeddings(tgt, a, ids), caches.embeddings(tgt, b, ids)
            diagonal = list(range(len(ids)))
            r = (retrieval_recall(ea, eb, diagonal, (1,))[1] + retrieval_recall(eb, ea, diagonal, (1,))[1]) / 2
            scores.setdefault(a, []).append(r)
            scores.setdefault(b, []).append(r)
    return {m: sum(v) / len(v) for m, v in scores.items()}
