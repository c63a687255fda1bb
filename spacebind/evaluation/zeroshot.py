"""Zero-shot classification of a split's items against given class embeddings (prompts with any
class names, or UniBind class centres), from cached item embeddings."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Sequence

import torch

from spacebind.errors import InputError
from spacebind.evaluation.evaluate import labelled_items
from spacebind.evaluation.metrics import class_embeddings, zeroshot_classification
from spacebind.io.datasets import Dataset

if TYPE_CHECKING:
    from spacebind.cache import CacheSet
    from spacebind.space import Space


def heldout_names(dataset: Dataset) -> list[str]:
    """Per class, its first held-out synonym (a word no world expert saw), from classes.json.

    Raises:
        InputError: classes.json lists no held-out synonym for some class.
    """
    path = dataset.root / "classes.json"
    classes = json.loads(path.read_text(encoding="utf-8")).get("classes", []) if path.is_file() else []
    names = [(c.get("heldout_synonyms") or [None])[0] for c in classes]
    if not names or None in names:
        raise InputError(f"{path}: every class needs a 'heldout_synonyms' entry for held-out-synonym prompts")
    return names


def prompt_classes(space: "Space", names: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """Class embeddings [C, dim]: each name in every template, encoded as text and averaged."""
    prompts = [t.format(n) for n in names for t in templates]
    return class_embeddings(space.encode("text", prompts), len(names), space.blocks)


def split_features(space: "Space", caches: "CacheSet", dataset: Dataset, split: str,
                   modality: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The split's labelled items of `modality` in `space` (one per media file, `labelled_items`),
    those the caches could embed, and their class indices."""
    ids, labels = labelled_items(dataset, split, modality, lambda found: caches.usable_ids(space, modality, found))
    return caches.embeddings(space, modality, ids), labels


def zeroshot_with(space: "Space", caches: "CacheSet", dataset: Dataset, split: str, modality: str,
                  classes: torch.Tensor) -> dict[str, float]:
    """acc1, acc5, mean per-class recall of the split's `modality` items against `classes` [C, dim]."""
    feats, labels = split_features(space, caches, dataset, split, modality)
    if len(labels) == 0:
        raise InputError(f"no labelled {modality} items in the {split} split of {dataset.root}")
    return {**zeroshot_classification(feats, labels, classes), "n": len(labels)}
