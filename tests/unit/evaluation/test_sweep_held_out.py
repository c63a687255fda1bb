"""Held-out scoring reports the current λ as "now" and the best as "best". A stub bond whose text
embeddings are right only at λ = 0.5 (half right at λ = 1, all wrong at λ = 0, the current one)."""
from pathlib import Path

import pytest
import torch

from spacebind.evaluation.sweep import score_held_out, sweep
from spacebind.io.datasets import Dataset, Item


class StubBond:
    name, modalities, blocks = "stub", ("text", "image"), (4,)

    def __init__(self, lam: float = 0.0) -> None:
        self.lam = lam

    def tunable_modalities(self):
        return ["text"]

    def settings(self):
        return ["text"]

    def setting_keys(self, m):  # the parameters m's embedding depends on (newer sweep's noise guard reads it)
        return [m, "channel:" + m]

    def setting_value(self, m):
        return self.lam

    def with_lambdas(self, point):
        return StubBond(point["text"])


class StubCaches:
    def usable_ids(self, space, m, ids):
        return list(ids)

    def embeddings(self, space, m, ids):
        rows = [int(i[1]) for i in ids]
        if m == "image" or space.lam == 0.5:
            return torch.eye(4)[rows]
        perm = [1, 0, 2, 3] if space.lam == 1.0 else [1, 2, 3, 0]  # λ = 1: half right; λ = 0: all wrong
        return torch.eye(4)[[perm[r] for r in rows]]


def _data() -> Dataset:
    items = [Item(f"i{k}", s, None, {"image": f"img{k}", "text": f"t{k}"}) for k in range(4) for s in ("val",)]
    items += [Item(f"j{k}", "test", None, {"image": f"img{k}", "text": f"u{k}"}) for k in range(4)]
    return Dataset.of_items(Path("tiny"), items, [])


def test_held_out_reports_now_and_best_in_their_places() -> None:
    from spacebind.evaluation.sweep import SweepResult

    task = "text→image R@1"
    result = SweepResult(["text"], [0.0, 0.5, 1.0], [{"text": 0.0}, {"text": 0.5}, {"text": 1.0}],
                         {task: [0.0, 1.0, 0.5]}, {task: 0.0}, {task: {"text": 0.5}}, split="val",
                         current={"text": 0.0})
    score_held_out(StubBond(0.0), result, StubCaches(), _data(), "test")
    assert result.held_out[task] == {"now": 0.0, "best": 1.0} and result.held_out_split == "test"


def test_a_split_without_items_is_refused() -> None:
    from spacebind.errors import InputError

    with pytest.raises(InputError, match="no 'train' items to sweep on"):
        sweep(StubBond(0.0), StubCaches(), _data(), split="train", grid=[0.0, 1.0], progress=False)
