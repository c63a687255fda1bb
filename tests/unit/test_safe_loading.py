"""Loading a fused checkpoint runs no stored code unless the caller opts in, and a tampered
`model.safetensors` or `config.json` is a named error, never a silently wrong space."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from exports import reseal
from safetensors.torch import load_file, save_file
from toy_experts import multi_expert
from typer.testing import CliRunner

import spacebind
from spacebind.bonds.bind import BoundSpace
from spacebind.bonds.projector import MLPProjector
from spacebind.cli import app
from spacebind.errors import CheckpointError
from spacebind.experts import build_expert


def saved(tmp_path: Path, user_code: bool = False) -> Path:
    if user_code:
        u = build_expert("toy_experts:text_expert", {"name": "U", "dim": 6}, name="U")
        e = build_expert("toy_experts:text_expert", {"name": "E", "dim": 4, "seed": 1}, name="E")
    else:
        u, e = multi_expert("U", 6, ("text",), 0), multi_expert("E", 4, ("text",), 1)
    return BoundSpace(u, [e], "combination", {"E": MLPProjector(4, 6, hidden=8).eval()}).save(tmp_path / "ckpt")


def rewrite(path: Path, change) -> None:
    config = json.loads(path.read_text())
    change(config["space"])
    path.write_text(json.dumps(config))


def test_a_crafted_import_path_runs_nothing_without_the_opt_in(tmp_path: Path) -> None:
    out = saved(tmp_path, user_code=True)
    marker = tmp_path / "ran"

    def shell(node: dict) -> None:
        node["base"].update(source="subprocess:run", kwargs={"args": f"echo X > {marker}", "shell": True})

    rewrite(out / "config.json", shell)
    with pytest.raises(CheckpointError, match=r"expert 'U' is user code \('subprocess:run'\).*trust_remote_code=True"):
        spacebind.load(out)
    result = CliRunner().invoke(app, ["info", str(out)])
    assert result.exit_code == 2 and "--trust-remote-code" in result.output and "Traceback" not in result.output
    assert not marker.exists()


def test_user_code_loads_with_the_opt_in_or_when_given(tmp_path: Path) -> None:
    out = saved(tmp_path, user_code=True)
    with pytest.raises(CheckpointError, match="expert 'E' is user code"):
        spacebind.load(out)
    trusted = spacebind.load(out, trust_remote_code=True)
    torch.testing.assert_close(trusted.encode("text", ["a b"]).norm(dim=-1), torch.ones(1))
    given = {leaf.name: leaf for leaf in trusted.leaves()}
    torch.testing.assert_close(spacebind.load(out, experts=given).encode("text", ["a b"]), trusted.encode("text", ["a b"]))


def test_stored_remote_code_flag_is_refused(tmp_path: Path) -> None:
    out = saved(tmp_path)

    def remote(node: dict) -> None:
        node["experts"][0].update(source="internvl_c", kwargs={"checkpoint": "/nowhere", "trust_remote_code": True})

    rewrite(out / "config.json", remote)
    with pytest.raises(CheckpointError, match=r"expert 'E' \(internvl_c\) runs the code shipped in its model snapshot"):
        spacebind.load(out, experts={"U": multi_expert("U", 6, ("text",), 0)})


@pytest.mark.parametrize("craft, message", [
    # the flag in an adapter's inner expert's kwargs
    (lambda n: n.update(source="adapted", kwargs={"expert": "internvl_c", "adapt": ["thermal"],
                                                  "kwargs": {"checkpoint": "/nowhere", "trust_remote_code": True}}),
     r"expert 'E' \(adapted\) runs the code shipped in its model snapshot"),
    # kwargs as pairs, turned into a dict only after the check
    (lambda n: n.update(source="internvl_c", kwargs=[["checkpoint", "/nowhere"], ["trust_remote_code", True]]),
     r"space.experts\[0\].kwargs: expected an object"),
    # a `files` entry that would set a non-file argument once the files are located
    (lambda n: n.update(source="internvl_c", kwargs={"checkpoint": "snap"}, files={"trust_remote_code": "snap"}),
     r"space.experts\[0\].files: expected file names by argument"),
])
def test_remote_code_cannot_be_smuggled_past_the_check(tmp_path: Path, craft, message: str) -> None:
    out = saved(tmp_path)
    rewrite(out / "config.json", lambda node: craft(node["experts"][0]))
    with pytest.raises(CheckpointError, match=message):
        spacebind.load(out, experts={"U": multi_expert("U", 6, ("text",), 0)})


@pytest.mark.parametrize("damage, field", [
    (lambda c: c.pop("space"), "space: expected an expert or bond node"),
    (lambda c: c["space"].pop("base"), "space.base: expected an expert or bond node"),
    (lambda c: c["space"].pop("lambdas"), "space.lambdas: expected numbers by modality"),
    (lambda c: c["space"]["experts"][0].update(dim="4"), r"space.experts\[0\].dim: expected a positive integer"),
    (lambda c: c["space"]["experts"][0].pop("source"), r"space.experts\[0\].source"),
    (lambda c: c.update(files_sha256=["README.md"]), "files_sha256: expected checksums by file name"),
])
def test_a_damaged_config_is_an_error_naming_the_field(tmp_path: Path, damage, field: str) -> None:
    out = saved(tmp_path)
    config = json.loads((out / "config.json").read_text())
    damage(config)
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=field):
        spacebind.load(out)
    (out / "config.json").write_text("[" * 100_000 + "]" * 100_000)  # nested past the parser's recursion limit
    with pytest.raises(CheckpointError, match="not valid JSON"):
        spacebind.load(out)


def first_weight(tensors: dict[str, torch.Tensor]) -> str:
    return next(k for k, v in tensors.items() if v.is_floating_point() and v.ndim == 2)


@pytest.mark.parametrize("damage, message", [
    (lambda t: t.update({first_weight(t): torch.full_like(t[first_weight(t)], float("nan"))}), "NaN or infinite"),
    (lambda t: t.update({first_weight(t): t[first_weight(t)][:1]}), "misshaped keys"),
    (lambda t: t.pop(first_weight(t)), "missing keys"),
    (lambda t: t.update({"bonds.0.E.extra": torch.zeros(1)}), "unexpected keys"),
])
def test_tampered_weights_are_named_errors(tmp_path: Path, damage, message: str) -> None:
    out = saved(tmp_path)
    tensors = load_file(str(out / "model.safetensors"))
    damage(tensors)
    save_file(tensors, str(out / "model.safetensors"))
    experts = {"U": multi_expert("U", 6, ("text",), 0), "E": multi_expert("E", 4, ("text",), 1)}
    with pytest.raises(CheckpointError, match="does not belong with .*config.json"):
        spacebind.load(out, experts=experts)  # weights that are not the ones the config was written with
    reseal(out)
    with pytest.raises(CheckpointError, match=message):
        spacebind.load(out, experts=experts)


def test_truncated_files_are_named_errors(tmp_path: Path) -> None:
    out = saved(tmp_path)
    experts = {"U": multi_expert("U", 6, ("text",), 0), "E": multi_expert("E", 4, ("text",), 1)}
    data = (out / "model.safetensors").read_bytes()
    (out / "model.safetensors").write_bytes(data[: len(data) // 2])
    reseal(out)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        spacebind.load(out, experts=experts)
    (out / "config.json").write_text('{"format": 1, "space": ')
    with pytest.raises(CheckpointError, match="not valid JSON"):
        spacebind.load(out, experts=experts)


def test_an_export_moved_with_its_expert_files_loads_bit_identically(tmp_path: Path, monkeypatch) -> None:
    import shutil

    import numpy as np

    monkeypatch.setenv("SPACEBIND_HOME", str(tmp_path / "home"))  # where this machine notes expert files
    weights = tmp_path / "models" / "weights.npy"
    weights.parent.mkdir()
    np.save(weights, np.random.default_rng(0).standard_normal((16, 6)).astype(np.float32))
    u = build_expert("toy_experts:file_expert", {"path": str(weights)}, name="U")
    e = multi_expert("E", 4, ("text",), 1)
    space = BoundSpace(u, [e], "combination", {"E": MLPProjector(4, 6, hidden=8).eval()}, lambdas={"text": 0.4})
    out = space.save(tmp_path / "export")
    text = (out / "config.json").read_text()
    assert str(tmp_path) not in text and json.loads(text)["space"]["base"]["files"] == {"path": "weights.npy"}
    want = space.encode("text", ["a red cube", "a blue cone"])
    given = {"E": e}
    torch.testing.assert_close(spacebind.load(out, experts=given, trust_remote_code=True).encode("text", ["a red cube", "a blue cone"]),
                               want, rtol=0, atol=0)  # same machine: found where it was saved from
    moved, shelf = tmp_path / "elsewhere" / "export", tmp_path / "shelf"
    shutil.move(str(out), str(moved))
    shelf.mkdir()
    shutil.move(str(weights), str(shelf / "weights.npy"))
    with pytest.raises(CheckpointError, match=r"expert 'U' \(toy_experts:file_expert\) needs path 'weights.npy' \(looked in: "):
        spacebind.load(moved, experts=given, trust_remote_code=True)
    loaded = spacebind.load(moved, experts=given, trust_remote_code=True, checkpoint_dir=shelf)
    torch.testing.assert_close(loaded.encode("text", ["a red cube", "a blue cone"]), want, rtol=0, atol=0)
    monkeypatch.setenv("SPACEBIND_CHECKPOINTS", str(shelf))
    loaded = spacebind.load(moved, experts=given, trust_remote_code=True)
    torch.testing.assert_close(loaded.encode("text", ["a red cube", "a blue cone"]), want, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["../secret.npy", "inner/../../secret.npy", str(Path("/") / "tmp" / "secret.npy"),
                                  "inner/./x.npy", "inner//x.npy", "inner\\..\\x.npy"])
def test_a_recorded_file_name_cannot_leave_the_searched_directories(tmp_path: Path, name: str) -> None:
    out = saved(tmp_path)
    (tmp_path / "secret.npy").write_bytes(b"")

    def escape(node: dict) -> None:
        node["base"].update(source="dinov2", kwargs={"path": "x"}, files={"path": name})

    rewrite(out / "config.json", escape)
    with pytest.raises(CheckpointError, match=rf"expert 'U' \(dinov2\) needs path {re.escape(repr(name))} \(not a file "
                                              "name or relative path inside a directory: refused"):
        spacebind.load(out, experts={"E": multi_expert("E", 4, ("text",), 1)}, checkpoint_dir=out / "inner")


def test_an_inner_experts_files_are_recorded_by_name_and_found_again(tmp_path: Path, monkeypatch) -> None:
    """An adapter's inner expert (`adapted`'s `kwargs`) names its checkpoint like any expert: the
    export records the bare name, never the machine path, and loading finds it where it was moved."""
    import shutil

    from spacebind.experts import missing_expert_files, portable_kwargs, resolve_files

    monkeypatch.setenv("SPACEBIND_HOME", str(tmp_path / "home"))
    checkpoint = tmp_path / "models" / "inner.pt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"weights")
    kwargs = {"expert": "internvl_c", "adapt": ["thermal"], "kwargs": {"checkpoint": str(checkpoint), "dtype": "fp16"}}
    stored, files = portable_kwargs(kwargs)
    assert files == {"kwargs.checkpoint": "inner.pt"} and str(tmp_path) not in json.dumps(stored)
    assert stored["kwargs"] == {"checkpoint": "inner.pt", "dtype": "fp16"} and kwargs["kwargs"]["checkpoint"] == str(checkpoint)
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    shutil.move(str(checkpoint), str(shelf / "inner.pt"))
    assert missing_expert_files({"x": ("adapted", kwargs)})[0].startswith("experts.x.kwargs.kwargs.checkpoint: no file")
    found, missing = resolve_files("adapted", files, stored, [shelf])
    assert not missing and found == {**stored, "kwargs": {"checkpoint": str(shelf / "inner.pt"), "dtype": "fp16"}}
