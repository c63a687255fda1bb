"""Build experts from a registry name or a `module:attribute` import path."""
from __future__ import annotations

import importlib
from dataclasses import replace
from pathlib import Path
from typing import Any

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
