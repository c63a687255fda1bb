"""UniBind.load is strict: a tensor the model does not use, or a description owned by a class
index outside [0, classes), is refused with a CheckpointError naming the file (not accepted, or
failing later inside the knowledge votes)."""
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from spacebind import Space
from spacebind.errors import CheckpointError
from spacebind.unibind.model import UniBind


def _saved(tmp_path: Path) -> UniBind:
    space = Space.from_encoders("S", {"image": lambda xs: torch.zeros(len(xs), 3),
                                      "text": lambda xs: torch.zeros(len(xs), 3)}, dim=3)
    model = UniBind(space, ["ant", "bee", "cat"], {"image": torch.eye(3)}, torch.eye(3), torch.tensor([0, 1, 2]),
                    vote_weight=0.5, k=2)
    model.save(tmp_path)
    return model


def _edit(tmp_path: Path, change) -> None:
    tensors = load_file(str(tmp_path / "unibind.safetensors"))
    change(tensors)
    save_file(tensors, str(tmp_path / "unibind.safetensors"))


def test_round_trip_then_an_unexpected_tensor_is_refused(tmp_path: Path) -> None:
    model = _saved(tmp_path)
    back = UniBind.load(tmp_path, model.space)
    assert torch.equal(back.centres["image"], model.centres["image"]) and back.vote_weight == 0.5 and back.k == 2
    _edit(tmp_path, lambda t: t.update({"centres.audio": torch.eye(3)}))
    with pytest.raises(CheckpointError, match=r"unexpected \['centres.audio'\]"):
        UniBind.load(tmp_path, model.space)


def test_owners_beyond_the_classes_are_refused(tmp_path: Path) -> None:
    model = _saved(tmp_path)
    _edit(tmp_path, lambda t: t.update({"owners": torch.tensor([0, 1, 3])}))
    with pytest.raises(CheckpointError, match=r"owners must be class indices in \[0, 3\)"):
        UniBind.load(tmp_path, model.space)


def test_k_zero_in_unibind_json_is_refused(tmp_path: Path) -> None:
    import json

    model = _saved(tmp_path)
    meta = json.loads((tmp_path / "unibind.json").read_text())
    (tmp_path / "unibind.json").write_text(json.dumps({**meta, "k": 0}))
    with pytest.raises(CheckpointError, match="unibind.json: field k"):
        UniBind.load(tmp_path, model.space)


def test_owners_that_are_not_int64_are_refused(tmp_path: Path) -> None:
    model = _saved(tmp_path)
    _edit(tmp_path, lambda t: t.update({"owners": t["owners"].to(torch.int32)}))
    with pytest.raises(CheckpointError, match="expected .* int64"):
        UniBind.load(tmp_path, model.space)
