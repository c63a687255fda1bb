"""What `fuse` checks before its work and what its metrics hold (tiny world, toy experts)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tiny_datasets import TINY_RECIPE

from spacebind.errors import InputError
from spacebind.fuse import fuse
from spacebind.recipe import validate_recipe


def test_a_groups_attribute_no_val_item_has_is_an_error_naming_the_field(tmp_path: Path) -> None:
    raw = yaml.safe_load(TINY_RECIPE)
    raw["bonds"][0] |= {"tune": True, "groups": "speakr"}
    with pytest.raises(InputError, match=r"bonds\.0\.groups: 'speakr' is not an attribute of any val item") as err:
        fuse(validate_recipe(raw), work=tmp_path / "work", out=tmp_path / "out", progress=False)
    assert "their attributes: " in str(err.value) and "size_word" in str(err.value)
    assert not (tmp_path / "work" / "cache").exists()  # refused before any expert ran


def test_an_expert_both_bonded_and_routed_is_evaluated_once_and_the_base_as_base(tmp_path: Path) -> None:
    raw = yaml.safe_load(TINY_RECIPE)
    raw["routed"] = {"experts": ["e", "u"], "router": {"epochs": 1, "batch_size": 8}}  # OmniBind remaps the anchor too
    result = fuse(validate_recipe(raw), work=tmp_path / "work", out=tmp_path / "out", progress=False)
    keys = [json.dumps(r, sort_keys=True) for r in result.records]
    assert len(keys) == len(set(keys))
    experts = [r["model"] for r in result.records if r["role"] == "expert"]
    assert experts == ["e"] * len([r for r in result.records if r["role"] == "base"])  # once; the base not again
    assert len(json.loads((tmp_path / "out" / "metrics.json").read_text())) == len(keys)


def test_a_closed_form_rerun_in_a_used_work_directory_exports_no_old_history(tmp_path: Path) -> None:
    """An MLP run leaves training states under work/heads; a rerun with `projector: procrustes` trains
    none, and its export must not ship the old run's history as its own."""
    raw = yaml.safe_load(TINY_RECIPE)
    fuse(validate_recipe(raw), work=tmp_path / "work", out=tmp_path / "mlp", progress=False)
    assert (tmp_path / "mlp" / "history.json").is_file()
    raw["bonds"][0]["projector"] = "procrustes"
    fuse(validate_recipe(raw), work=tmp_path / "work", out=tmp_path / "reused", progress=False)
    fuse(validate_recipe(raw), work=tmp_path / "fresh", out=tmp_path / "fresh_out", progress=False)
    assert not (tmp_path / "reused" / "history.json").exists()
    for name in ("README.md", "config.json", "model.safetensors"):
        assert (tmp_path / "reused" / name).read_bytes() == (tmp_path / "fresh_out" / name).read_bytes(), name
