"""Build experts from a registry name or a `module:attribute` import path."""
from __future__ import annotations

import importlib
import json
import os
import re
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Mapping, Sequence

from spacebind.errors import InputError
from spacebind.space import Expert, Space


def is_import_path(source: str) -> bool:
    return ":" in source


def import_object(path: str) -> Any:
    """The object named by `module:attribute` (dots allowed in the attribute)."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise InputError(f"import path {path!r} must look like 'package.module:attribute'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(f"cannot import module {module_name!r} of {path!r}: {exc}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise InputError(f"module {module_name!r} has no attribute {attr!r} (from {path!r})")
        obj = getattr(obj, part)
    return obj


def build_expert(source: str, kwargs: dict[str, Any] | None = None, name: str | None = None) -> Expert:
    """Create an expert from the registry, or from user code named by an import path.

    An import path may name an `Expert`/space or a callable returning one (called with `kwargs`).
    The returned expert records `source` and `kwargs` so a fused checkpoint can rebuild it.
    """
    kwargs = dict(kwargs or {})
    if is_import_path(source):
        obj = import_object(source)
        space = obj(**kwargs) if callable(obj) and not isinstance(obj, Space) else obj
        if not isinstance(space, Expert):
            raise InputError(
                f"{source!r} gave {type(space).__name__}; expected a spacebind Expert "
                f"(e.g. from Space.from_encoders) or a callable returning one"
            )
        spec = replace(space.spec, source=source, kwargs=kwargs)
        expert = Expert(space.name, space.dim, space.encoders, spec=spec, batch_size=space.batch_size)
    else:
        from spacebind.experts.registry import EXPERTS

        expert = EXPERTS.create(source, **kwargs)
    return expert.renamed(name) if name and name != expert.name else expert


# Expert keyword arguments that name local files or directories.
FILE_KWARGS = ("checkpoint", "clip_checkpoint", "tokenizer", "path")


def file_arguments(kwargs: Mapping[str, Any]) -> dict[str, str]:
    """Every file argument of an expert's kwargs by key: the `FILE_KWARGS`, and those of an inner
    expert's `kwargs` (an adapter's, `adapted`) as `kwargs.<key>`."""
    found = {key: value for key in FILE_KWARGS if isinstance(value := kwargs.get(key), str) and value}
    inner = kwargs.get("kwargs")
    if isinstance(inner, Mapping):
        found.update({f"kwargs.{key}": value for key, value in file_arguments(inner).items()})
    return found


def is_file_argument(key: str) -> bool:
    """Whether `key` names a file argument as `file_arguments` does (e.g. `kwargs.checkpoint`)."""
    *inner, last = key.split(".")
    return last in FILE_KWARGS and all(part == "kwargs" for part in inner)


def with_argument(kwargs: Mapping[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of `kwargs` with the argument `key` (`kwargs.<key>` inside an inner expert's) set to `value`."""
    head, _, rest = key.partition(".")
    return {**kwargs, head: with_argument(kwargs.get(head) or {}, rest, value) if rest else value}


def missing_expert_files(experts: dict[str, tuple[str, dict[str, Any]]]) -> list[str]:
    """One line per file a registry expert's kwargs name that does not exist, saying which field
    and what the expert expects there; checked before any expert loads (they can take minutes)."""
    from spacebind.experts.registry import EXPERTS

    problems = []
    for alias, (source, kwargs) in experts.items():
        for key, value in file_arguments(kwargs).items():
            if not Path(value).exists():
                expects = EXPERTS.entry(source).checkpoint if source in EXPERTS.list() else ""
                problems.append(f"experts.{alias}.kwargs.{key}: no file or directory {value!r} (from "
                                f"{Path.cwd()})" + (f"; {source} expects {expects}" if expects else ""))
    return problems


def recorded_names(paths: Iterable[str]) -> dict[str, str]:
    """The name an export records for each local file: its bare name, or, where other files of the
    export share it (the Uni3D zoo ships every checkpoint as `model.pt`), the shortest trailing
    part of its path that tells them apart (`uni3d-g-lvis/model.pt`)."""
    resolved = {p: Path(os.path.abspath(p)).parts for p in paths}
    names = {}
    for path, parts in resolved.items():
        others = {q for p, q in resolved.items() if q != parts}
        depth = 1
        while depth < len(parts) - 1 and any(q[-depth:] == parts[-depth:] for q in others):
            depth += 1
        names[path] = "/".join(parts[-depth:])
    return names


def portable_kwargs(kwargs: dict[str, Any], names: Mapping[str, str] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """`kwargs` with every local file or directory argument reduced to its recorded name (`names`,
    from `recorded_names` over the whole export; default: the bare name), and those names by
    argument: a fused checkpoint records no machine paths, and `resolve_files` finds them again."""
    out, files = dict(kwargs), {}
    for key, value in file_arguments(kwargs).items():
        files[key] = (names or {}).get(value) or Path(value).name
        out = with_argument(out, key, files[key])
    return out, files


# A Hugging Face cache snapshot: `…/models--org--name/snapshots/<commit>/<path>`.
_HUB_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def hub_files(kwargs: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The hub origin `{"repo", "revision", "path"}` of every file argument that lies in a Hugging
    Face cache snapshot (`…/models--org--name/snapshots/<commit>/<path>`, symlinks not followed;
    `path` is "" for the snapshot directory itself), by argument: no machine path, so an export may
    record it beside the bare name and `resolve_files` finds the file in this machine's cache."""
    origins = {}
    for key, value in file_arguments(kwargs).items():
        parts = Path(os.path.abspath(value)).parts
        for i in range(len(parts) - 2, 0, -1):
            if parts[i] == "snapshots" and parts[i - 1].startswith("models--") and _COMMIT.match(parts[i + 1]):
                repo = parts[i - 1].removeprefix("models--").replace("--", "/")
                origin = {"repo": repo, "revision": parts[i + 1], "path": "/".join(parts[i + 2:])}
                if _hub_record_ok(origin):
                    origins[key] = origin
                break
    return origins


def _hub_record_ok(origin: Any) -> bool:
    """Whether a recorded hub origin is a repo id, a full commit hash and a relative path inside."""
    if not isinstance(origin, dict) or not all(isinstance(origin.get(k), str) for k in ("repo", "revision", "path")):
        return False
    path = origin["path"]
    return (bool(_HUB_REPO.match(origin["repo"])) and bool(_COMMIT.match(origin["revision"])) and "\\" not in path
            and not path.startswith("/") and ".." not in PurePosixPath(path).parts)


def _hub_cached(origin: dict[str, str]) -> Path | None:
    """The file or directory of a (checked) hub origin in this machine's Hugging Face cache
    (`$HF_HUB_CACHE`), at the recorded commit; None when it is not there. Never downloads."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    snapshot = (Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=origin["repo"], repo_type="model")
                / "snapshots" / origin["revision"])
    found = snapshot / origin["path"]  # the snapshot itself when the path is ""
    return found if found.exists() else None


def _hub_place(origin: dict[str, str]) -> str:
    return f"the Hugging Face cache ({origin['repo']} at {origin['revision'][:12]}, {origin['path'] or '.'})"


def _known_files_path() -> Path:
    from spacebind.io.files import home_dir

    return home_dir() / "expert_files.json"


def remember_files(source: str, kwargs: dict[str, Any], names: Mapping[str, str] | None = None) -> None:
    """Note on this machine (`$SPACEBIND_HOME/expert_files.json`, never in an export) where an
    expert's files are, by their recorded names (`portable_kwargs`), so its fused checkpoints load
    here without naming a directory."""
    from spacebind.io.files import write_json

    _, recorded = portable_kwargs(kwargs, names)
    entries = {f"{source}:{key}:{recorded[key]}": str(Path(value).resolve())
               for key, value in file_arguments(kwargs).items() if Path(value).exists()}
    if not entries:
        return
    path = _known_files_path()
    known = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if any(known.get(k) != v for k, v in entries.items()):
        write_json(path, {**known, **entries})


def checkpoint_search_path(extra: Sequence[str | Path] = ()) -> list[Path]:
    """Where recorded expert files are looked for: `extra`, then `$SPACEBIND_CHECKPOINTS`
    (directories separated by the OS path separator)."""
    env = [Path(p) for p in os.environ.get("SPACEBIND_CHECKPOINTS", "").split(os.pathsep) if p]
    return [*(Path(p) for p in extra), *env]


def _relative_name(name: Any) -> bool:
    """Whether a recorded name is a bare file name or a relative path that stays inside the directory
    it is looked up in (`recorded_names`)."""
    if not isinstance(name, str) or not name or "\\" in name or name.startswith("/"):
        return False
    parts = PurePosixPath(name).parts
    return all(part not in (".", "..") for part in parts) and "/".join(parts) == name


def resolve_files(source: str, files: dict[str, str], kwargs: dict[str, Any], search: Sequence[Path],
                  hub: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    """`kwargs` with each recorded file name replaced by its first match in `search` (directories,
    in order), else in this machine's Hugging Face cache when `hub` records the file's origin
    (`hub_files`), else where this machine last saw it (`remember_files`); and one line per file
    found nowhere, naming the argument, the file and where it looked. Checksums are checked later,
    when the expert is built, wherever the file was found."""
    path = _known_files_path()
    known = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    hub = hub or {}
    out, missing = dict(kwargs), []
    for key, name in files.items():
        if not is_file_argument(key):  # `files` may set file arguments only (never e.g. trust_remote_code)
            missing.append(f"{key} {name!r} (not a file argument: refused)")
            continue
        if not _relative_name(name):
            missing.append(f"{key} {name!r} (not a file name or relative path inside a directory: refused)")
            continue
        origin = hub.get(key)
        if origin is not None and not _hub_record_ok(origin):
            missing.append(f"{key} {name!r} (hub origin {origin!r} is not a repo id, commit hash and relative "
                           "path: refused)")
            continue
        found = next((d / name for d in search if (d / name).exists()), None)
        if found is None and origin is not None:
            found = _hub_cached(origin)
        last = known.get(f"{source}:{key}:{name}")
        if found is None and last and Path(last).exists():
            found = Path(last)
        if found is None:
            places = [str(d) for d in search] + ([_hub_place(origin)] if origin is not None else [])
            looked = ", ".join(places) or "nowhere (no directory given)"
            missing.append(f"{key} {name!r} (looked in: {looked}, and where this machine last saw it)")
        else:
            out = with_argument(out, key, str(found))
    return out, missing
