"""Experts: frozen pretrained spaces, one file per real expert family, registered on import
(the procedural world's experts live in `spacebind.world` and register here too).

Public: `EXPERTS` (the registry), `create_expert(name, **kwargs)`, `list_experts(pattern)`,
`build_expert(source, kwargs, name)` (a registry name or a `module:attribute` import path)."""
from spacebind.experts import (  # noqa: F401 - each family registers its experts on import
    adapters,
    clap,
    eva_clip_18b,
    hf_vision,
    imagebind,
    internvl,
    minilm,
    open_clip_family,
    ulip2,
    uni3d,
    wavcaps,
)
from spacebind.experts._build import (
    FILE_KWARGS,
    build_expert,
    checkpoint_search_path,
    file_arguments,
    hub_files,
    is_file_argument,
    is_import_path,
    missing_expert_files,
    portable_kwargs,
    recorded_names,
    remember_files,
    resolve_files,
)
from spacebind.experts.registry import EXPERTS, create_expert, list_experts
from spacebind.world import experts as _world_experts  # noqa: F401
from spacebind.world import unimodal as _world_unimodal  # noqa: F401

__all__ = ["EXPERTS", "FILE_KWARGS", "build_expert", "checkpoint_search_path", "create_expert", "file_arguments", "hub_files", "is_file_argument", "is_import_path",
           "list_experts", "missing_expert_files", "portable_kwargs", "recorded_names", "remember_files", "resolve_files"]
