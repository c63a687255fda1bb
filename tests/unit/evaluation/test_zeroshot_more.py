"""Held-out-synonym prompts: each class's FIRST held-out synonym, and a class without one is an
error (not a prompt "a photo of a None")."""
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from spacebind.errors import InputError
from spacebind.evaluation.zeroshot import heldout_names


def _dataset(tmp_path: Path, classes: list[dict]) -> SimpleNamespace:
    (tmp_path / "classes.json").write_text(json.dumps({"templates": ["a {}"], "classes": classes}))
    return SimpleNamespace(root=tmp_path)


def test_first_heldout_synonym_per_class(tmp_path: Path) -> None:
    data = _dataset(tmp_path, [{"name": "dog", "heldout_synonyms": ["hound", "pooch"]},
                               {"name": "cat", "heldout_synonyms": ["kitty"]}])
    assert heldout_names(data) == ["hound", "kitty"]


@pytest.mark.parametrize("missing", [{"name": "cat"}, {"name": "cat", "heldout_synonyms": []}])
def test_a_class_without_heldout_synonym_is_an_error(tmp_path: Path, missing: dict) -> None:
    data = _dataset(tmp_path, [{"name": "dog", "heldout_synonyms": ["hound"]}, missing])
    with pytest.raises(InputError, match="heldout_synonyms"):
        heldout_names(data)
