"""Recipe validation: strict, every error at once, with field paths and suggestions."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
        (lambda r: r["bonds"][1]["presets"].update(zs={"channel:audio": 1.5}), "preset 'zs': lambda for 'audio' is 1.5"),
        (lambda r: r["bonds"][1]["presets"].update(zs={"channel:smell": 0.5}), "preset 'zs': unknown modality 'smell'"),
        (lambda r: r["experts"].update(mine={"import": "nocolon"}), "must look like 'package.module:attribute'"),
        (lambda r: r["experts"].update(mine={"name": "world_unified", "kwargs": {"num_concept": 8}}),
         r"experts.mine: .*'world_unified' takes no argument 'num_concept' \(did you mean 'num_concepts'\?\); it takes: "),
        (lambda r: r["experts"].update(mine={"name": "world_unified", "kwargs": {"concepts_seed": "abc"}}),
         r"experts.mine: .*'world_unified': wrong type: concepts_seed='abc' \(expected int: "),
        (lambda r: r["experts"].update(mine={"name": "world_unified", "kwargs": {"num_concepts": 2.5, "checkpoint": 7}}),
         r"num_concepts=2.5 \(expected int: .*fractional part\); checkpoint=7 \(expected str \| pathlib.Path \| None"),
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
    if "clap_general" in recipe.experts:  # FreeBind's README: CLAP-General 630k-fusion-best.pt, CLAP-Music 89.98
        assert (recipe.experts["clap_general"].source, recipe.experts["clap_general"].kwargs["checkpoint"]) == \
            ("clap_general.fusion", "checkpoints/630k-fusion-best.pt")
        assert recipe.experts["clap_music"].kwargs["checkpoint"] == \
            "checkpoints/music_speech_audioset_epoch_15_esc_89.98.pt"
    monkeypatch.chdir(tmp_path)  # no checkpoints here
    with pytest.raises(CheckpointError) as info:
        fuse(recipe, work=tmp_path / "work", progress=False)
    message = str(info.value)
    assert "experts.imagebind.kwargs.checkpoint: no file or directory 'checkpoints/imagebind_huge.pth'" in message
    assert "imagebind_huge expects imagebind_huge.pth" in message
    assert not (tmp_path / "work" / "data").exists()  # refused before any work
    files = {e.kwargs.get("checkpoint") for e in recipe.experts.values()}
    assert all(f"'{f}'" in message for f in files)


# Issue 20: every malformed recipe is a RecipeError naming the field (or file and line), never a
# traceback or a silent run.

def _set(path: str, value: object):
    """A change to the demo recipe's raw mapping: set the value at a dotted path."""
    def change(raw: dict) -> None:
        *parents, last = path.split(".")
        node = raw
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return change


def _routed(**router) -> dict:
    return {"experts": ["image_text"], "router": router}


@pytest.mark.parametrize("change, expected", [
    (_set("train.lr", float("inf")), "train.lr: Input should be a finite number"),
    (_set("train.lr", float("nan")), "train.lr: Input should be a finite number"),
    (_set("train.temperature", float("inf")), "train.temperature: Input should be a finite number"),
    (_set("train.weight_decay", float("inf")), "train.weight_decay: Input should be a finite number"),
    (_set("routed", _routed(lr=float("inf"))), "routed.router.lr: Input should be a finite number"),
    (_set("routed", _routed(lr=float("nan"))), "routed.router.lr: Input should be a finite number"),
    (_set("routed", _routed(temperature=float("inf"))), "routed.router.temperature: Input should be a finite number"),
    (_set("routed", _routed(seed=-1)), "routed.router.seed: Input should be greater than or equal to 0"),
    (_set("routed", _routed(stream_mb=0)), "routed.router.stream_mb: Input should be greater than 0"),
    (_set("routed", _routed(index={"kind": "ivf", "options": {"nlst": 8}})),
     "routed.router.index.options: unknown index option(s) ['nlst']"),
    (_set("routed", _routed(index="annoy")), "routed.router.index.kind: Input should be 'flat', 'ivf', 'hnsw', 'pq' or 'ivfpq'"),
    (_set("bonds.1.pseudo", [{"seed": "audio", "partners": ["text"], "index": {"kind": "pq", "options": {"pq_m": 0}}}]),
     "bonds.1.pseudo.0.index.options: index option(s) ['pq_m'] must be at least 1"),
    (_set("routed", {"experts": ["image_text"], "scales": {"text": float("inf")}}), "routed.scales.text: Input should be a finite number"),
    (_set("bonds.1.pseudo", [{"seed": "audio", "partners": ["text"], "temperature": float("inf")}]),
     "bonds.1.pseudo.0.temperature: Input should be a finite number"),
    (_set("train.seed", 2**64), "train.seed: Input should be less than 9223372036854775808"),
    (_set("train.seed", -1), "train.seed: Input should be greater than or equal to 0"),
    (_set("data.world.seed", -1), "data.world.seed: Input should be greater than or equal to 0"),
    (_set("data.world.seed", 2**64), "data.world.seed: Input should be less than"),
    (_set("evaluate.ks", [-1]), "evaluate.ks: each k must be at least 1"),
    (_set("evaluate.ks", [0, 5]), "evaluate.ks: each k must be at least 1"),
    (_set("evaluate.ks", []), "evaluate.ks: List should have at least 1 item"),
    (_set("evaluate.ks", [1, 5, 5]), "evaluate.ks: k listed more than once: [5]"),
    (_set("evaluate.ks", [5, 10]), "evaluate.ks: ks [5, 10] lacks 1: R@1 is what"),
    (_set("name", "../x"), "name: '../x' names the work and export directories"),
    (_set("name", ".hidden"), "name: '.hidden' names the work"),
    (_set("name", "a/b"), "name: 'a/b' names the work"),
    (_set("name", ""), "name: '' names the work"),
    (_set("name", "x\n"), "name: 'x\\n' names the work"),
    (_set("base", ["x"]), "base: Input should be a valid string"),
    (_set("bonds", 5), "bonds: Input should be a valid list"),
    (_set("routed", {"experts": [{"a": 1}]}), "routed.experts.0: Input should be a valid string"),
    (lambda r: r["bonds"][0].pop("expert") and r["bonds"][0].update(experts=[{"a": 1}]),
     "bonds.0.experts.0: Input should be a valid string"),
    (_set("bonds.0.pseudo", 5), "bonds.0.pseudo: Input should be a valid list"),
    (_set("experts", {1: "world_unified"}), "base: 'unified' is not one of the recipe's experts"),
    (_set("routed", {"experts": ["image_text"], "inputs": ["text"]}), "routed.inputs: Input should be a valid dictionary"),
    (_set("routed", {"experts": 5, "inputs": {"text": 5}}), "routed.experts: Input should be a valid list"),
])
def test_malformed_values_are_named_errors(change, expected: str) -> None:
    raw = demo_raw()
    change(raw)
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw, "demo.yaml")
    assert expected in str(info.value)


def test_mining_indexes_parse_from_a_bare_kind_or_kind_and_options() -> None:
    raw = demo_raw()
    raw["bonds"][1].pop("mixture")
    raw["bonds"][1]["pseudo"] = [{"seed": "audio", "partners": ["text"], "index": "hnsw"}]
    raw["routed"] = _routed(index={"kind": "ivfpq", "options": {"nlist": 1024, "pq_m": 64}})
    recipe = validate_recipe(raw)
    assert recipe.bonds[1].pseudo[0].index.kind == "hnsw" and recipe.bonds[1].pseudo[0].index.options == {}
    options = recipe.routed.router.index.index_options()
    assert (recipe.routed.router.index.kind, options.nlist, options.pq_m, options.nprobe) == ("ivfpq", 1024, 64, 16)


def test_safe_names_pass() -> None:
    raw = demo_raw()
    raw["name"] = "my-run_2.v1"
    assert validate_recipe(raw).name == "my-run_2.v1"


def _demo_text() -> str:
    return (ROOT / "recipes" / "demo.yaml").read_text()


@pytest.mark.parametrize("text, expected", [
    (lambda: _demo_text().replace("  epochs: 30", "  epochs: 30\n  lr: .inf"), "train.lr: Input should be a finite number"),
    (lambda: _demo_text().replace("  epochs: 30", "  epochs: 30\n  lr: .nan"), "train.lr: Input should be a finite number"),
    (lambda: _demo_text().replace("  epochs: 30", "  epochs: 30\n  temperature: .inf"),
     "train.temperature: Input should be a finite number"),
    (lambda: _demo_text().replace("  epochs: 30", "  epochs: 30\n  seed: " + str(2**64)), "train.seed: Input should be less than"),
    (lambda: _demo_text().replace("    seed: 0", "    seed: -3"), "data.world.seed: Input should be greater than or equal to 0"),
    (lambda: _demo_text().replace("ks: [1, 5, 10]", "ks: [-1]"), "evaluate.ks: each k must be at least 1"),
    (lambda: _demo_text().replace("ks: [1, 5, 10]", "ks: []"), "evaluate.ks: List should have at least 1 item"),
    (lambda: _demo_text().replace("name: demo", "name: ../x"), "name: '../x' names the work"),
    (lambda: _demo_text() + "name: again\n", r"recipe.yaml:56:1: not valid YAML (duplicate key 'name' (first given on line 6))"),
    (lambda: _demo_text().replace("  epochs: 30", "  epochs: 30\n  epochs: 3"), "recipe.yaml:47:3: not valid YAML (duplicate key 'epochs' (first given on line 46))"),
    (lambda: "name: x\ndata: {world: {seed: 1, seed: 2}}\n", "recipe.yaml:2:25: not valid YAML (duplicate key 'seed' (first given on line 2))"),
    (lambda: _demo_text().replace("base: unified", "base: [x]"), "base: Input should be a valid string"),
    (lambda: _demo_text().split("bonds:")[0] + "bonds: 5\n", "bonds: Input should be a valid list"),
    (lambda: _demo_text().replace("expert: image_text", "experts: [{a: 1}]"), "bonds.0.experts.0: Input should be a valid string"),
    (lambda: _demo_text() + "routed:\n  experts: [image_text]\n  inputs: [text]\n", "routed.inputs: Input should be a valid dictionary"),
    (lambda: "name: x\nbase: " + "[" * 20000 + "]" * 20000 + "\n", "nested too deeply"),
    (lambda: _demo_text().replace("    seed: 0", "    seed: " + "9" * 5000), "recipe.yaml:10:11: not valid YAML (integer too long to read"),
])
def test_malformed_recipe_files_are_named_errors(tmp_path: Path, text, expected: str) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(text(), encoding="utf-8")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert expected in str(info.value)


def test_yaml_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    text = _demo_text().replace("train:\n  epochs: 30\n", "train:\n  <<: {epochs: 3, hidden: 8}\n  epochs: 30\n")
    path.write_text(text, encoding="utf-8")
    recipe, _ = load_recipe(path)
    assert recipe.train.epochs == 30


def test_recipe_that_is_not_utf8_is_a_named_error(tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_bytes(b"\xff\xfen\x00a\x00m\x00e\x00")
    with pytest.raises(RecipeError, match=r"recipe\.yaml: not UTF-8 text \(byte 0xff at offset 0\)"):
        load_recipe(path)


def test_mutated_demo_recipe_raises_only_recipe_errors() -> None:
    _mutation_property()


def _paths(node: object, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


def _mutation_property() -> None:
    """Random keys of the demo recipe deleted or their values replaced by random JSON-like
    values: validation succeeds or raises a RecipeError, nothing else (300 examples, ~2 s)."""
    json = st.recursive(
        st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats()
        | st.text(max_size=8) | st.sampled_from(["image_text", "audio_text", "unified", "text", "audio", "mlp", "combination"]),
        lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6) | st.sampled_from(
            ["expert", "experts", "type", "lambdas", "seed", "ks", "inputs", "pseudo", "router", "lr"]), children, max_size=3),
        max_leaves=8,
    )

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        raw = demo_raw()
        raw["routed"] = {"experts": ["image_text"], "inputs": {"text": ["unified"]}, "router": {"lr": 0.01}}
        raw["bonds"][1]["pseudo"] = [{"seed": "audio", "partners": ["text"], "miner": "audio_text"}]
        for _ in range(data.draw(st.integers(1, 4))):
            paths = _paths(raw)
            if not paths:
                break
            *parents, last = data.draw(st.sampled_from(paths))
            node = raw
            for key in parents:
                node = node[key]
            if data.draw(st.booleans()):
                del node[last]
            else:
                node[last] = data.draw(json)
        try:
            validate_recipe(raw, "demo.yaml")
        except RecipeError:
            pass

    check()
