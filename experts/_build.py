"""Build experts from a registry name or a `module:attribute` import path."""
from __future__ import annotations

import importlib
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

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


def missing_expert_files(experts: dict[str, tuple[str, dict[str, Any]]]) -> list[str]:
    """One line per file a registry expert's kwargs name that does not exist, saying which field
    and what the expert expects there; checked before any expert loads (they can take minutes)."""
    from spacebind.experts.registry import EXPERTS

    problems = []
    for alias, (source, kwargs) in experts.items():
        for key in FILE_KWARGS:
            value = kwargs.get(key)
            if isinstance(value, str) and not Path(value).exists():
                expects = EXPERTS.entry(source).checkpoint if source in EXPERTS.list() else ""
                problems.append(f"experts.{alias}.kwargs.{key}: no file or directory {value!r} (from "
                                f"{Path.cwd()})" + (f"; {source} expects {expects}" if expects else ""))
    return problems


def portable_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """`kwargs` with every local file or directory argument reduced to its name, and those names by
    argument: a fused checkpoint records no machine paths, and `resolve_files` finds them again."""
    out, files = dict(kwargs), {}
    for key in FILE_KWARGS:
        value = kwargs.get(key)
        if isinstance(value, str) and value:
            files[key] = Path(value).name
            out[key] = files[key]
    return out, files


def _known_files_path() -> Path:
    from spacebind.io.files import home_dir

    return home_dir() / "expert_files.json"


def remember_files(source: str, kwargs: dict[str, Any]) -> None:
    """Note on this machine (`$SPACEBIND_HOME/expert_files.json`, never in an export) where an
    expert's files are, so its fused checkpoints load here without naming a directory."""
    from spacebind.io.files import write_json

    entries = {f"{source}:{key}:{Path(value).name}": str(Path(value).resolve())
               for key in FILE_KWARGS if isinstance((value := kwargs.get(key)), str) and value and Path(value).exists()}
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


def resolve_files(source: str, files: dict[str, str], kwargs: dict[str, Any],
                  search: Sequence[Path]) -> tuple[dict[str, Any], list[str]]:
    """`kwargs` with each recorded file name replaced by its first match in `search` (directories,
    in order), else where this machine last saw it (`remember_files`); and one line per file found
    nowhere, naming the argument, the file and where it looked."""
    path = _known_files_path()
    known = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    out, missing = dict(kwargs), []
    for key, name in files.items():
        if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
            missing.append(f"{key} {name!r} (not a bare file name: refused)")
            continue
        found = next((d / name for d in search if (d / name).exists()), None)
        last = known.get(f"{source}:{key}:{name}")
        if found is None and last and Path(last).exists():
            found = Path(last)
        if found is None:
            looked = ", ".join(str(d) for d in search) or "nowhere (no directory given)"
            missing.append(f"{key} {name!r} (looked in: {looked}, and where this machine last saw it)")
        else:
            out[key] = str(found)
    return out, missing
