"""Fused checkpoints: save → load gives identical embeddings; loading is strict."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from exports import reseal
from safetensors.torch import load_file, save_file
from toy_experts import multi_expert

import spacebind
from spacebind.bonds.bind import BoundSpace
from spacebind.bonds.mixture import ProjectorMixture
from spacebind.bonds.projector import MLPProjector
from spacebind.errors import CheckpointError
from spacebind.experts import build_expert

TEXTS = ["a small red cube", "a huge blue cone", "tiny green torus"]


def trained_like(head: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give BatchNorm non-trivial running statistics so a lost buffer would show."""
    torch.manual_seed(seed)
    head.train()
    with torch.no_grad():
        for _ in range(3):
            head(torch.randn(32, head.members[0].in_dim if hasattr(head, "members") else head.in_dim))
    return head.eval()


def composed_space() -> BoundSpace:
    u = multi_expert("U", 8, ("text", "image"), 0)
    e1 = multi_expert("E1", 6, ("text", "image"), 1)
    e2 = multi_expert("E2", 5, ("text", "point"), 2)
    e3 = multi_expert("E3", 4, ("text",), 3)
    d = BoundSpace(u, [e1], "displacement", {"E1": trained_like(MLPProjector(8, 6, hidden=16), 0)}, lambdas={"text": 0.2})
    heads = {
        "E2": trained_like(ProjectorMixture([MLPProjector(5, 6, hidden=16) for _ in range(2)]), 1),
        "E3": trained_like(ProjectorMixture([MLPProjector(4, 6, hidden=16) for _ in range(3)]), 2),
    }
    return BoundSpace(d, [e2, e3], "combination", heads, lambdas={"text": 0.4, "point": 0.7}, name="fused")


def test_save_load_round_trip_gives_identical_embeddings(tmp_path: Path) -> None:
    space = composed_space()
    records = [{"model": "fused", "role": "fused", "dataset": "toy", "task": "retrieval",
                "modalities": ["image", "text"], "metrics": {"image_retrieval_recall@1": 0.5, "text_retrieval_recall@1": 0.25}}]
    out = space.save(tmp_path / "ckpt", recipe_text="name: toy\n", metrics=records)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "metrics.json", "model.safetensors", "recipe.yaml"]
    leaves = {e.name: e for e in space.leaves()}
    loaded = spacebind.load(out, experts=leaves)
    assert loaded.formula() == "(U + d(E1)) + c(E2 ∥ E3)" == space.formula()
    for modality, inputs in [("text", TEXTS), ("image", [torch.rand(8, 8, 3).numpy()]), ("point", [torch.rand(20, 3).numpy()])]:
        torch.testing.assert_close(loaded.encode(modality, inputs), space.encode(modality, inputs), rtol=0, atol=0)
    config = json.loads((out / "config.json").read_text())
    assert config["space"]["bond"] == "combination" and config["space"]["lambdas"] == {"text": 0.4, "point": 0.7}
    assert config["spacebind_version"] == spacebind.__version__
    assert json.loads((out / "metrics.json").read_text()) == records
    card = (out / "README.md").read_text()
    assert "(U + d(E1)) + c(E2 ∥ E3)" in card and "mixture of 3" in card and "50.0" in card


def test_loading_is_strict(tmp_path: Path) -> None:
    space = composed_space()
    out = space.save(tmp_path / "ckpt")
    leaves = {e.name: e for e in space.leaves()}
    with pytest.raises(CheckpointError, match="built in memory"):
        spacebind.load(out)
    tensors = load_file(str(out / "model.safetensors"))
    key = next(k for k in tensors if k.startswith("bonds.1.E3.members.2"))
    save_file({**tensors, "bonds.1.E3.extra": torch.zeros(1)}, str(out / "model.safetensors"))
    with pytest.raises(CheckpointError, match="does not belong with"):  # not the weights the config was saved with
        spacebind.load(out, experts=leaves)
    reseal(out)
    with pytest.raises(CheckpointError, match=r"unexpected keys \['bonds.1.E3.extra'\]"):
        spacebind.load(out, experts=leaves)
    del tensors[key]
    save_file(tensors, str(out / "model.safetensors"))
    reseal(out)
    with pytest.raises(CheckpointError, match=f"missing keys.*{key}"):
        spacebind.load(out, experts=leaves)
    with pytest.raises(CheckpointError, match="no config.json"):
        spacebind.load(tmp_path)


def test_import_path_experts_reload_and_checksums_are_verified(tmp_path: Path) -> None:
    u = build_expert("toy_experts:text_expert", {"name": "U", "dim": 6, "seed": 0}, name="U")
    e = build_expert("toy_experts:text_expert", {"name": "E", "dim": 4, "seed": 1}, name="E")
    space = BoundSpace(u, [e], "combination", {"E": MLPProjector(4, 6, hidden=8).eval()}, lambdas={"text": 0.5})
    out = space.save(tmp_path / "ckpt")
    trusted = spacebind.load(out, trust_remote_code=True)  # user code: the caller opts in
    torch.testing.assert_close(trusted.encode("text", TEXTS), space.encode("text", TEXTS))
    config = json.loads((out / "config.json").read_text())
    config["space"]["base"]["sha256"] = "0" * 64
    config["space"]["base"]["kwargs"]["dim"] = 7
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="now has dim 7"):
        spacebind.load(out, trust_remote_code=True)


def test_expert_checkpoint_with_another_checksum_is_refused(tmp_path: Path) -> None:
    import numpy as np

    weights = tmp_path / "weights.npy"
    np.save(weights, np.random.default_rng(0).standard_normal((16, 6)).astype(np.float32))
    u = build_expert("toy_experts:file_expert", {"path": str(weights)}, name="U")
    e = build_expert("toy_experts:text_expert", {"name": "E", "dim": 4}, name="E")
    space = BoundSpace(u, [e], "combination", {"E": MLPProjector(4, 6, hidden=8).eval()})
    out = space.save(tmp_path / "ckpt")
    assert json.loads((out / "config.json").read_text())["space"]["base"]["sha256"] == u.spec.sha256
    np.save(weights, np.ones((16, 6), dtype=np.float32))  # the user swapped the expert's weights
    with pytest.raises(CheckpointError, match="expert 'U' checkpoint .*weights.npy has sha256"):
        spacebind.load(out, trust_remote_code=True)
    assert spacebind.load(out, verify=False, trust_remote_code=True).dim == 6


def test_expert_files_of_one_name_are_recorded_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Uni3D zoo ships every checkpoint as `model.pt`: an export records each by the shortest
    trailing path that tells them apart, and loads each expert from its own file again."""
    import shutil

    import numpy as np

    monkeypatch.setenv("SPACEBIND_HOME", str(tmp_path / "home"))
    zoo = tmp_path / "zoo"
    experts = []
    for i, (name, folder) in enumerate([("U", "uni3d-g"), ("E", "uni3d-g-lvis"), ("F", "other")]):
        path = zoo / folder / ("model.npy" if folder != "other" else "solo.npy")
        path.parent.mkdir(parents=True)
        np.save(path, np.random.default_rng(i).standard_normal((16, 6)).astype(np.float32))
        experts.append(build_expert("toy_experts:file_expert", {"path": str(path)}, name=name))
    u, e, f = experts
    space = BoundSpace(u, [e, f], "combination", {"E": MLPProjector(6, 6, hidden=8).eval(),
                                                  "F": MLPProjector(6, 6, hidden=8).eval()})
    out = space.save(tmp_path / "ckpt")
    config = json.loads((out / "config.json").read_text())["space"]
    assert [n["files"] for n in (config["base"], *config["experts"])] == [
        {"path": "uni3d-g/model.npy"}, {"path": "uni3d-g-lvis/model.npy"}, {"path": "solo.npy"}]
    want = space.encode("text", TEXTS)
    torch.testing.assert_close(spacebind.load(out, trust_remote_code=True).encode("text", TEXTS), want, rtol=0, atol=0)
    shelf = tmp_path / "shelf"  # moved, and the machine's memory of them gone: a search directory finds them
    shutil.move(str(zoo), str(shelf))
    shutil.move(str(shelf / "other" / "solo.npy"), str(shelf / "solo.npy"))
    shutil.rmtree(tmp_path / "home")
    loaded = spacebind.load(out, trust_remote_code=True, checkpoint_dir=shelf)
    torch.testing.assert_close(loaded.encode("text", TEXTS), want, rtol=0, atol=0)


def test_a_bond_on_a_routed_space_saves_and_loads(tmp_path: Path) -> None:
    """Any bond kind may sit under any other: `bonds()` walks every bond node, routed ones too."""
    from spacebind.bonds.route import ROUTER_PREFIX, RoutedSpace
    from spacebind.bonds.router import Router

    t = multi_expert("T", 6, ("text", "image"), 0)
    a = multi_expert("A", 5, ("text", "image"), 1)
    b = multi_expert("B", 4, ("text",), 2)
    router = trained_like(Router(6 + 5 + 4, 3, hidden=(8, 4)), 3)
    with torch.no_grad():
        router.net[-1].weight.normal_()
    routed = RoutedSpace(t, [a, b], {"A": trained_like(MLPProjector(5, 6, hidden=8), 4),
                                     "B": trained_like(MLPProjector(4, 6, hidden=8), 5),
                                     f"{ROUTER_PREFIX}text": router})
    c = multi_expert("C", 3, ("text", "point"), 6)
    space = BoundSpace(routed, [c], "combination", {"C": trained_like(MLPProjector(3, 6, hidden=8), 7)},
                       lambdas={"text": 0.3})
    assert [type(n).__name__ for n in space.bonds()] == ["RoutedSpace", "BoundSpace"]
    out = space.save(tmp_path / "ckpt")
    loaded = spacebind.load(out, experts={e.name: e for e in space.leaves()})
    assert loaded.formula() == space.formula()
    for modality, inputs in [("text", TEXTS), ("image", [torch.rand(8, 8, 3).numpy()]), ("point", [torch.rand(20, 3).numpy()])]:
        torch.testing.assert_close(loaded.encode(modality, inputs), space.encode(modality, inputs), rtol=0, atol=0)


def small_space(seed: int) -> BoundSpace:
    u, e = multi_expert("U", 8, ("text",), 0), multi_expert("E", 6, ("text",), 1)
    torch.manual_seed(seed)
    return BoundSpace(u, [e], "combination", {"E": MLPProjector(6, 8, hidden=16).eval()}, lambdas={"text": 0.3})


def record(model: str) -> dict:
    return {"model": model, "role": "fused", "dataset": "toy", "task": "retrieval", "modalities": ["image", "text"],
            "metrics": {"text_retrieval_recall@1": 0.5}}


def export_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def no_leftovers(parent: Path) -> bool:
    return not [p for p in parent.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("crash", ["after_weights", "before_swap", "between_renames"])
def test_an_interrupted_export_leaves_the_old_one_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash: str) -> None:
    from spacebind import checkpoint
    from spacebind.io import files, locks

    old_space, new_space = small_space(0), small_space(1)
    out = old_space.save(tmp_path / "ckpt", recipe_text="name: old\n", metrics=[record("old")])
    before = export_files(out)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed")

    if crash == "after_weights":  # model.safetensors written, config not yet
        monkeypatch.setattr(checkpoint, "write_json", killed)
    elif crash == "before_swap":
        monkeypatch.setattr(locks, "replace_dir", killed)
    else:  # no atomic exchange: old renamed aside, then the new one's rename fails
        monkeypatch.setattr(files, "_exchange", lambda a, b: False)
        real, calls = os.replace, []

        def second_fails(src, dst):
            calls.append(src)
            if len(calls) == 2:
                raise KeyboardInterrupt("killed")
            real(src, dst)

        monkeypatch.setattr(files.os, "replace", second_fails)
    with pytest.raises(KeyboardInterrupt):
        new_space.save(out, recipe_text="name: new\n", metrics=[record("new")])
    monkeypatch.undo()
    # an exception cleans up; a kill before the swap (simulated here) leaves the hidden staging directory
    assert [p.name.startswith(".ckpt.new-") for p in tmp_path.iterdir() if p.name != "ckpt"] == \
        ([True] if crash == "before_swap" else [])
    assert export_files(out) == before
    loaded = spacebind.load(out, experts={e.name: e for e in old_space.leaves()})
    torch.testing.assert_close(loaded.encode("text", TEXTS), old_space.encode("text", TEXTS), rtol=0, atol=0)
    new_space.save(out)  # and the next export replaces it whole
    loaded = spacebind.load(out, experts={e.name: e for e in new_space.leaves()})
    torch.testing.assert_close(loaded.encode("text", TEXTS), new_space.encode("text", TEXTS), rtol=0, atol=0)
    assert sorted(export_files(out)) == ["README.md", "config.json", "metrics.json", "model.safetensors"]


@pytest.mark.parametrize("name", ["metrics.json", "recipe.yaml"])
def test_files_from_another_export_are_refused(tmp_path: Path, name: str) -> None:
    a = small_space(0).save(tmp_path / "a", recipe_text="name: a\n", metrics=[record("a")])
    b = small_space(1).save(tmp_path / "b", recipe_text="name: b\n", metrics=[record("b")])
    (a / name).write_bytes((b / name).read_bytes())
    with pytest.raises(CheckpointError, match=f"{a / name} does not belong with {a / 'config.json'}"):
        spacebind.load(a, experts={e.name: e for e in small_space(0).leaves()})
    assert set(json.loads((b / "config.json").read_text())["files_sha256"]) == {"README.md", "metrics.json", "recipe.yaml"}


def test_an_edited_or_removed_model_card_still_loads(tmp_path: Path) -> None:
    """The card is for people and the Hub, where editing it (a tag, a paragraph) is routine: it fixes
    no embedding, so load does not check it; the next export still replaces it as its own file."""
    space = small_space(0)
    out = space.save(tmp_path / "a", metrics=[record("a")])
    experts = {e.name: e for e in space.leaves()}
    card = (out / "README.md").read_text(encoding="utf-8")
    (out / "README.md").write_text(card.replace("---\n", "---\ntags: [mine]\n", 1), encoding="utf-8")
    torch.testing.assert_close(spacebind.load(out, experts=experts).encode("text", TEXTS), space.encode("text", TEXTS))
    (out / "README.md").unlink()
    spacebind.load(out, experts=experts)
    space.save(out, metrics=[record("a")])
    assert (out / "README.md").read_text(encoding="utf-8") == card  # the export's own card again


def test_a_full_disk_is_one_named_error_and_the_old_export_stays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors import SafetensorError

    from spacebind.errors import StorageError
    from spacebind.io import files

    out = small_space(0).save(tmp_path / "ckpt")
    before = export_files(out)
    for error in [OSError(28, "No space left on device"), SafetensorError("I/O error: No space left on device")]:
        def full(*args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(files, "save_file", full)
        with pytest.raises(StorageError, match=f"^{out / 'model.safetensors'}: cannot write: .*No space left on device") as info:
            small_space(1).save(out)
        assert "\n" not in str(info.value)
        assert export_files(out) == before and no_leftovers(tmp_path)


def test_exporting_into_a_directory_that_is_not_an_export_is_refused(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="not empty and not a fused checkpoint"):
        small_space(0).save(tmp_path / "mine")
    assert export_files(tmp_path / "mine") == {"notes.txt": b"keep me"}


def test_a_new_export_drops_the_old_ones_files_and_keeps_files_put_there_by_hand(tmp_path: Path) -> None:
    """A recipe or UniBind files of the previous export do not describe the new space."""
    out = small_space(0).save(tmp_path / "ckpt", recipe_text="name: old\n", metrics=[record("old")],
                              extra=lambda d: (d / "unibind.json").write_text("{}"))
    (out / "notes.txt").write_text("mine")
    small_space(1).save(out)
    assert sorted(export_files(out)) == ["README.md", "config.json", "metrics.json", "model.safetensors", "notes.txt"]
    assert (out / "notes.txt").read_text() == "mine"


UNIBIND_META = {"format": "spacebind-unibind-1", "space": "U + c(E)", "names": ["cube", "cone"], "modalities": ["text"],
                "heads": {"text": {"type": "mlp"}}, "vote_weight": 0.0, "k": 10}


def test_resave_keeps_the_rest_of_the_export(tmp_path: Path) -> None:
    """`sweep` re-exports with presets added: recipe, metrics, history and later stages' files stay,
    recorded, and the card keeps its history section."""
    from spacebind.checkpoint import resave

    space = small_space(0)
    history = {"E": [{"epoch": 0, "loss": 2.0, "val_recall@1": 0.25}, {"epoch": 1, "loss": 1.5, "val_recall@1": 0.5}]}
    out = space.save(tmp_path / "ckpt", recipe_text="name: toy\n", metrics=[record("toy")], history=history,
                     extra=lambda d: (d / "unibind.json").write_text(json.dumps(UNIBIND_META)))
    before = export_files(out)
    resave(space.with_presets({"sharp": {"text": 0.8}}), out)
    after = export_files(out)
    assert sorted(after) == sorted(before)
    for name in ("model.safetensors", "recipe.yaml", "metrics.json", "history.json", "unibind.json"):
        assert after[name] == before[name], name
    config = json.loads(after["config.json"])
    assert set(config["files_sha256"]) == set(before) - {"config.json", "model.safetensors"}
    assert config["space"]["presets"] == {"sharp": {"text": 0.8}}
    card = after["README.md"].decode()
    assert "history.png" in card and "`sharp`: text 0.8" in card
    assert "## UniBind class centres\n\n2 classes, centres for text (" in card and "text (mlp)" in card
    spacebind.load(out, experts={e.name: e for e in space.leaves()})  # every recorded file checks out


def test_a_sweeps_files_belong_to_the_export_it_swept(tmp_path: Path) -> None:
    """`sweep` writes sweep.json / sweep.png through `resave(files=…)`: recorded and linked by the
    card, replaced by the next sweep (a sweep without a plot leaves no old plot), carried by a later
    resave, and gone when another space is exported into the directory."""
    from spacebind.checkpoint import resave
    from spacebind.interop.hub import EXPORT_FILES

    space = small_space(0)
    out = space.save(tmp_path / "ckpt", metrics=[record("toy")])
    png = lambda path: path.write_bytes(b"\x89PNG first sweep")  # noqa: E731
    resave(space, out, files={"sweep.json": lambda path: path.write_text('{"grid": [0, 1]}'), "sweep.png": png})
    config = json.loads((out / "config.json").read_text())
    assert {"sweep.json", "sweep.png"} <= set(config["files_sha256"]) <= {*EXPORT_FILES} - {"model.safetensors"}
    card = (out / "README.md").read_text()
    assert "## Sweep" in card and "[sweep.json](sweep.json)" in card and "(sweep.png)" in card
    resave(space.with_presets({"sharp": {"text": 0.8}}), out)  # another resave carries them
    assert (out / "sweep.png").read_bytes() == b"\x89PNG first sweep"
    resave(space, out, files={"sweep.json": lambda path: path.write_text('{"grid": [0]}'), "sweep.png": lambda path: None})
    assert (out / "sweep.json").read_text() == '{"grid": [0]}' and not (out / "sweep.png").exists()
    assert "(sweep.png)" not in (out / "README.md").read_text()
    spacebind.load(out, experts={e.name: e for e in space.leaves()})  # every recorded file checks out
    small_space(1).save(out)  # another space: the old sweep does not describe it
    assert not (out / "sweep.json").exists() and "## Sweep" not in (out / "README.md").read_text()


def test_resave_of_an_export_older_than_its_checksums_keeps_recipe_and_metrics(tmp_path: Path) -> None:
    from spacebind.checkpoint import resave

    space = small_space(0)
    out = space.save(tmp_path / "ckpt", recipe_text="name: old\n", metrics=[record("old")])
    config = json.loads((out / "config.json").read_text())
    del config["files_sha256"]  # as exports were written before they recorded their files
    (out / "config.json").write_text(json.dumps(config))
    resave(space.with_presets({"sharp": {"text": 0.8}}), out)
    assert (out / "recipe.yaml").read_text() == "name: old\n"
    assert json.loads((out / "metrics.json").read_text()) == [record("old")]


def test_an_export_clears_what_killed_exports_left_beside_it(tmp_path: Path) -> None:
    """A SIGKILL during `save_space` leaves a whole-looking `.<name>.new-*` staging directory (and,
    where directories cannot be swapped atomically, a `.<name>.old-*` copy) beside the export; the
    next export to that target removes them, under the target's lock, which it does not leave behind."""
    space = composed_space()
    out = space.save(tmp_path / "ckpt")
    for leftover in (".ckpt.new-abc123", ".ckpt.old-def456"):
        (tmp_path / leftover).mkdir()
        (tmp_path / leftover / "config.json").write_text("{}")
    (tmp_path / ".other.new-xyz").mkdir()  # another export's: not ours to touch
    space.save(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.new-xyz", "ckpt"]
