"""history.py: `collect_histories` reads each member's state file where there
is one and leaves out members without one (a closed-form head, or a member directory left with no
state file yet), keyed `<key>/member<j>`, histories as stored."""
from __future__ import annotations

from pathlib import Path

from spacebind.training.history import collect_histories
from spacebind.training.state import STATE_FILE, save_state


def test_members_without_a_state_file_are_left_out_and_the_others_read_back(tmp_path: Path) -> None:
    rows = [{"epoch": 0, "loss": 2.0, "val_recall@1": 0.25}, {"epoch": 1, "loss": 1.5, "val_recall@1": 0.5}]
    (tmp_path / "bond0" / "e" / "member0").mkdir(parents=True)  # a directory, but no state file
    (tmp_path / "bond0" / "e" / "member1").mkdir(parents=True)
    save_state(tmp_path / "bond0" / "e" / "member1" / STATE_FILE, "run1", {"state": {"history": rows}})
    (tmp_path / "routed" / "x" / "member0").mkdir(parents=True)
    save_state(tmp_path / "routed" / "x" / "member0" / STATE_FILE, "run2", {"state": {"history": rows[:1]}})
    got = collect_histories(tmp_path, {"bond0/e": 2, "routed/x": 1, "bond1/none": 3})
    assert got == {"bond0/e/member1": rows, "routed/x/member0": rows[:1]}
