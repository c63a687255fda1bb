"""CPU projector training pins its intra-op threads: the caller's thread count does not change the weights."""
from __future__ import annotations

import pytest
import torch

from spacebind.errors import InputError
from spacebind.training.threads import train_threads
from spacebind.training.trainer import TrainConfig, train_projector


def _weights(threads: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    src = torch.randn(512, 64, generator=g)
    tgt = torch.nn.functional.normalize(torch.randn(512, 48, generator=g), dim=1)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        head = train_projector(src, tgt, config=TrainConfig(epochs=2, batch_size=128, hidden=256), progress=False).head
        assert torch.get_num_threads() == threads  # restored
    finally:
        torch.set_num_threads(before)
    return head.state_dict()


def test_weights_are_byte_identical_under_one_and_two_threads() -> None:
    one, two = _weights(1), _weights(2)
    assert one.keys() == two.keys()
    for key in one:
        assert torch.equal(one[key], two[key]), key


def test_train_threads_knob(monkeypatch) -> None:
    monkeypatch.delenv("SPACEBIND_TRAIN_THREADS", raising=False)
    assert train_threads() == 2
    monkeypatch.setenv("SPACEBIND_TRAIN_THREADS", "3")
    assert train_threads() == 3
    monkeypatch.setenv("SPACEBIND_TRAIN_THREADS", "0")
    with pytest.raises(InputError, match="SPACEBIND_TRAIN_THREADS is '0'"):
        train_threads()
