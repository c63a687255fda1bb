"""Cost accounting of a space (`spacebind info`): its experts with their frozen parameters, the
parameters spacebind trained (projector heads, routers, UniBind's aligning heads, …), and the
formula, modalities and embedding dimension of every stage of the tree.

The tree is walked generically, so any space type works: a node's children are its public
attributes that are spaces (or lists / mappings of spaces); its trained modules are its public
attributes that are `nn.Module`s (or lists / mappings of them). An expert's frozen parameters are
those of the modules its encoders reach (a module, a `functools.partial`, a bound method or a
closure over modules); an encoder that reaches none is counted as unknown.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from torch import nn

from spacebind.space import Expert, Space


@dataclass(frozen=True)
class Stage:
    """One node of the space tree (post-order: inner stages before the ones built on them)."""

    depth: int
    name: str
    kind: str
    formula: str
    modalities: tuple[str, ...]
    dim: int
    trained: int


@dataclass(frozen=True)
class ExpertInfo:
    name: str
    source: str
    modalities: tuple[str, ...]
    dim: int
    frozen: int | None  # None: its encoders reach no nn.Module (a user callable)


@dataclass(frozen=True)
class SpaceInfo:
    name: str
    formula: str
    dim: int
    modalities: tuple[str, ...]
    experts: list[ExpertInfo]
    stages: list[Stage]

    @property
    def frozen(self) -> int:
        """Frozen expert parameters (distinct experts; unknown ones count 0)."""
        return sum(e.frozen or 0 for e in self.experts)

    @property
    def trained(self) -> int:
        return sum(s.trained for s in self.stages)


def describe(space: Space) -> SpaceInfo:
    """Experts, parameter counts and per-stage dimensions of `space`."""
    experts = [ExpertInfo(e.name, e.spec.source, e.modalities, e.dim, expert_parameters(e)) for e in space.leaves()]
    stages: list[Stage] = []
    _walk(space, 0, stages)
    return SpaceInfo(space.name, space.formula(), space.dim, space.modalities, experts, stages)


def describe_fused(directory: str | Path, trust_remote_code: bool = False) -> SpaceInfo:
    """`describe` of a fused checkpoint (a directory or hub id), with the UniBind stage its export
    may hold (class centres and the heads trained to align embeddings to them) after the space's own
    stages."""
    from spacebind.unibind.model import load_export

    space, unibind = load_export(directory, trust_remote_code)
    info = describe(space)
    if unibind is not None:
        info.stages.append(Stage(0, "unibind", "unibind", f"{space.formula()} → {len(unibind.names)} class centres",
                                 tuple(unibind.centres), space.dim,
                                 _count(p for head in unibind.heads.values() for p in head.parameters())))
    return info


def _walk(node: Space, depth: int, out: list[Stage]) -> None:
    if isinstance(node, Expert):
        return
    for child in _children(node):
        _walk(child, depth + 1, out)
    kind = str(getattr(node, "kind", type(node).__name__))
    trained = _count(p for m in _public(node, nn.Module) for p in m.parameters())
    out.append(Stage(depth, node.name, kind, node.formula(), node.modalities, node.dim, trained))


def _public(node: object, kind: type) -> Iterator[Any]:
    """Public attributes of `node` of type `kind`, also inside lists, tuples and mappings."""
    for key, value in vars(node).items():
        if key.startswith("_"):
            continue
        values = value.values() if isinstance(value, Mapping) else value if isinstance(value, (list, tuple)) else [value]
        yield from (v for v in values if isinstance(v, kind))


def _children(node: Space) -> list[Space]:
    seen: dict[int, Space] = {}
    for child in _public(node, Space):
        seen.setdefault(id(child), child)
    return list(seen.values())


def _count(params: Iterable[nn.Parameter]) -> int:
    return sum(p.numel() for p in {id(p): p for p in params}.values())


def expert_parameters(expert: Expert) -> int | None:
    """Parameters of the modules the expert's encoders reach (shared towers counted once)."""
    modules = [m for enc in expert.encoders.values() for m in _modules_in(enc, 4)]
    return _count(p for m in modules for p in m.parameters()) if modules else None


def _modules_in(obj: Any, depth: int) -> Iterator[nn.Module]:
    if isinstance(obj, nn.Module):
        yield obj
        return
    if depth == 0:
        return
    if isinstance(obj, functools.partial):
        inner = [obj.func, *obj.args, *obj.keywords.values()]
    elif hasattr(obj, "__self__") and hasattr(obj, "__func__"):  # bound method
        inner = [obj.__self__, obj.__func__]
    elif callable(obj) and getattr(obj, "__closure__", None):
        inner = _cell_values(obj.__closure__)
    elif isinstance(obj, (list, tuple)):
        inner = list(obj)
    elif isinstance(obj, Mapping):
        inner = list(obj.values())
    else:
        return
    for value in inner:
        yield from _modules_in(value, depth - 1)


def _cell_values(closure: tuple[Any, ...]) -> list[Any]:
    values = []
    for cell in closure:
        try:
            values.append(cell.cell_contents)
        except ValueError:  # an empty cell
            continue
    return values


def info_tables(info: SpaceInfo) -> list[Any]:
    """Rich tables for the CLI: experts, stages and totals."""
    from rich.table import Table

    def num(n: int | None) -> str:
        return "?" if n is None else f"{n:,}"

    experts = Table("expert", "source", "modalities", "dim", "frozen params", title=f"{info.name}: experts (frozen)")
    for e in info.experts:
        experts.add_row(e.name, e.source, ", ".join(e.modalities), str(e.dim), num(e.frozen))
    stages = Table("stage", "kind", "formula", "modalities", "dim", "trained params", title="stages (inner first)")
    for s in info.stages:
        stages.add_row("  " * s.depth + s.name, s.kind, s.formula, ", ".join(s.modalities), str(s.dim), num(s.trained))
    totals = Table("formula", "dim", "frozen params", "trained params", "total", title="totals")
    totals.add_row(info.formula, str(info.dim), num(info.frozen), num(info.trained), num(info.frozen + info.trained))
    return [experts, stages, totals] if info.stages else [experts, totals]
