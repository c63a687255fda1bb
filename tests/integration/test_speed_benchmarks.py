"""The speed benchmarks import, and their arithmetic holds (no timing is asserted)."""
from __future__ import annotations

import importlib

import pytest
import torch

from benchmarks.speed_report import target
from benchmarks.speed_train import plain_loop, step_flops
from spacebind.training.trainer import TrainConfig


@pytest.mark.parametrize("name", ["speed", "speed_train", "speed_embed", "speed_retrieval", "speed_encode", "mining",
                                  "router_memory"])
def test_benchmark_modules_import(name: str) -> None:
    assert callable(importlib.import_module(f"benchmarks.{name}").main)


def test_step_flops_by_hand() -> None:
    # batch 4, 3 → 5 → 2: 4·(4·3·5 + 6·5·2 + 4·4·2) = 4·(60 + 60 + 32)
    assert step_flops(4, 3, 5, 2) == 608


def test_targets_compare_in_their_direction() -> None:
    assert target("x", 1.04, 1.05, higher_is_better=False)["met"]
    assert not target("x", 2.9, 3.0, higher_is_better=True)["met"]


def test_plain_loop_trains() -> None:
    torch.manual_seed(0)
    src, tgt = torch.randn(64, 6), torch.nn.functional.normalize(torch.randn(64, 4), dim=-1)
    losses = plain_loop(src, tgt, TrainConfig(epochs=3, batch_size=16, hidden=8))
    assert len(losses) == 12 and all(torch.isfinite(torch.tensor(losses)))


def test_router_memory_member_maps_back_onto_the_target() -> None:
    """`benchmarks.router_memory`: the member's rows are the target's under an orthogonal map plus
    noise, and the routed space's fixed head maps them back."""
    from benchmarks.router_memory import _routed, _rows

    space = _routed(32)
    for modality in ("text", "audio"):
        target_rows, member_rows = (_rows(list(range(50)), 32, modality, member) for member in (False, True))
        with torch.no_grad():
            back = space.heads["E"](member_rows)
        assert float((back * target_rows).sum(dim=1).min()) > 0.95
    assert space.routes("audio") == ["T", "E"]
