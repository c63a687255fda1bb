"""Concept-balanced pair curation ("From Unimodal to Multimodal"): from a larger pool of paired
items, each concept retrieves the `per_concept` items whose text is nearest to the concept's
prompt embedding, so the curated pair set covers concepts evenly whatever the pool's skew."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from spacebind.errors import InputError
from spacebind.evaluation.evaluate import class_centres
from spacebind.retrieval.topk import topk_indices

if TYPE_CHECKING:
    from spacebind.cache import CacheSet
    from spacebind.io.datasets import Dataset
    from spacebind.space import Space


def balanced_rows(texts: torch.Tensor, concepts: torch.Tensor, per_concept: int) -> torch.Tensor:
    """Sorted distinct row indices of `texts` [N, d]: the top `per_concept` rows for each concept
    row of `concepts` [C, d] by inner product (a row several concepts pick counts once).

    Raises:
        InputError: per_concept < 1.
    """
    if per_concept < 1:
        raise InputError(f"curation: per_concept is {per_concept}; expected ≥ 1")
    if len(texts) == 0 or len(concepts) == 0:
        return torch.empty(0, dtype=torch.long)
    return topk_indices(concepts, texts, per_concept).flatten().unique()


def curate_ids(space: "Space", caches: "CacheSet", dataset: "Dataset", split: str, per_concept: int,
               modality: str = "text") -> list[str]:
    """The ids of the split's items that concept-balanced retrieval picks, in `space`'s `modality` (its text
    side), with each class's prompts (the dataset's templates, averaged) as the concept queries.

    Raises:
        InputError: the dataset has no classes or the space has no `modality`.
    """
    if not dataset.classes:
        raise InputError(f"curation needs class names; {dataset.root} has no classes.json")
    if modality not in space.modalities:
        raise InputError(f"curation retrieves by {modality}; space {space.name!r} covers {list(space.modalities)}")
    concepts = class_centres(dataset, lambda prompts: space.encode(modality, prompts), space.blocks)
    ids = caches.usable_ids(space, modality, [it.id for it in dataset.iter_items(split, modality)])
    rows = balanced_rows(caches.embeddings(space, modality, ids), concepts, per_concept)
    return [ids[r] for r in rows.tolist()]

