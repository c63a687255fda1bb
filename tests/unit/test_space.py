"""Spaces from user encoders, `Space.bind` from Python, and dataset manifests."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from toy_experts import text_expert

from spacebind import Dataset, ExpertError, InputError, Space
from spacebind.training.trainer import TrainConfig

FAST = TrainConfig(epochs=3, hidden=64, batch_size=128)


def test_user_encoders_are_checked() -> None:
    nan = Space.from_encoders("nan", {"text": lambda xs: torch.full((len(xs), 4), float("nan"))}, dim=4)
    with pytest.raises(InputError, match=r"NaN/inf embeddings for text inputs at positions \[0, 1\]"):
        nan.encode("text", ["a", "b"])
    wrong = Space.from_encoders("wrong", {"text": lambda xs: torch.zeros(len(xs), 3)}, dim=4)
    with pytest.raises(ExpertError, match=r"returned shape \(1, 3\), expected \(1, 4\)"):  # a bug, not a bad input
        wrong.encode("text", ["a"])
    with pytest.raises(InputError, match="unknown modality 'smell'"):
        Space.from_encoders("x", {"smell": lambda xs: xs}, dim=4)
    with pytest.raises(InputError, match=r"text\[1\]: empty text"):
        text_expert().encode("text", ["fine", " "])
    module = torch.nn.Linear(3, 4)
    points = Space.from_encoders("pts", {"point": lambda xs: module(torch.stack([torch.from_numpy(x).mean(0) for x in xs]))}, dim=4)
    out = points.encode("point", [torch.rand(10, 3).numpy(), torch.rand(7, 3).numpy()])
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2))


def _manifest(tmp_path: Path, lines: list[object]) -> Path:
    path = tmp_path / "manifest.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


@pytest.mark.parametrize("line, message", [
    ("{not json", r"manifest.jsonl:1: not valid JSON"),
    ({"text": "x"}, "must be an object with an 'id' field"),
    ({"id": "a", "split": "dev"}, "field 'split' is 'dev'"),
    ({"id": "a", "imgae": "x.png"}, r"unknown field\(s\) \['imgae'\]"),
    ({"id": "a", "image": 3}, "field 'image' must be a file path"),
])
def test_manifest_errors_name_the_line_and_field(tmp_path: Path, line: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        Dataset.load(_manifest(tmp_path, [line]))


def test_manifest_paths_and_classes(tmp_path: Path) -> None:
    _manifest(tmp_path, [{"id": "a", "image": "img/a.png", "label": "cat"}, {"id": "b", "text": "hi", "label": "dog", "split": "test"}])
    data = Dataset.load(tmp_path)
    assert data.select(modality="image")[0].fields["image"] == str((tmp_path / "img/a.png").resolve())
    assert data.class_names == ["cat", "dog"] and data.templates == ["{}"]
    (tmp_path / "classes.json").write_text(json.dumps({"templates": ["no placeholder"], "classes": [{"name": "cat"}]}))
    with pytest.raises(InputError, match="has no '{}' placeholder"):
        Dataset.load(tmp_path)
    with pytest.raises(InputError, match="no dataset manifest"):
        Dataset.load(tmp_path / "nowhere")
    _manifest(tmp_path, [{"id": "a"}, {"id": "a"}])
    with pytest.raises(InputError, match="duplicate item id 'a'"):
        Dataset.load(tmp_path / "manifest.jsonl")
