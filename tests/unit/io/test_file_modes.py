"""Files spacebind writes get mode 0o666 & ~umask, like any file made with open(), not mkstemp's 0600."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterator

import pytest
import torch
from toy_experts import multi_expert

from spacebind.bonds.bind import BoundSpace
from spacebind.bonds.projector import MLPProjector
from spacebind.io.files import save_tensors, save_torch, write_json, write_text


@pytest.fixture(params=[(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)], ids=["022", "077", "002"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    mask, expected = request.param
    old = os.umask(mask)
    try:
        yield expected
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_writers_honour_the_umask(tmp_path: Path, umask: int) -> None:
    save_tensors(tmp_path / "t.safetensors", {"x": torch.zeros(3)})
    write_json(tmp_path / "a.json", {"a": 1})
    write_text(tmp_path / "a.txt", "hello")
    save_torch(tmp_path / "state.pt", {"step": 1})
    for name in ["t.safetensors", "a.json", "a.txt", "state.pt"]:
        assert mode(tmp_path / name) == umask, name
    # overwriting keeps the rule (the temporary file is renamed over the old one)
    save_tensors(tmp_path / "t.safetensors", {"x": torch.ones(3)})
    assert mode(tmp_path / "t.safetensors") == umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.txt", "state.pt", "t.safetensors"]


def test_fused_checkpoint_files_honour_the_umask(tmp_path: Path, umask: int) -> None:
    u = multi_expert("U", 8, ("text", "image"), 0)
    e = multi_expert("E", 6, ("text",), 1)
    space = BoundSpace(u, [e], "combination", {"E": MLPProjector(6, 8, hidden=16).eval()}, lambdas={"text": 0.3})
    out = space.save(tmp_path / "ckpt", recipe_text="name: toy\n", metrics=[])
    files = sorted(out.iterdir())
    assert [p.name for p in files] == ["README.md", "config.json", "metrics.json", "model.safetensors", "recipe.yaml"]
    for path in files:
        assert mode(path) == umask, path.name
