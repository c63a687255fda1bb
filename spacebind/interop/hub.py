"""Fused checkpoints on the Hugging Face Hub: push an export folder to a model repository, and
find the local directory of a checkpoint named by path or by hub id (`org/name[@revision]`).

A string naming an existing local directory is always a path; otherwise a string of the form
`org/name` or `org/name@revision` is a hub id, fetched with `snapshot_download` into the Hugging
Face cache (`$HF_HUB_CACHE`); with `HF_HUB_OFFLINE=1` only the cache is read."""
from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spacebind.errors import CheckpointError

if TYPE_CHECKING:
    from spacebind.space import Space

HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)(?:@(?P<revision>[^\s@]+))?$")

EXPORT_FILES = ("config.json", "model.safetensors", "metrics.json", "README.md", "recipe.yaml",
                "unibind.json", "unibind.safetensors", "history.json", "history.png", "sweep.json", "sweep.png")
"""The files of a fused checkpoint that a push uploads (whichever exist); nothing else in the folder."""


def parse_hub_id(source: str) -> tuple[str, str | None] | None:
    """`(repo_id, revision)` when `source` has the form `org/name[@revision]`, else None."""
    match = HUB_ID.match(source)
    return (match["repo"], match["revision"]) if match else None


def checkpoint_directory(source: str | Path, *, cache_dir: str | Path | None = None) -> Path:
    """The local directory of a fused checkpoint: `source` itself when it is an existing directory;
    the snapshot of hub id `org/name[@revision]` otherwise (the cache only when offline)."""
    if Path(source).is_dir():
        return Path(source)
    hub = parse_hub_id(str(source))
    if hub is None:
        return Path(source)  # not a hub id: load reports the missing directory
    from huggingface_hub import constants, snapshot_download

    repo_id, revision = hub
    offline = bool(constants.HF_HUB_OFFLINE)
    try:
        path = snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=offline)
    except Exception as exc:  # huggingface_hub raises its own error types (not found, offline, gated, HTTP)
        # offline, huggingface_hub's own advice (`local_files_only=False`) names no option of ours
        where = "the Hugging Face cache (HF_HUB_OFFLINE=1)" if offline else \
            f"the Hugging Face Hub ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        raise CheckpointError(f"no directory {str(source)!r}, and no hub repo {repo_id!r}"
                              f"{f' at revision {revision!r}' if revision else ''} in {where}") from None
    return Path(path)


def push_directory(directory: str | Path, repo_id: str, *, revision: str | None = None, private: bool | None = None,
                   token: str | None = None, commit_message: str | None = None) -> str:
    """Upload a fused checkpoint folder (its `EXPORT_FILES`) to hub model repo `repo_id` (which may
    carry `@revision`, a branch made if missing), creating the repo if needed; returns the commit URL.
    The folder must be a whole export: a config whose weights checksum does not match is refused."""
    from huggingface_hub import HfApi

    from spacebind.checkpoint import read_config

    hub = parse_hub_id(repo_id)
    if hub is None:
        raise CheckpointError(f"{repo_id!r} is not a hub repo id; expected 'org/name' or 'org/name@revision'")
    repo, at = hub
    if revision and at and revision != at:
        raise CheckpointError(f"two revisions given: {at!r} (in {repo_id!r}) and {revision!r}")
    revision = revision or at
    root = Path(directory)
    read_config(root)
    files = [name for name in EXPORT_FILES if (root / name).is_file()]
    api = HfApi(token=token)
    try:
        api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
        if revision:
            api.create_branch(repo, branch=revision, repo_type="model", exist_ok=True)
        info: Any = api.upload_folder(repo_id=repo, folder_path=str(root), repo_type="model", revision=revision,
                                      allow_patterns=files,
                                      commit_message=commit_message or f"Upload fused space {root.name}")
    except Exception as exc:  # huggingface_hub raises its own error types (auth, HTTP, connection)
        raise CheckpointError(f"pushing {root} to hub repo {repo!r} failed: {type(exc).__name__}: {exc}") from exc
    return str(getattr(info, "commit_url", info))


def push_space(space: "Space", repo_id: str, *, metrics: list[dict[str, Any]] | None = None,
               recipe_text: str | None = None, **kwargs: Any) -> str:
    """Save `space` to a temporary export folder and push it (see `push_directory`)."""
    with tempfile.TemporaryDirectory(prefix="spacebind-push-") as tmp:
        out = space.save(Path(tmp) / "export", metrics=metrics, recipe_text=recipe_text)
        return push_directory(out, repo_id, **kwargs)
