"""Fused checkpoints on the Hugging Face Hub, offline: loading by repo id from a pre-populated
cache, pushing against a fake `HfApi` that writes what it receives into that cache."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import huggingface_hub
import huggingface_hub.constants
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_datasets import tiny_dataset
from toy_experts import multi_expert
from typer.testing import CliRunner

import spacebind
from spacebind.bonds.bind import BoundSpace
from spacebind.bonds.projector import MLPProjector
from spacebind.cli import app
from spacebind.errors import CheckpointError
from spacebind.evaluation.evaluate import evaluate_checkpoint
from spacebind.experts import build_expert
from spacebind.interop.hub import parse_hub_id
from spacebind.unibind.model import UniBind

TEXTS = ["a small red cube", "a huge blue cone"]
IMAGES = [np.linspace(0, 1, 8 * 8 * 3, dtype=np.float32).reshape(8, 8, 3)]
RECORDS = [{"model": "fused", "role": "fused", "dataset": "toy-test", "task": "retrieval",
            "modalities": ["image", "text"], "metrics": {"image_retrieval_recall@1": 0.5, "text_retrieval_recall@1": 0.25}}]


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache, offline; `$SPACEBIND_HOME` kept out of the user's home."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("SPACEBIND_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def toy_space() -> BoundSpace:
    torch.manual_seed(0)
    u = multi_expert("U", 8, ("text", "image"), 0)
    e = multi_expert("E", 6, ("text", "image"), 1)
    return BoundSpace(u, [e], "combination", {"E": MLPProjector(6, 8, hidden=16).eval()}, lambdas={"text": 0.3})


def cache_snapshot(cache: Path, repo_id: str, folder: Path, ref: str = "main") -> Path:
    """Put `folder`'s files into the cache layout `models--org--name/snapshots/<commit>/`, `refs/<ref>`."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(f"{repo_id}@{ref}:{sorted(p.name for p in folder.iterdir())}".encode()).hexdigest()
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return repo / "snapshots" / commit


class FakeApi:
    """Records the calls `push_directory` makes; `upload_folder` writes the uploaded files into the cache."""

    calls: list[tuple[str, dict[str, Any]]] = []

    def __init__(self, token: str | None = None) -> None:
        self.cache = Path(huggingface_hub.constants.HF_HUB_CACHE)

    def create_repo(self, repo_id: str, **kwargs: Any) -> None:
        FakeApi.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def create_branch(self, repo_id: str, **kwargs: Any) -> None:
        FakeApi.calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, *, repo_id: str, folder_path: str, allow_patterns: list[str], revision: str | None,
                      **kwargs: Any) -> str:
        FakeApi.calls.append(("upload_folder", {"repo_id": repo_id, "allow_patterns": allow_patterns,
                                               "revision": revision, **kwargs}))
        staged = Path(folder_path).parent / "staged"
        staged.mkdir()
        for f in Path(folder_path).iterdir():
            if any(fnmatch(f.name, p) for p in allow_patterns):
                shutil.copy2(f, staged / f.name)
        cache_snapshot(self.cache, repo_id, staged, revision or "main")
        shutil.rmtree(staged)
        return f"https://huggingface.co/{repo_id}/commit/fake"


@pytest.fixture
def fake_api(monkeypatch: pytest.MonkeyPatch) -> type[FakeApi]:
    FakeApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    return FakeApi


def test_hub_ids_are_org_slash_name_with_an_optional_revision() -> None:
    assert parse_hub_id("org/name") == ("org/name", None)
    assert parse_hub_id("my-org/space.v2@v1.0") == ("my-org/space.v2", "v1.0")
    for path in ["name", "runs/demo/out", "/abs/path", "./rel", "~/x", "org/name@", "org/na me"]:
        assert parse_hub_id(path) is None, path


def test_load_by_repo_id_reads_the_offline_cache(tmp_path: Path, hf_cache: Path) -> None:
    space = toy_space()
    out = space.save(tmp_path / "export", metrics=RECORDS)
    cache_snapshot(hf_cache, "org/space", out)
    leaves = {e.name: e for e in space.leaves()}
    loaded = spacebind.load("org/space", experts=leaves)
    for modality, inputs in [("text", TEXTS), ("image", IMAGES)]:
        torch.testing.assert_close(loaded.encode(modality, inputs), space.encode(modality, inputs), rtol=0, atol=0)
    cache_snapshot(hf_cache, "org/other", out, ref="v1")
    assert spacebind.load("org/other@v1", experts=leaves).formula() == space.formula()
    with pytest.raises(CheckpointError, match=r"'org/other'.*revision 'v2'.*Hugging Face cache"):
        spacebind.load("org/other@v2", experts=leaves)
    with pytest.raises(CheckpointError, match=r"no hub repo 'org/missing' in the Hugging Face cache"):
        spacebind.load("org/missing", experts=leaves)


def test_an_existing_local_directory_is_a_path_not_a_hub_id(tmp_path: Path, hf_cache: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    space = toy_space()
    space.save(tmp_path / "org" / "space")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: pytest.fail("hub was asked"))
    assert spacebind.load("org/space", experts={e.name: e for e in space.leaves()}).dim == space.dim


def test_loading_from_the_hub_keeps_the_safety_rules(tmp_path: Path, hf_cache: Path) -> None:
    """An import-path expert is refused without trust_remote_code; its file, shipped in the
    repo beside the export, is found in the snapshot."""
    weights = tmp_path / "weights.npy"
    np.save(weights, np.random.default_rng(0).standard_normal((16, 6)).astype(np.float32))
    u = build_expert("toy_experts:file_expert", {"path": str(weights)}, name="U")
    e = multi_expert("E", 4, ("text",), 2)
    space = BoundSpace(u, [e], "combination", {"E": MLPProjector(4, 6, hidden=8).eval()})
    out = space.save(tmp_path / "export")
    shutil.move(weights, out / "weights.npy")  # the repo ships it; the original place is gone
    cache_snapshot(hf_cache, "org/coded", out)
    with pytest.raises(CheckpointError, match="refused to load; expert 'U' is user code"):
        spacebind.load("org/coded", experts={"E": e})
    loaded = spacebind.load("org/coded", experts={"E": e}, trust_remote_code=True)
    torch.testing.assert_close(loaded.encode("text", TEXTS), space.encode("text", TEXTS), rtol=0, atol=0)


def test_push_uploads_the_export_and_loads_back_by_id(hf_cache: Path, fake_api: type[FakeApi]) -> None:
    space = toy_space()
    url = space.push_to_hub("org/pushed", metrics=RECORDS, recipe_text="name: toy\n", private=True)
    assert url == "https://huggingface.co/org/pushed/commit/fake"
    names = [c[0] for c in fake_api.calls]
    assert names == ["create_repo", "upload_folder"]
    assert fake_api.calls[0][1] == {"repo_id": "org/pushed", "repo_type": "model", "private": True, "exist_ok": True}
    upload = fake_api.calls[1][1]
    assert sorted(upload["allow_patterns"]) == ["README.md", "config.json", "metrics.json", "model.safetensors",
                                                "recipe.yaml"]
    snapshot = Path(huggingface_hub.snapshot_download("org/pushed", local_files_only=True))
    assert "spacebind.load" in (snapshot / "README.md").read_text()
    loaded = spacebind.load("org/pushed", experts={e.name: e for e in space.leaves()})
    for modality, inputs in [("text", TEXTS), ("image", IMAGES)]:
        torch.testing.assert_close(loaded.encode(modality, inputs), space.encode(modality, inputs), rtol=0, atol=0)


def test_cli_push_uploads_only_export_files_to_a_branch(tmp_path: Path, hf_cache: Path, fake_api: type[FakeApi]) -> None:
    out = toy_space().save(tmp_path / "export")
    (out / "notes.txt").write_text("not part of the export")
    result = CliRunner().invoke(app, ["push", str(out), "org/cli@dev", "--message", "first"])
    assert result.exit_code == 0, result.output
    assert "org/cli/commit/fake" in result.output
    calls = dict(fake_api.calls)
    assert calls["create_branch"] == {"repo_id": "org/cli", "branch": "dev", "repo_type": "model", "exist_ok": True}
    assert calls["upload_folder"]["commit_message"] == "first" and calls["upload_folder"]["revision"] == "dev"
    snapshot = Path(huggingface_hub.snapshot_download("org/cli", revision="dev", local_files_only=True))
    assert sorted(p.name for p in snapshot.iterdir()) == ["README.md", "config.json", "metrics.json", "model.safetensors"]


def test_push_refuses_a_mixed_export_before_contacting_the_hub(tmp_path: Path, hf_cache: Path,
                                                                fake_api: type[FakeApi]) -> None:
    out = toy_space().save(tmp_path / "export")
    (out / "model.safetensors").write_bytes(b"not the weights")
    result = CliRunner().invoke(app, ["push", str(out), "org/broken"])
    assert result.exit_code == 2 and "does not belong with" in result.output
    assert fake_api.calls == []
    with pytest.raises(CheckpointError, match="not a hub repo id"):
        spacebind.interop.hub.push_directory(out, "not-a-repo")


def cache_expert_file(cache: Path, repo_id: str, path: str, data: bytes) -> tuple[Path, str]:
    """Put one file into the cache as the Hub client does: a blob, and a symlink to it at
    `snapshots/<commit>/<path>`; `refs/main` names the commit. Returns the snapshot path and commit."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(f"{repo_id}:{path}".encode()).hexdigest()
    blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    target = repo / "snapshots" / commit / path
    target.parent.mkdir(parents=True)
    target.symlink_to(os.path.relpath(blob, target.parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return target, commit


def test_expert_files_from_the_hf_cache_are_found_there_by_repo_commit_and_path(
        tmp_path: Path, hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An expert file inside a cache snapshot is recorded with its hub origin (no machine path);
    on a machine that never saw it elsewhere, loading finds it in the cache, checksum verified."""
    weights = tmp_path / "weights.npy"
    np.save(weights, np.random.default_rng(0).standard_normal((16, 6)).astype(np.float32))
    cached, commit = cache_expert_file(hf_cache, "org/expert", "sub/weights.npy", weights.read_bytes())
    weights.unlink()
    u = build_expert("toy_experts:file_expert", {"path": str(cached)}, name="U")
    e = multi_expert("E", 4, ("text",), 2)
    space = BoundSpace(u, [e], "combination", {"E": MLPProjector(4, 6, hidden=8).eval()}, lambdas={"text": 0.4})
    out = space.save(tmp_path / "export")
    text = (out / "config.json").read_text()
    node = json.loads(text)["space"]["base"]
    assert str(tmp_path) not in text and node["files"] == {"path": "weights.npy"}
    assert node["hub_files"] == {"path": {"repo": "org/expert", "revision": commit, "path": "sub/weights.npy"}}

    monkeypatch.setenv("SPACEBIND_HOME", str(tmp_path / "fresh-home"))  # nothing remembered on this machine
    cache_snapshot(hf_cache, "org/space", out)
    want = space.encode("text", TEXTS)
    for source in [out, "org/space"]:
        loaded = spacebind.load(source, experts={"E": e}, trust_remote_code=True)
        torch.testing.assert_close(loaded.encode("text", TEXTS), want, rtol=0, atol=0)
        assert {x.name: x for x in loaded.leaves()}["U"].spec.kwargs["path"] == str(cached)

    cached.resolve().write_bytes(cached.read_bytes()[:-4] + b"\0\0\0\0")  # the cached blob was tampered with
    with pytest.raises(CheckpointError, match=r"expert 'U' checkpoint .*weights.npy has sha256"):
        spacebind.load(out, experts={"E": e}, trust_remote_code=True)
    shutil.rmtree(hf_cache / "models--org--expert")
    with pytest.raises(CheckpointError, match=rf"needs path 'weights.npy' \(looked in: .*export, the Hugging Face "
                                              rf"cache \(org/expert at {commit[:12]}, sub/weights.npy\)"):
        spacebind.load(out, experts={"E": e}, trust_remote_code=True)


def test_a_hub_origin_cannot_leave_the_cached_snapshot(tmp_path: Path, hf_cache: Path) -> None:
    weights = tmp_path / "weights.npy"
    np.save(weights, np.ones((16, 6), dtype=np.float32))
    cached, commit = cache_expert_file(hf_cache, "org/expert", "weights.npy", weights.read_bytes())
    u = build_expert("toy_experts:file_expert", {"path": str(cached)}, name="U")
    e = multi_expert("E", 4, ("text",), 2)
    out = BoundSpace(u, [e], "combination", {"E": MLPProjector(4, 6, hidden=8).eval()}).save(tmp_path / "export")
    config = json.loads((out / "config.json").read_text())
    for bad in [{"path": "../../../weights.npy"}, {"path": "/etc/passwd"}, {"revision": "main"}, {"repo": "../x"}]:
        origin = {"repo": "org/expert", "revision": commit, "path": "weights.npy", **bad}
        config["space"]["base"]["hub_files"] = {"path": origin}
        (out / "config.json").write_text(json.dumps(config))
        with pytest.raises(CheckpointError, match=r"needs path 'weights.npy' \(hub origin .* refused"):
            spacebind.load(out, experts={"E": e}, trust_remote_code=True)


def test_eval_of_a_hub_id_includes_unibind(tmp_path: Path, hf_cache: Path) -> None:
    """`evaluate_checkpoint` finds UniBind's files in the snapshot of a hub id, as in a directory."""
    torch.manual_seed(0)
    u = build_expert("toy_experts:multi_expert", {"name": "U", "dim": 6, "modalities": ["text", "image"], "seed": 0},
                     name="U")
    e = build_expert("toy_experts:multi_expert", {"name": "E", "dim": 4, "modalities": ["text", "image"], "seed": 1},
                     name="E")
    space = BoundSpace(u, [e], "combination", {"E": MLPProjector(4, 6, hidden=8).eval()})
    unibind = UniBind(space, ["c0", "c1", "c2"], {"image": F.normalize(torch.randn(3, 6), dim=-1)},
                      F.normalize(torch.randn(3, 6), dim=-1), torch.arange(3))
    out = space.save(tmp_path / "export", extra=unibind.save)
    cache_snapshot(hf_cache, "org/uni", out)
    tiny_dataset(tmp_path / "data")
    by_id = evaluate_checkpoint("org/uni", tmp_path / "data", cache_dir=tmp_path / "caches", trust_remote_code=True)
    assert [r["modalities"] for r in by_id if r["model"] == f"{space.name} (centres)"] == [["image", "text"]]
    by_path = evaluate_checkpoint(out, tmp_path / "data", cache_dir=tmp_path / "caches", trust_remote_code=True)
    assert json.dumps(by_id) == json.dumps(by_path)  # acc5 is NaN under 5 classes, and NaN != NaN
