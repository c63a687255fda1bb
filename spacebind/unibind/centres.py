"""UniBind's class centres: zero-shot with knowledge-base centres instead of "a photo of a {c}".

For a modality m and class k, with d_k,j the space's text embeddings of the class's descriptions,
μ_k the mean of the class's training items in m, and p_k its plain prompt embedding:

    centre_k = n(mix·p_k + (1 − mix)·n(mean of the `n` d_k,j nearest to μ_k))

Each modality is then aligned to its centres by a projector trained contrastively against all
centres (cross-entropy of `head(x)·Cᵀ / τ` with the item's class), and retrieval-augmented voting
adds, per class, the softmax weight of the class's descriptions among an item's k nearest.

The official code (QC-LY/UniBind) instead keeps each class's descriptions apart and scores a class
by its best one (`description_rows`, `top1_scores`), and aligns a modality by one linear layer
trained by InfoNCE of each item against its own description, temperature 1, AdamW lr 5e-4, weight
decay 0.01, batch 1024, 15 epochs, linear decay, gradients clipped to norm 1 (`train_linear_head`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from spacebind.bonds.projector import MLPProjector
from spacebind.errors import InputError
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
        top = nearest_descriptions(desc, mean, n)
        picked.append(part_mean(top, blocks) if parts else F.normalize(top.mean(dim=0), dim=-1))
    if parts:
        pairs = torch.stack([F.normalize(prompts, dim=-1), torch.stack(picked)], dim=1)  # [C, 2, d]
        return part_mean(pairs, blocks, torch.tensor([mix, 1.0 - mix]))
    return F.normalize(mix * F.normalize(prompts, dim=-1) + (1.0 - mix) * torch.stack(picked), dim=-1)


def nearest_descriptions(descriptions: torch.Tensor, class_mean: torch.Tensor, n: int) -> torch.Tensor:
    """A class's `n` descriptions nearest its class mean (unit rows, in their original order)."""
    desc = F.normalize(descriptions.float(), dim=-1)
    return desc[(desc @ F.normalize(class_mean.float(), dim=-1)).topk(min(n, len(desc))).indices.sort().values]


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
    feats = feats.float().cpu()  # a space on an accelerator embeds there; centres live on the CPU
    sums = torch.zeros(n_classes, feats.shape[1]).index_add_(0, labels.cpu(), feats)
    return sums / counts[:, None].cpu()


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


def description_rows(descriptions: Sequence[torch.Tensor], class_means: torch.Tensor,
                     n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each class's `n` descriptions nearest its class mean (the selection of `centres_from`), kept
    apart rather than averaged: unit rows [R, d] and the class of each row [R] (int64).

    Raises:
        InputError: n < 1, the sizes disagree, or a class has no description.
    """
    if n < 1:
        raise InputError(f"description rows: n is {n} (expected ≥ 1)")
    if len(descriptions) != len(class_means):
        raise InputError(f"description rows: {len(descriptions)} description sets and {len(class_means)} class "
                         "means; expected one of each per class")
    rows, owners = [], []
    for k, (desc, mean) in enumerate(zip(descriptions, class_means)):
        if len(desc) == 0:
            raise InputError(f"description rows: class {k} has no description")
        rows.append(nearest_descriptions(desc, mean, n))
        owners.append(torch.full((len(rows[-1]),), k, dtype=torch.long))
    return torch.cat(rows), torch.cat(owners)


def top1_scores(feats: torch.Tensor, rows: torch.Tensor, owners: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Class scores [N, C] as the official zero-shot: each class's score is the best cosine of an
    item with that class's description rows (`owners[r]` is row r's class); a class without a row
    scores −inf."""
    sims = F.normalize(feats.float(), dim=-1) @ rows.float().T  # [N, R]
    out = torch.full((len(feats), n_classes), float("-inf"), dtype=sims.dtype)
    return out.scatter_reduce(1, owners[None].expand(len(feats), -1), sims, reduce="amax", include_self=True)


def infonce_to_own(outputs: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """The official alignment loss: mean cross-entropy of row i of n(outputs)·n(targets)ᵀ / temperature
    against column i (each item's own description is its positive, the batch's others its
    negatives; one direction, item → text). The official code divides by nothing: temperature 1."""
    logits = F.normalize(outputs, dim=-1) @ F.normalize(targets, dim=-1).T / temperature
    return F.cross_entropy(logits, torch.arange(len(outputs), device=outputs.device))


def train_linear_head(feats: torch.Tensor, targets: torch.Tensor, *, epochs: int = 15, batch_size: int = 1024,
                      lr: float = 5e-4, weight_decay: float = 0.01, eps: float = 1e-8, max_grad_norm: float = 1.0,
                      temperature: float = 1.0, seed: int = 0, history: list[float] | None = None) -> nn.Linear:
    """The official alignment head: one `nn.Linear(dim, dim)` (PyTorch's default init, seeded) trained
    by `infonce_to_own` of each item (`feats` [N, d]) against its own description (`targets` [N, d']):
    AdamW (weight decay on every parameter), the learning rate decaying linearly to 0 with no warmup,
    gradients clipped to `max_grad_norm`, a seeded shuffle each epoch, the last partial batch kept.
    The defaults are the official fine-tune script's. The schedule counts the steps actually taken
    (the official one counts whole batches only and is 0 — no training — on fewer items than a batch).
    `history` gets each epoch's mean loss."""
    if len(feats) != len(targets) or len(feats) == 0:
        raise InputError(f"linear alignment head: {len(feats)} items and {len(targets)} descriptions; "
                         "expected one description per item and at least one item")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = nn.Linear(feats.shape[1], targets.shape[1])
    feats, targets = feats.float(), targets.float()
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay, eps=eps)
    total = epochs * -(-len(feats) // batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, (total - step) / total))
    head.train()
    with torch.enable_grad():  # also when called under no_grad
        for _ in range(epochs):
            order, losses = torch.randperm(len(feats), generator=generator), []
            for start in range(0, len(feats), batch_size):
                idx = order[start:start + batch_size]
                loss = infonce_to_own(head(feats[idx]), targets[idx], temperature)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(head.parameters(), max_grad_norm)
                optimizer.step()
                scheduler.step()
                losses.append(loss.item() * len(idx))
            if history is not None:
                history.append(sum(losses) / len(feats))
    return head.eval()


def as_linear_map(linear: nn.Linear) -> nn.Module:
    """A trained `nn.Linear` as spacebind's `linear` head type (`n(x W + b)`, W = weightᵀ), which a
    UniBind directory saves and loads; the same function up to the normalisation the scores apply anyway."""
    from spacebind.bonds.linear import LinearMap

    head = LinearMap(linear.in_features, linear.out_features, "linear")
    head.weight.data.copy_(linear.weight.detach().T)
    head.bias.data.copy_(linear.bias.detach())
    return head.eval()


def own_descriptions(space: "Space", caches: "CacheSet", dataset: "Dataset", descriptions: Sequence[torch.Tensor],
                     ids: Sequence[str], feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each item's own description [N, d] (the positive of the official loss), for items `ids` with
    embeddings `feats` [N, d] and class indices `labels`: its paired text (the same item's `text`
    field, the counterpart of the description the official code has an LLM write for each training
    item) when the caches hold its embedding; otherwise the description of its class
    (`descriptions`, per class in class order) nearest the item."""
    wanted = set(ids)
    texts = {it.id: it.fields.get("text") for it in dataset.iter_items() if it.id in wanted}
    candidates = [i for i in ids if isinstance(texts.get(i), str) and texts[i].strip()]
    paired = set(caches.usable_ids(space, "text", candidates)) if candidates and "text" in space.modalities else set()
    has_text = torch.tensor([i in paired for i in ids], dtype=torch.bool)
    targets = torch.zeros(len(ids), feats.shape[1] if len(ids) else 0)
    if paired:
        targets[has_text] = caches.embeddings(space, "text", [i for i in ids if i in paired]).float().cpu()
    for row in (~has_text).nonzero().flatten().tolist():
        desc = descriptions[int(labels[row])].float()
        nearest = (F.normalize(desc, dim=-1) @ F.normalize(feats[row], dim=-1)).argmax()
        targets[row] = desc[nearest]
    return targets
