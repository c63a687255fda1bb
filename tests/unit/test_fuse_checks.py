"""What `fuse` checks before its work and what its metrics hold (tiny world, toy experts)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tiny_datasets import TINY_RECIPE

from spacebind.errors import InputError, RecipeError
from spacebind.fuse import fuse, missing_files, plan_fuse
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
    # the routers' epochs are exported beside the projectors' and summarised on the card
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    router = result.space.choices["router"]
    assert len(history["routed/router"]) == len(router["history"]) == 1 and "loss" in history["routed/router"][0]
    assert "routers (text, image): trained 1 epoch(s), kept epoch 1" in (tmp_path / "out" / "README.md").read_text()


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


POOLS = Path(__file__).resolve().parents[2] / "recipes" / "omnibind_world_pools.yaml"


def test_the_plan_counts_the_projectors_each_routed_member_trains_and_lists_fitted_heads(tmp_path: Path) -> None:
    """Each routed member trains on the pseudo datasets whose seed it covers (`member_pseudo`): the
    audio-text and point-text experts two each, not the four the stage lists."""
    raw = yaml.safe_load(POOLS.read_text())
    plan = plan_fuse(validate_recipe(raw), out=tmp_path / "out", work=tmp_path / "work")
    assert plan.train == ["bond0/unified: 4 projector(s)", "routed/audio_text: 2 projector(s)",
                          "routed/point_text: 2 projector(s)", "routed/unified: 4 projector(s)"]
    raw["bonds"][0] = {"type": "combination", "expert": "unified", "projector": "procrustes"}
    plan = plan_fuse(validate_recipe(raw), out=tmp_path / "out", work=tmp_path / "work")
    assert "bond0/unified: procrustes (fitted in closed form)" in plan.train


def test_an_import_recipe_plans_and_its_missing_sources_are_named(tmp_path: Path) -> None:
    raw = yaml.safe_load(POOLS.read_text())
    raw["data"] = {"import": [{"format": "csv", "source": "clotho/captions.csv", "media_root": "clotho/audio",
                               "split_ratio": [0.8, 0.1, 0.1]}]}
    recipe = validate_recipe(raw)
    assert missing_files(recipe, tmp_path) == [
        "data.import.0.source: no file or directory 'clotho/captions.csv'",
        "data.import.0.media_root: no file or directory 'clotho/audio'"]
    (tmp_path / "clotho" / "audio").mkdir(parents=True)
    (tmp_path / "clotho" / "captions.csv").write_text("path,caption\n")
    plan = plan_fuse(recipe, base_dir=tmp_path, out=tmp_path / "out", work=tmp_path / "work")
    assert plan.data == f"imported into the work directory from csv {tmp_path / 'clotho' / 'captions.csv'}"


@pytest.mark.parametrize(("change", "message"), [
    ({"projector": "linear"}, "pseudo datasets train one MLP projector each; projector 'linear' is fitted"),
    ({"curate": 10}, "curate balances the paired train items; with 'pseudo'"),
])
def test_pseudo_datasets_with_a_fitted_projector_or_curation_are_refused(change: dict, message: str) -> None:
    raw = yaml.safe_load(POOLS.read_text())
    raw["bonds"][0] |= change
    with pytest.raises(RecipeError, match=message):
        validate_recipe(raw)


def test_every_error_of_an_import_entry_and_router_miners_are_reported_at_once() -> None:
    raw = yaml.safe_load(POOLS.read_text())
    raw["data"] = {"import": {"format": "csv", "source": "a.csv", "path_colum": "f", "split_ratio": [0.8, 0.3, 0.1],
                              "modality": "audoi"}}
    raw["routed"]["router"]["miners"] = {"audio-text": "audio_txt", "audoi-text": "unified"}
    with pytest.raises(RecipeError) as caught:
        validate_recipe(raw)
    message = str(caught.value)
    for part in ("does not take path_colum", "split ratio", "unknown modality 'audoi'. Did you mean 'audio'?",
                 "routed.router.miners.audio-text", "audio_txt", "miners: key 'audoi-text' is not a pair of two modalities"):
        assert part in message, (part, message)


def test_a_bond_kind_without_train_is_refused_by_the_recipe_not_after_embedding(monkeypatch: pytest.MonkeyPatch) -> None:
    from spacebind.bonds import BONDS
    from spacebind.bonds.node import BondNode, register_bond

    monkeypatch.setattr(BONDS, "_entries", dict(BONDS._entries))  # the kind lives for this test only

    @register_bond("mean", section="bonds")
    class Untrainable(BondNode):  # a formula, no `train`
        kind = "mean"

    raw = yaml.safe_load(POOLS.read_text())
    raw["bonds"][0] = {"type": "mean", "expert": "unified"}
    with pytest.raises(RecipeError, match="bond kind 'mean' defines no `train`, so a recipe cannot build it"):
        validate_recipe(raw)
    with pytest.raises(InputError, match="its class Untrainable defines no `train` classmethod"):
        Untrainable.train(None, [], "mean", None, None)

    @register_bond("static", section="bonds")
    class StaticTrain(BondNode):  # a `train` that is a staticmethod still counts
        kind = "static"

        @staticmethod
        def train(*args, **kwargs):  # noqa: ANN002, ANN003, ANN205
            raise AssertionError("not called by validation")

    raw["bonds"][0] = {"type": "static", "expert": "unified"}
    assert validate_recipe(raw).bonds[0].type == "static"


def test_a_lambda_of_a_modality_the_bond_does_not_mix_is_refused_before_anything_is_embedded(tmp_path: Path) -> None:
    raw = yaml.safe_load(TINY_RECIPE)
    raw["experts"]["e"]["kwargs"]["modalities"] = ["text", "audio"]
    raw["bonds"][0]["lambdas"] = {"text": 0.5, "audio": 0.5}  # the base has no audio: audio is not mixed
    with pytest.raises(InputError, match=r"bonds\.0\.lambdas: λ for audio, which the bond does not mix; it mixes text"):
        fuse(validate_recipe(raw), work=tmp_path / "work", out=tmp_path / "out", progress=False)
    assert not (tmp_path / "work" / "cache").exists()


def test_an_auto_projector_that_kept_procrustes_exports_no_history_of_its_discarded_mlps(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`projector: auto` trains MLP candidates beside Procrustes; when the bond keeps Procrustes,
    the export has no trained projector, so no history.json / history.png and no card section."""
    import dataclasses
    import importlib

    bind = importlib.import_module("spacebind.bonds.bind")  # the module (the package exports a function `bind`)
    real = bind.choose_lambdas
    # on 8 val items neither candidate wins for sure; the val split's verdict is not under test here
    monkeypatch.setattr(bind, "choose_lambdas",
                        lambda *a, **k: dataclasses.replace(real(*a, **k), projector="procrustes"))
    raw = yaml.safe_load(TINY_RECIPE)
    raw["bonds"][0] |= {"projector": "auto", "tune": True}
    fuse(validate_recipe(raw), work=tmp_path / "work", out=tmp_path / "out", progress=False)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["space"]["choices"]["projector"]["chosen"] == "procrustes"
    assert (tmp_path / "work" / "heads" / "bond0" / "e" / "member0").is_dir()  # the candidates did train
    assert not (tmp_path / "out" / "history.json").exists() and not (tmp_path / "out" / "history.png").exists()
    assert "trained projector" not in (tmp_path / "out" / "README.md").read_text()
