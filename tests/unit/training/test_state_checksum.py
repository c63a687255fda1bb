"""Training state carries a checksum: a flipped bit is a named error, never a silently changed run."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from spacebind.errors import CheckpointError
from spacebind.training.state import STATE_FILE, load_state, save_state


def state() -> dict:
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 8)
    opt = torch.optim.Adam(head.parameters())
    head(torch.randn(4, 16)).sum().backward()
    opt.step()
    return {"model": head.state_dict(), "optimizer": opt.state_dict(), "state": {"epoch": 3, "history": [{"loss": 0.5}]}}


def test_a_flipped_bit_in_the_state_file_is_a_named_error(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE
    saved = state()
    save_state(path, "run", saved)
    loaded = load_state(path, "run")
    assert loaded is not None and torch.equal(loaded["model"]["weight"], saved["model"]["weight"])
    raw = bytearray(path.read_bytes())
    weight = saved["model"]["weight"].numpy().tobytes()
    at = bytes(raw).index(weight) + 37  # inside the stored weight tensor: the file stays readable
    raw[at] ^= 0x04
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=f"{STATE_FILE}: training state does not match its checksum .*delete it"):
        load_state(path, "run")


def test_an_edited_value_is_refused_and_a_state_without_checksum_is_not_used(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE
    save_state(path, "run", state())
    edited = torch.load(path, weights_only=True)
    edited["state"]["epoch"] = 4
    torch.save(edited, path)
    with pytest.raises(CheckpointError, match="does not match its checksum"):
        load_state(path, "run")
    del edited["checksum"]  # as an older spacebind wrote it: unverifiable, so training starts over
    torch.save(edited, path)
    with pytest.warns(UserWarning, match="without a checksum"):
        assert load_state(path, "run") is None


def test_histories_for_the_export_are_read_through_the_checksum(tmp_path: Path) -> None:
    """`collect_histories` reads any run's state (no fingerprint to match) but never an edited one."""
    from spacebind.training.history import collect_histories

    path = tmp_path / "bond0" / "audio_text" / "member0" / STATE_FILE
    save_state(path, "whichever run", state())
    assert collect_histories(tmp_path, {"bond0/audio_text": 2}) == {"bond0/audio_text/member0": [{"loss": 0.5}]}
    edited = torch.load(path, weights_only=True)
    edited["state"]["history"][0]["loss"] = 0.25
    torch.save(edited, path)
    with pytest.raises(CheckpointError, match="member0.*does not match its checksum"):
        collect_histories(tmp_path, {"bond0/audio_text": 1})
