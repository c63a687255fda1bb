"""The floor plan: every documented import path resolves, the front door stays small, and the
lower rooms never import the pipeline (`cli`, `fuse`, `recipe`)."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTED = [
    ("spacebind", "load"), ("spacebind", "create_expert"), ("spacebind", "Space"), ("spacebind", "Dataset"),
    ("spacebind.experts.registry", "EXPERTS"), ("spacebind.experts", "create_expert"), ("spacebind.experts", "list_experts"),
    ("spacebind.experts.adapters", "adapt_expert"), ("spacebind.search", "build_index"), ("spacebind.search", "search"),
    ("spacebind.search", "compose_query"), ("spacebind.search", "load_index"), ("spacebind.unibind", "UniBind"),
    ("spacebind.inputs", "load_inputs"), ("spacebind.events", "Events"), ("spacebind.bonds.bound", "BoundSpace"),
    ("spacebind.training", "TrainConfig"), ("spacebind.bonds", "BONDS"), ("spacebind.bonds", "HEADS"),
    ("spacebind.interop.hub", "push_directory"), ("spacebind.interop.hub", "checkpoint_directory"),
    ("spacebind.interop.adapters", "OpenCLIPModel"), ("spacebind.interop.adapters", "SentenceEncoder"),
    ("spacebind.interop.adapters", "load_clip_benchmark"),
]
LOWER_ROOMS = ["spacebind/io", "spacebind/cache", "spacebind/training", "spacebind/retrieval", "spacebind/evaluation",
               "spacebind/world", "spacebind/unibind",
               "spacebind/interop", "experts", "bonds"]
PIPELINE = {"spacebind.cli", "spacebind.fuse", "spacebind.recipe"}


@pytest.mark.parametrize(("module", "name"), DOCUMENTED)
def test_documented_paths_import(module: str, name: str) -> None:
    assert hasattr(importlib.import_module(module), name)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("room", LOWER_ROOMS)
def test_lower_rooms_never_import_the_pipeline(room: str) -> None:
    offenders = {str(p.relative_to(ROOT)): sorted(_imports(p) & PIPELINE) for p in (ROOT / room).rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_front_door_is_small_and_experts_are_real_ones() -> None:
    assert len(list((ROOT / "spacebind").glob("*.py"))) <= 15
    assert not list((ROOT / "experts").glob("world*.py"))


def test_registries_are_the_one_list_of_bond_kinds_and_head_types() -> None:
    from spacebind.bonds import BONDS, HEADS, bond_kinds
    from spacebind.bonds.heads import projector_types

    assert BONDS.list() == ["combination", "displacement", "routed"] and bond_kinds("bonds") == ["combination", "displacement"]
    assert HEADS.list() == ["linear", "mixture", "mlp", "procrustes", "relative", "router"]
    assert projector_types() == ["linear", "mlp", "procrustes", "relative"]
