"""Space similarity on a probe set of paired items ("From Unimodal to Multimodal"): how alike two
encoders' geometries are, to choose which unimodal encoders to bind.

- mutual k-NN alignment: for each probe item, the overlap of its k nearest neighbours (cosine,
  itself excluded) in the two spaces, |N_A(i) ∩ N_B(i)| / k, averaged over items;
- linear CKA: ‖Aᵀ B‖²_F / (‖Aᵀ A‖_F ‖Bᵀ B‖_F) on column-centred embeddings.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from spacebind.errors import InputError
from spacebind.io.datasets import Dataset
from spacebind.space import Expert


def _neighbours(x: torch.Tensor, k: int) -> torch.Tensor:
    x = F.normalize(x.double(), dim=-1)
    sims = x @ x.T
    sims.fill_diagonal_(-float("inf"))
    return sims.topk(k, dim=1).indices


def mutual_knn(a: torch.Tensor, b: torch.Tensor, k: int = 10) -> float:
    """Mean fraction of shared k nearest neighbours of paired rows of `a` [N, da] and `b` [N, db].

    Raises:
        InputError: unpaired inputs, or k not in 1..N-1.
    """
    _check(a, b)
    if not 1 <= k < len(a):
        raise InputError(f"mutual k-NN: k is {k}; expected 1..{len(a) - 1} for {len(a)} probe items")
    na, nb = _neighbours(a, k), _neighbours(b, k)
    shared = (na[:, :, None] == nb[:, None, :]).any(dim=2).sum(dim=1)
    return float(shared.double().mean() / k)


def linear_cka(a: torch.Tensor, b: torch.Tensor) -> float:
    """Linear centred kernel alignment of paired rows (1 for spaces equal up to rotation and scale).

    Raises:
        InputError: unpaired inputs.
    """
    _check(a, b)
    a, b = a.double() - a.double().mean(dim=0), b.double() - b.double().mean(dim=0)
    cross = (a.T @ b).norm() ** 2
    return float(cross / ((a.T @ a).norm() * (b.T @ b).norm()))


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.ndim != 2 or b.ndim != 2 or len(a) != len(b) or len(a) < 2:
        raise InputError(f"space similarity needs paired [N, d] embeddings with N ≥ 2; got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")


@dataclass(frozen=True)
class ProbeEncoder:
    """One side of a candidate pair: an expert and the modality it encodes (`EXPERT:MODALITY`)."""

    expert: Expert
    modality: str

    @property
    def label(self) -> str:
        return f"{self.expert.name}:{self.modality}"


def cross_modal_pairs(encoders: Sequence[ProbeEncoder]) -> list[tuple[int, int]]:
    """Every pair (i < j) of encoders of different modalities: the candidates for binding."""
    return [(i, j) for i, j in itertools.combinations(range(len(encoders)), 2)
            if encoders[i].modality != encoders[j].modality]


def parse_encoders(specs: Sequence[str], build: Callable[[str], Expert]) -> list[ProbeEncoder]:
    """`EXPERT:MODALITY` specs (EXPERT a registered name or module:attribute) → encoders; each
    expert is built once with `build`.

    Raises:
        InputError: a spec without a modality, or a modality the expert does not cover.
    """
    built: dict[str, Expert] = {}
    out = []
    for spec in specs:
        source, sep, modality = spec.rpartition(":")
        if not sep or not source:
            raise InputError(f"encoder {spec!r}: expected EXPERT:MODALITY, e.g. world_image_text:image")
        expert = built.setdefault(source, build(source))
        if modality not in expert.modalities:
            raise InputError(f"encoder {spec!r}: expert {source!r} covers {', '.join(expert.modalities)}, not {modality!r}")
        out.append(ProbeEncoder(expert, modality))
    return out


def rank_pairs(encoders: Sequence[ProbeEncoder], dataset: Dataset, split: str, cache_root: Path, k: int = 10,
               pairs: Sequence[tuple[int, int]] | None = None, progress: bool = True) -> list[dict[str, object]]:
    """Score candidate encoder pairs (default: `cross_modal_pairs`) on the split's items that
    have both modalities, one per media file (`probe_ids`); rows sorted by mutual k-NN, best first, with linear CKA beside it.

    Raises:
        InputError: a pair has no probe items with both modalities.
    """
    from spacebind.cache import ensure_caches

    caches = ensure_caches([e.expert for e in encoders], dataset, cache_root, progress=progress)
    if pairs is None:
        pairs = cross_modal_pairs(encoders)
    rows = []
    for i, j in pairs:
        a, b = encoders[i], encoders[j]
        ids = probe_ids(dataset, split, a.modality, b.modality)
        ids = caches.usable_ids(b.expert, b.modality, caches.usable_ids(a.expert, a.modality, ids))
        if len(ids) < 2:
            raise InputError(f"no probe items in the {split} split of {dataset.root} have both {a.label} and {b.label}")
        ea = caches.embeddings(a.expert, a.modality, ids)
        eb = caches.embeddings(b.expert, b.modality, ids)
        rows.append({"a": a.label, "b": b.label, "mutual_knn": mutual_knn(ea, eb, min(k, len(ids) - 1)),
                     "cka": linear_cka(ea, eb), "n": len(ids)})
    return sorted(rows, key=lambda r: (-r["mutual_knn"], -r["cka"]))


def probe_ids(dataset: Dataset, split: str, a: str, b: str) -> list[str]:
    """The split's items with modalities `a` and `b`, none sharing a media file with an earlier one
    on either side: a clip held by five captioned items is one probe (its copies would fill each
    other's k nearest neighbours in the clip's space, whatever the other space does)."""
    seen: tuple[set[str], set[str]] = (set(), set())
    ids = []
    for it in dataset.select(split):
        if a not in it.fields or b not in it.fields:
            continue
        keys = it.media_key(a), it.media_key(b)
        if keys[0] in seen[0] or keys[1] in seen[1]:
            continue
        seen[0].add(keys[0])
        seen[1].add(keys[1])
        ids.append(it.id)
    return ids


def rank_similarity(encoders: Sequence[str], data: str | Path, split: str = "val", k: int = 10,
                    cache_dir: str | Path | None = None) -> list[dict[str, object]]:
    """`spacebind similarity`: rank every cross-modal pair of `EXPERT:MODALITY` encoders by mutual
    k-NN and linear CKA on a probe dataset's split (see `rank_pairs`; val by default: choosing the
    encoders to bind is a choice, so test stays for the numbers reported after it)."""
    from spacebind.cache import default_cache_root
    from spacebind.experts import build_expert

    dataset = Dataset.load(data)
    dataset.check_split(split)
    probes = parse_encoders(list(encoders), build_expert)
    root = Path(cache_dir) if cache_dir is not None else default_cache_root(dataset)
    return rank_pairs(probes, dataset, split, root, k=k)


def heatmap(rows: Sequence[dict[str, object]], path: Path, metric: str = "mutual_knn") -> Path:
    """Draw the pair scores of `metric` as a matrix (left encoders × right encoders) to `path`."""
    from spacebind.evaluation.report import pyplot, save_figure

    plt = pyplot()
    left = list(dict.fromkeys(str(r["a"]) for r in rows))
    right = list(dict.fromkeys(str(r["b"]) for r in rows))
    grid = torch.full((len(left), len(right)), float("nan"))
    for r in rows:
        grid[left.index(str(r["a"])), right.index(str(r["b"]))] = float(r[metric])  # type: ignore[arg-type]
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(right), 1.2 + 0.6 * len(left)))
    image = ax.imshow(grid.numpy(), cmap="viridis")
    ax.set_xticks(range(len(right)), right, rotation=30, ha="right")
    ax.set_yticks(range(len(left)), left)
    for (y, x), v in zip(itertools.product(range(len(left)), range(len(right))), grid.flatten().tolist()):
        if v == v:
            ax.text(x, y, f"{v:.2f}", ha="center", va="center", color="white")
    fig.colorbar(image, ax=ax, label=metric)
    return save_figure(fig, path)
