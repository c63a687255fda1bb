"""Bound spaces: combination `U + c(E1 ∥ …)` and displacement `U + d(E)` (FreeBind notation).

With n() L2-normalisation, P̄ the mean of a mixture's unit outputs, λ_m a per-modality factor:

- combination (result in U's space): for m covered by U and an expert,
  `e_m = n((1 − λ_m)·u_m + λ_m·P̄_{E→U}(x^E_m))`; m only in U: `u_m`; m only in experts:
  `n(P̄_{E→U}(x^E_m))`. Several experts (parallel bond) average all their projector outputs.
- displacement (result in E's space): m in both: `e_m = n(λ_m·P̄_{U→E}(u_m) + (1 − λ_m)·x^E_m)`;
  m only in U: `n(P̄_{U→E}(u_m))`; m only in E: `x^E_m`.
"""
from __future__ import annotations

from typing import Literal, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from spacebind.errors import InputError
from spacebind.modalities import MODALITIES, check_modality
from spacebind.space import Expert, Space

BondKind = Literal["combination", "displacement"]
BOND_KINDS: tuple[str, ...] = ("combination", "displacement")


def _members_mean(heads: list[nn.Module], inputs: list[torch.Tensor]) -> torch.Tensor:
    """Average the unit outputs of every member of every head (a parallel bond pools them all)."""
    outs = []
    for head, x in zip(heads, inputs):
        members = getattr(head, "members", None) or [head]
        outs.extend(member(x) for member in members)
    return torch.stack(outs).mean(dim=0)


class BoundSpace(Space):
    """A space built by a bond from a base space and one or more expert spaces."""

    def __init__(
        self,
        base: Space,
        experts: list[Space],
        kind: str,
        heads: Mapping[str, nn.Module],
        lambdas: Mapping[str, float] | None = None,
        name: str | None = None,
        presets: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        if kind not in BOND_KINDS:
            raise InputError(f"unknown bond {kind!r}; expected one of {', '.join(BOND_KINDS)}")
        if not experts:
            raise InputError("a bond needs at least one expert")
        if kind == "displacement" and len(experts) != 1:
            raise InputError("a displacement bond moves the space to one expert; got several")
        require_projectors(experts, heads, "bond")
        self.base = base
        self.experts = list(experts)
        self.kind = kind
        self.heads = {k: v.eval() for k, v in heads.items()}
        self.lambdas = _checked(lambdas or {})
        self.presets = {name: _checked(values) for name, values in (presets or {}).items()}
        covered = set(base.modalities).union(*(e.modalities for e in experts))
        self.modalities = tuple(m for m in MODALITIES if m in covered)
        self.dim = base.dim if kind == "combination" else experts[0].dim
        self.name = name or self.formula()
        self._leaves = distinct_leaves([base, *experts])

    def formula(self) -> str:
        """FreeBind notation, e.g. `(world_unified + d(world_image_text)) + c(world_audio_text)`."""
        base = f"({self.base.formula()})" if isinstance(self.base, BoundSpace) else self.base.formula()
        inner = " ∥ ".join(e.formula() for e in self.experts)
        return f"{base} + {self.kind[0]}({inner})"

    def lambda_for(self, modality: str) -> float:
        """λ_m: the weight on the projected side (0.5 when the bond does not set it)."""
        return self.lambdas.get(modality, 0.5)

    def with_lambdas(self, lambdas: str | Mapping[str, float]) -> "BoundSpace":
        """The same space (heads shared) with other λ on this bond: a preset name or a mapping;
        modalities the mapping does not name keep their λ. Coarse-to-fine inference picks presets."""
        if isinstance(lambdas, str):
            if lambdas not in self.presets:
                known = ", ".join(self.presets) or "(none)"
                raise InputError(f"space {self.name!r} has no λ preset {lambdas!r}; known: {known}")
            lambdas = self.presets[lambdas]
        return BoundSpace(self.base, self.experts, self.kind, self.heads, lambdas={**self.lambdas, **lambdas},
                          name=self.name, presets=self.presets)

    def leaves(self) -> list[Expert]:
        return list(self._leaves)

    def bonds(self) -> list["BoundSpace"]:
        """Every bond in the tree, inner ones first (post-order); this one last."""
        found: list[BoundSpace] = []
        for child in [self.base, *self.experts]:
            if isinstance(child, BoundSpace):
                found.extend(child.bonds())
        return [*found, self]

    @torch.no_grad()
    def combine(self, modality: str, leaf_embeddings: Mapping[str, torch.Tensor]) -> torch.Tensor:
        check_modality(modality, self.modalities, owner=f"space {self.name!r}")
        lam = self.lambda_for(modality)
        in_base = modality in self.base.modalities
        covering = [e for e in self.experts if modality in e.modalities]
        u = self.base.combine(modality, leaf_embeddings) if in_base else None
        xs = [e.combine(modality, leaf_embeddings) for e in covering]
        if self.kind == "combination":
            if not covering:
                return u
            projected = _members_mean([self.heads[e.name] for e in covering], xs)
            if u is None:
                return F.normalize(projected, dim=-1)
            return F.normalize((1.0 - lam) * u + lam * projected, dim=-1)
        head = self.heads[self.experts[0].name]
        if u is None:
            return xs[0]
        projected = _members_mean([head], [u])
        if not covering:
            return F.normalize(projected, dim=-1)
        return F.normalize(lam * projected + (1.0 - lam) * xs[0], dim=-1)


def _checked(lambdas: Mapping[str, float]) -> dict[str, float]:
    out = {check_modality(m): float(v) for m, v in lambdas.items()}
    for m, v in out.items():
        if not 0.0 <= v <= 1.0:
            raise InputError(f"lambda for {m!r} is {v}; expected a value in [0, 1]")
    return out


def require_projectors(members: list[Space], heads: Mapping[str, nn.Module], owner: str) -> None:
    """Raise a named error when a member space of `owner` has no trained projector."""
    missing = [m.name for m in members if m.name not in heads]
    if missing:
        raise InputError(f"{owner} has no projector for member(s) {missing}")


def distinct_leaves(spaces: list[Space]) -> list[Expert]:
    """The experts under `spaces`, once each; two different experts may not share a name."""
    seen: dict[str, Expert] = {}
    for space in spaces:
        for leaf in space.leaves():
            other = seen.setdefault(leaf.name, leaf)
            if other is not leaf and other.spec != leaf.spec:
                raise InputError(
                    f"two different experts are both named {leaf.name!r} ({other.spec.source} and "
                    f"{leaf.spec.source}); give them distinct names"
                )
    return list(seen.values())
