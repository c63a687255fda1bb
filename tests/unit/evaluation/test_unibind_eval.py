"""UniBind's centre zero-shot reads labels by class name: a dataset may list its classes in
another order than the export, or only some of them; a class without a centre is an error."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from memory_cache import MemoryCache

from spacebind import Space
from spacebind.cache import CacheSet
from spacebind.errors import InputError
from spacebind.io.datasets import ClassInfo, Dataset, Item
from spacebind.unibind.model import UniBind, evaluate_unibind

NAMES = ["ant", "bee", "cat"]


def unibind_and_caches() -> tuple[UniBind, CacheSet]:
    space = Space.from_encoders("S", {"image": lambda xs: torch.zeros(len(xs), 3), "text": lambda xs: torch.zeros(len(xs), 3)},
                                dim=3)
    images = {f"i{k}": torch.eye(3)[k % 3] for k in range(6)}  # item k shows class NAMES[k % 3]
    model = UniBind(space, list(NAMES), {"image": torch.eye(3)}, torch.empty(0, 3), torch.empty(0, dtype=torch.long))
    return model, CacheSet({"S": MemoryCache({"image": images})})


def dataset(classes: list[str], labels: list[str]) -> Dataset:
    items = [Item(f"i{k}", "test", label, {"image": f"i{k}.png"}) for k, label in enumerate(labels)]
    return Dataset.of_items(Path("d"), items, [ClassInfo(c) for c in classes])


@pytest.mark.parametrize("classes", [NAMES, NAMES[::-1], ["cat", "ant", "bee", "dog"]])
def test_centre_zero_shot_does_not_depend_on_the_datasets_class_order(classes: list[str]) -> None:
    model, caches = unibind_and_caches()
    (record,) = evaluate_unibind(model, caches, dataset(classes, [NAMES[k % 3] for k in range(6)]), "test")
    assert record["metrics"]["acc1"] == 1.0 and record["metrics"]["n"] == 6


def test_a_class_without_a_centre_is_named() -> None:
    model, caches = unibind_and_caches()
    data = dataset([*NAMES, "dog"], ["ant", "bee", "cat", "dog", "ant", "bee"])
    with pytest.raises(InputError, match=r"class\(es\) \['dog'\] have no UniBind centre; its classes: ant, bee, cat"):
        evaluate_unibind(model, caches, data, "test")


@pytest.mark.parametrize("edit, message", [
    (lambda meta: "{\"format\": ", r"unibind.json: not valid JSON"),
    (lambda meta: {k: v for k, v in meta.items() if k != "heads"}, r"unibind.json: field heads: field required"),
    (lambda meta: {**meta, "vote_weight": None}, r"unibind.json: field vote_weight: input should be a valid number"),
    (lambda meta: {**meta, "names": meta["names"][:-1]},
     r"unibind.safetensors: image centres of shape \(3, 3\); expected \(2, 3\)"),
])
def test_a_damaged_unibind_is_refused_naming_the_file_and_field(tmp_path: Path, edit, message: str) -> None:
    import json

    from spacebind.errors import CheckpointError

    model, _ = unibind_and_caches()
    model.save(tmp_path)
    meta = edit(json.loads((tmp_path / "unibind.json").read_text()))
    (tmp_path / "unibind.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    with pytest.raises(CheckpointError, match=message):
        UniBind.load(tmp_path, model.space)
