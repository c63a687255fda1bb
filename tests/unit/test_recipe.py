"""Recipe validation: strict, every error at once, with field paths and suggestions."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from spacebind.errors import RecipeError
from spacebind.recipe import load_recipe, validate_recipe

ROOT = Path(__file__).resolve().parents[2]


def demo_raw() -> dict:
    return yaml.safe_load((ROOT / "recipes" / "demo.yaml").read_text())


def test_demo_recipe_validates() -> None:
    recipe, text = load_recipe(ROOT / "recipes" / "demo.yaml")
    assert recipe.name == "demo" and recipe.base == "unified"
    assert [b.type for b in recipe.bonds] == ["displacement", "combination"]
    assert recipe.bonds[0].experts == ["image_text"]  # `expert:` shorthand
    assert recipe.experts["audio_text"].source == "world_audio_text"  # string shorthand
    assert "name: demo" in text


def test_misspelled_key_is_named_with_its_path_and_a_suggestion() -> None:
    raw = demo_raw()
    raw["train"]["epochz"] = raw["train"].pop("epochs")
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw, "demo.yaml")
    assert "train.epochz: unknown field; did you mean 'epochs'?" in str(info.value)


def test_all_errors_reported_at_once() -> None:
    raw = demo_raw()
    raw["experts"]["audio_text"] = "world_audo_text"  # unknown registry name
    raw["bonds"][1]["type"] = "combinaton"  # unknown bond
    raw["bonds"][0]["lambdas"]["imgae"] = 0.3  # unknown modality
    raw["base"] = "unifed"  # unknown reference
    raw["evaluate"]["splitt"] = "test"  # unknown field
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw, "demo.yaml")
    msg = str(info.value)
    assert "5 error(s)" in msg
    assert "experts.audio_text.name: unknown expert 'world_audo_text'. Did you mean 'world_audio_text'" in msg
    assert "bonds.1.type: unknown bond 'combinaton'. Did you mean 'combination'?" in msg
    assert "bonds.0.lambdas: unknown modality 'imgae'" in msg
    assert "base: 'unifed' is not one of the recipe's experts" in msg and "Did you mean 'unified'?" in msg
    assert "evaluate.splitt: unknown field" in msg


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda r: r["data"].update(path="x"), "give exactly one of .path."),
        (lambda r: r["bonds"][0].update(experts=["audio_text"]), "give 'expert' or 'experts', not both"),
        (lambda r: r["bonds"][1].update(expert="image_text"), "already part of the space"),
        (lambda r: r["bonds"][0].update(lambdas={"text": 2}), "lambda for 'text' is 2"),
        (lambda r: r["experts"].update(mine={"import": "nocolon"}), "must look like 'package.module:attribute'"),
        (lambda r: r.update(bonds=[{"type": "displacement", "experts": ["image_text", "audio_text"]}]), "exactly one"),
    ],
)
def test_semantic_errors(change, expected: str) -> None:
    raw = demo_raw()
    change(raw)
    with pytest.raises(RecipeError, match=expected):
        validate_recipe(raw)


def test_bad_yaml_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nexperts: [unclosed\n")
    with pytest.raises(RecipeError, match=r"bad\.yaml:\d+:\d+: not valid YAML"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match="cannot read recipe"):
        load_recipe(tmp_path / "missing.yaml")
    with pytest.raises(RecipeError, match="must be a mapping"):
        validate_recipe(["a", "list"])


@pytest.mark.parametrize("name", ["freebind_imagebind_pp", "freebind_internvl_ib", "freebind_internvl_ib_pp"])
def test_published_freebind_recipes_validate_and_name_missing_checkpoints(name: str, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from spacebind.errors import CheckpointError
    from spacebind.fuse import fuse

    recipe, _ = load_recipe(ROOT / "recipes" / f"{name}.yaml")
    assert recipe.base == "imagebind" and recipe.experts["imagebind"].source == "imagebind_huge"
    assert all(len(bond.pseudo) == 7 for bond in recipe.bonds)  # FreeBind's seven projectors per expert
    monkeypatch.chdir(tmp_path)  # no checkpoints here
    with pytest.raises(CheckpointError) as info:
        fuse(recipe, work=tmp_path / "work", progress=False)
    message = str(info.value)
    assert "experts.imagebind.kwargs.checkpoint: no file or directory 'checkpoints/imagebind_huge.pth'" in message
    assert "imagebind_huge expects imagebind_huge.pth" in message
    assert not (tmp_path / "work" / "data").exists()  # refused before any work
    files = {e.kwargs.get("checkpoint") for e in recipe.experts.values()}
    assert all(f"'{f}'" in message for f in files)
