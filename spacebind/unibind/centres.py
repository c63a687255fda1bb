"""UniBind's class centres: zero-shot with knowledge-base centres instead of "a photo of a {c}".

For a modality m and class k, with d_k,j the space's text embeddings of the class's descriptions,
μ_k the mean of the class's training items in m, and p_k its plain prompt embedding:

    centre_k = n(mix·p_k + (1 − mix)·n(mean of the `n` d_k,j nearest to μ_k))

Each modality is then aligned to its centres by a projector trained contrastively against all
centres (cross-entropy of `head(x)·Cᵀ / τ` with the item's class), and retrieval-augmented voting
adds, per class, the softmax weight of the class's descriptions among an item's k nearest.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F

from spacebind.bonds.projector import MLPProjector
from spacebind.errors import InputError
from spacebind.evaluation.metrics import on_support
from spacebind.retrieval.mining import part_mean
from spacebind.unibind.knowledge import KnowledgeBase, require_classes

if TYPE_CHECKING:
    from spacebind.cache import CacheSet
    from spacebind.io.datasets import Dataset
    from spacebind.space import Space


def centres_from(prompts: torch.Tensor, descriptions: Sequence[torch.Tensor], class_means: torch.Tensor,
                 n: int, mix: float, blocks: Sequence[int] | None = None) -> torch.Tensor:
    """Centres [C, d] from prompt embeddings [C, d], each class's description embeddings [n_k, d]
    and the class means of item embeddings [C, d] (the formula in the module docstring); with a
    space's `blocks` (a bond's channel), the means are taken part by part (`part_mean`).

    Raises:
        InputError: n < 1, mix outside [0, 1], or the sizes disagree.
    """
    if n < 1 or not 0.0 <= mix <= 1.0:
        raise InputError(f"class centres: n is {n} (expected ≥ 1) and mix {mix} (expected in [0, 1])")
    if not len(prompts) == len(descriptions) == len(class_means):
        raise InputError(f"class centres: {len(prompts)} prompts, {len(descriptions)} description sets and "
                         f"{len(class_means)} class means; expected one of each per class")
    parts = blocks is not None and len(blocks) > 1
    picked = []
    for desc, mean in zip(descriptions, class_means):
        desc = F.normalize(desc, dim=-1)
        top = (desc @ F.normalize(mean, dim=-1)).topk(min(n, len(desc))).indices
        picked.append(part_mean(desc[top], blocks) if parts else F.normalize(desc[top].mean(dim=0), dim=-1))
    if parts:
        pairs = torch.stack([F.normalize(prompts, dim=-1), torch.stack(picked)], dim=1)  # [C, 2, d]
        return part_mean(pairs, blocks, torch.tensor([mix, 1.0 - mix]))
    return F.normalize(mix * F.normalize(prompts, dim=-1) + (1.0 - mix) * torch.stack(picked), dim=-1)


def knowledge_embeddings(space: "Space", kb: KnowledgeBase, names: Sequence[str]) -> list[torch.Tensor]:
    """Each class's descriptions encoded as text in `space`, in class order."""
    require_classes(kb, names)
    return [space.encode("text", kb[name]).float().cpu() for name in names]  # UniBind works in float32


def class_means(feats: torch.Tensor, labels: torch.Tensor, n_classes: int, names: Sequence[str] | None = None,
                where: str = "") -> torch.Tensor:
    """Mean item embedding per class [C, d] (`names`, `where`: for the error).

    Raises:
        InputError: a class has no item, naming it (and `where` the items were looked for).
    """
    counts = torch.bincount(labels, minlength=n_classes)
    if (counts == 0).any():
        empty = (counts == 0).nonzero().flatten().tolist()
        which = [names[i] for i in empty] if names is not None else empty
        raise InputError(f"class centres need items of every class; none{' ' + where if where else ''} for "
                         f"class(es) {which[:10]}{' …' if len(which) > 10 else ''}")
    sums = torch.zeros(n_classes, feats.shape[1]).index_add_(0, labels, feats.float())
    return sums / counts[:, None]


def build_centres(space: "Space", caches: "CacheSet", dataset: "Dataset", kb: KnowledgeBase, modality: str,
                  prompts: torch.Tensor, n: int = 8, mix: float = 0.5, split: str = "train") -> torch.Tensor:
    """Centres of the dataset's classes for `modality` items of `space`, from `split`'s items."""
    from spacebind.evaluation.zeroshot import split_features

    names = dataset.class_names
    feats, labels = split_features(space, caches, dataset, split, modality)
    means = class_means(feats, labels, len(names), names, f"among the {modality} items of the {split} split of {dataset.root}")
    centres = centres_from(prompts, knowledge_embeddings(space, kb, names), means, n, mix, space.blocks)
    return on_support(centres, space.support(modality))  # an aligned head learns targets where m lives


def align_to_centres(feats: torch.Tensor, labels: torch.Tensor, centres: torch.Tensor, *, epochs: int = 20,
                     batch_size: int = 256, lr: float = 1e-3, temperature: float = 0.05, hidden: int = 512,
                     seed: int = 0) -> MLPProjector:
    """A projector (dim → dim) trained so head(x) is nearest its class centre: cross-entropy of
    head(x)·centresᵀ / temperature against the label, AdamW, seeded batch order and init."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = MLPProjector(feats.shape[1], centres.shape[1], hidden)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    head.train()
    for _ in range(epochs):
        order = torch.randperm(len(feats), generator=generator)
        for start in range(0, len(feats) - 1, batch_size):
            idx = order[start:start + batch_size]
            if len(idx) < 2:
                continue
            loss = F.cross_entropy(head(feats[idx].float()) @ centres.T / temperature, labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return head.eval()


def knowledge_votes(feats: torch.Tensor, descriptions: torch.Tensor, owners: torch.Tensor, n_classes: int,
                    k: int = 10, temperature: float = 0.05) -> torch.Tensor:
    """Retrieval-augmented votes [N, C]: each item's k nearest descriptions, weighted by the
    softmax of their similarities / temperature, summed per owning class (rows sum to 1)."""
    sims = F.normalize(feats, dim=-1) @ F.normalize(descriptions, dim=-1).T
    top = sims.topk(min(k, len(descriptions)), dim=1)
    weights = (top.values / temperature).softmax(dim=1)
    return torch.zeros(len(feats), n_classes).scatter_add_(1, owners[top.indices], weights)


def predict(feats: torch.Tensor, centres: torch.Tensor, votes: torch.Tensor | None = None,
            vote_weight: float = 0.5) -> torch.Tensor:
    """Class scores [N, C]: cosine to the centres, plus `vote_weight` × the knowledge votes."""
    scores = F.normalize(feats, dim=-1) @ centres.T
    return scores if votes is None else scores + vote_weight * votes
