"""Edges of `spacebind.bonds.targets` (a bond's `pairing: auto`): the reliability measures
and the rule that keeps a target modality.

- a modality whose reliability is exactly half the best is kept ("at least"), below half dropped.
- a target modality with no measured reliability (no val items) is kept, not dropped.
- zero-shot evidence for fewer than two modalities falls back to paired R@1.
- paired R@1 is the mean of both directions, and is over pairs of *different* modalities (a modality against itself is R@1 = 1)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from memory_cache import MemoryCache

from spacebind import Dataset, Space
from spacebind.bonds.targets import _paired_recall, choose_targets
from spacebind.cache import CacheSet
from spacebind.evaluation.metrics import retrieval_recall
from spacebind.io.datasets import ClassInfo, Item

DIM = 12
CLASSES = [f"c{k}" for k in range(4)]


def unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)


def target(modalities: tuple[str, ...], centres: torch.Tensor) -> Space:
    prompts = {c: centres[k] for k, c in enumerate(CLASSES)}
    enc = {m: (lambda xs: torch.stack([prompts[x] for x in xs])) if m == "text" else (lambda xs: torch.zeros(len(xs), DIM))
           for m in modalities}
    return Space.from_encoders("T", enc, dim=DIM)


@pytest.mark.parametrize("right, kept", [(8, ["text", "audio"]), (6, ["text"])])
def test_a_modality_is_kept_from_half_the_best_reliability(right: int, kept: list[str]) -> None:
    """text zero-shot acc1 = 1.0; audio = 8/16 (exactly RELIABLE_SHARE = half the best: kept) or
    6/16 (below half: dropped)."""
    centres = torch.eye(DIM)[:4]
    items, table = [], {"text": {}, "audio": {}}
    for i in range(16):
        k, item = i % 4, f"v{i}"
        items.append(Item(item, "val", CLASSES[k], {"text": f"t {item}", "audio": f"/a/{item}.wav"}, {}))
        table["text"][item] = centres[k]
        table["audio"][item] = centres[k] if i < right else centres[(k + 1) % 4]  # half right, half wrong
    data = Dataset.of_items(Path("."), items, [ClassInfo(c) for c in CLASSES])
    t = target(("text", "audio"), centres)
    got = choose_targets("auto", t, CacheSet({"T": MemoryCache(table)}), data)
    assert got.measure == "zero-shot acc1"
    assert got.reliability == {"text": 1.0, "audio": right / 16}
    assert got.kept == kept


def test_a_target_modality_without_val_items_is_kept() -> None:
    """image has no val items (no reliability measured): it stays; audio (noise) goes."""
    g = torch.Generator().manual_seed(0)
    centres = unit(torch.randn(4, DIM, generator=g))
    items, table = [], {"text": {}, "audio": {}}
    for i in range(24):
        k, item = i % 4, f"v{i}"
        items.append(Item(item, "val", CLASSES[k], {"text": f"t {item}", "audio": f"/a/{item}.wav"}, {}))
        table["text"][item] = unit(centres[k] + 0.1 * torch.randn(DIM, generator=g))
        table["audio"][item] = unit(torch.randn(DIM, generator=g))
    # one train image so the target's image modality exists in the data but not on val
    items.append(Item("tr0", "train", CLASSES[0], {"image": "/i/tr0.png"}, {}))
    data = Dataset.of_items(Path("."), items, [ClassInfo(c) for c in CLASSES])
    t = target(("text", "audio", "image"), centres)
    got = choose_targets("auto", t, CacheSet({"T": MemoryCache(table)}), data)
    assert set(got.reliability) == {"text", "audio"}
    assert got.reliability["text"] == 1.0 and got.reliability["audio"] < 0.5
    assert got.kept == ["text", "image"]


def paired_world():
    """Unlabelled val items with text and audio (so no zero-shot for audio), plus labelled text-only
    items (zero-shot measures text alone). Target audio is its text plus strong noise, so R@1 is
    mid-range and differs between the two directions."""
    g = torch.Generator().manual_seed(1)
    centres = unit(torch.randn(4, DIM, generator=g))
    items, table = [], {"text": {}, "audio": {}}
    for i in range(20):
        item = f"p{i}"
        items.append(Item(item, "val", None, {"text": f"t {item}", "audio": f"/a/{item}.wav"}, {}))
        table["text"][item] = unit(torch.randn(DIM, generator=g))
        table["audio"][item] = unit(table["text"][item] + 1.2 * unit(torch.randn(DIM, generator=g)))
    for i in range(8):
        item = f"l{i}"
        items.append(Item(item, "val", CLASSES[i % 4], {"text": f"t {item}"}, {}))
        table["text"][item] = centres[i % 4]
    data = Dataset.of_items(Path("."), items, [ClassInfo(c) for c in CLASSES])
    return target(("text", "audio"), centres), CacheSet({"T": MemoryCache(table)}), data, table


def test_zero_shot_for_a_single_modality_falls_back_to_paired_recall() -> None:
    t, caches, data, table = paired_world()
    got = choose_targets("auto", t, caches, data)
    assert got.measure == "R@1" and set(got.reliability) == {"text", "audio"}


def test_paired_recall_is_the_mean_of_both_directions_between_different_modalities() -> None:
    t, caches, data, table = paired_world()
    ids = [f"p{i}" for i in range(20)]
    ea = torch.stack([table["audio"][i] for i in ids])
    et = torch.stack([table["text"][i] for i in ids])
    diag = list(range(len(ids)))
    a2t, t2a = retrieval_recall(ea, et, diag, (1,))[1], retrieval_recall(et, ea, diag, (1,))[1]
    assert a2t != t2a and max(a2t, t2a) < 0.9  # the directions differ; far from a modality against itself (1.0)
    want = (a2t + t2a) / 2
    got = _paired_recall(t, caches, data, "val")
    assert set(got) == {"text", "audio"}
    assert abs(got["text"] - want) < 1e-6 and abs(got["audio"] - want) < 1e-6
