"""Bound spaces: combination `U + c(E1 ∥ …)` and displacement `U + d(E)` (FreeBind notation).

With n() L2-normalisation, P̄ the mean of a mixture's unit outputs, λ_m a per-modality factor:

- combination (result in U's space): for m covered by U and an expert,
  `e_m = n((1 − λ_m)·u_m + λ_m·P̄_{E→U}(x^E_m))`; m only in U: `u_m`; m only in experts:
  `n(P̄_{E→U}(x^E_m))`. Several experts (parallel bond) average all their projector outputs.
- displacement (result in E's space): m in both: `e_m = n(λ_m·P̄_{U→E}(u_m) + (1 − λ_m)·x^E_m)`;
  m only in U: `n(P̄_{U→E}(u_m))`; m only in E: `x^E_m`.

`train_bond` trains the projectors a bond needs on cached leaf embeddings (`spacebind.bonds.fit`);
`bind` is `Space.bind`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from spacebind.bonds.fit import train_head
from spacebind.bonds.lambdas import choose_lambdas
from spacebind.bonds.node import BondNode, register_bond
from spacebind.cache.cache_set import CacheSet, ensure_caches
from spacebind.errors import InputError
from spacebind.io.datasets import Dataset
from spacebind.modalities import check_modality
from spacebind.space import Space


def _members_mean(heads: list[nn.Module], inputs: list[torch.Tensor], modality: str) -> torch.Tensor:
    """Average the unit outputs of every member of every head (a parallel bond pools them all)
    that was trained on inputs of `modality`."""
    outs = []
    for head, x in zip(heads, inputs):
        members = head.members_for(modality) if hasattr(head, "members_for") else [head]
        outs.extend(member(x) for member in members)
    return torch.stack(outs).mean(dim=0)


@register_bond("combination", "displacement", section="bonds",
               description="FreeBind: stay in the base's space (c) or move to the expert's (d)")
class BoundSpace(BondNode):
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
        choices: Mapping[str, Any] | None = None,
    ) -> None:
        if kind not in ("combination", "displacement"):
            raise InputError(f"unknown bond {kind!r}; expected combination or displacement")
        if kind == "displacement" and len(experts) != 1:
            raise InputError("a displacement bond moves the space to one expert; got several")
        self._init_node(base, experts, heads, "bond")
        self.kind = kind
        self.lambdas = _checked(lambdas or {})
        self.presets = {name: _checked(values) for name, values in (presets or {}).items()}
        self.dim = base.dim if kind == "combination" else experts[0].dim
        self.name = name or self.formula()
        self.choices = dict(choices or {})  # what training chose and why: targets per member, λ

    def tunable_modalities(self) -> list[str]:
        """The modalities whose λ mixes two sides: covered by the base and by a member."""
        return [m for m in self.modalities if m in self.base.modalities and any(m in e.modalities for e in self.experts)]

    def kind_config(self) -> dict[str, Any]:
        return {"choices": self.choices} if self.choices else {}

    def formula(self) -> str:
        """FreeBind notation, e.g. `(world_unified + d(world_image_text)) + c(world_audio_text)`."""
        base = f"({self.base.formula()})" if isinstance(self.base, BondNode) else self.base.formula()
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
                          name=self.name, presets=self.presets, choices=self.choices)

    @classmethod
    def from_config(cls, config: dict[str, Any], base: Space, experts: list[Space],
                    heads: dict[str, nn.Module]) -> "BoundSpace":
        return cls(base, experts, config["bond"], heads, lambdas=config["lambdas"], name=config["name"],
                   presets=config.get("presets"), choices=config.get("choices"))

    @classmethod
    def train(cls, base: Space, experts: list[Space], kind: str, caches: CacheSet, dataset: Dataset,
              **kwargs: Any) -> "BoundSpace":
        return train_bond(base, experts, kind, caches, dataset, **kwargs)

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
            projected = _members_mean([self.heads[e.name] for e in covering], xs, modality)
            if u is None:
                return F.normalize(projected, dim=-1)
            return F.normalize((1.0 - lam) * u + lam * projected, dim=-1)
        head = self.heads[self.experts[0].name]
        if u is None:
            return xs[0]
        projected = _members_mean([head], [u], modality)
        if not covering:
            return F.normalize(projected, dim=-1)
        return F.normalize(lam * projected + (1.0 - lam) * xs[0], dim=-1)


def _checked(lambdas: Mapping[str, float]) -> dict[str, float]:
    out = {check_modality(m): float(v) for m, v in lambdas.items()}
    for m, v in out.items():
        if not 0.0 <= v <= 1.0:
            raise InputError(f"lambda for {m!r} is {v}; expected a value in [0, 1]")
    return out


def train_bond(
    base: Space,
    experts: Sequence[Space],
    kind: str,
    caches: CacheSet,
    dataset: Dataset,
    *,
    lambdas: Mapping[str, float] | None = None,
    work_dir: Path | None = None,
    name: str | None = None,
    presets: Mapping[str, Mapping[str, float]] | None = None,
    tune: bool = True,
    **head_kwargs: Any,
) -> BoundSpace:
    """Train the projectors a bond needs and return the bound space. With `tune`, the λ of the
    modalities both sides cover are then chosen on the val split, starting from `lambdas` and
    keeping them unless another λ is better beyond the noise (`spacebind.bonds.lambdas`)."""
    if kind not in ("combination", "displacement"):
        raise InputError(f"unknown bond {kind!r}; expected combination or displacement")
    heads, targets = {}, {}
    for expert in experts:
        src, tgt = (expert, base) if kind == "combination" else (base, expert)
        ckpt = work_dir / expert.name if work_dir is not None else None
        kwargs = {**head_kwargs, "miner": head_kwargs.get("miner") or expert.name}
        heads[expert.name], chosen = train_head(src, tgt, caches, dataset, checkpoint_dir=ckpt, **kwargs)
        targets[expert.name] = chosen.to_json()
    space = BoundSpace(base, list(experts), kind, heads, lambdas=lambdas, name=name, presets=presets,
                       choices={"targets": targets})
    choice = choose_lambdas(space, [base, *experts], caches, dataset) if tune and dataset.select("val") else None
    if choice is None:
        return space
    return BoundSpace(base, list(experts), kind, heads, lambdas={**space.lambdas, **choice.lambdas}, name=name,
                      presets=presets, choices={"targets": targets, "lambdas": choice.to_json()})


def bind(
    base: Space,
    expert: Space | Sequence[Space],
    bond: str = "combination",
    *,
    data: str | Path | Dataset,
    lambdas: Mapping[str, float] | None = None,
    cache_dir: str | Path | None = None,
    work_dir: str | Path | None = None,
    progress: bool = True,
    **head_kwargs: Any,
) -> BoundSpace:
    """Bind `expert` (or several, for a parallel combination) to `base`, training on `data`.

    Args:
        base: the space to bind to (an expert or a bound space).
        expert: the expert space(s) to bring in.
        bond: "combination" (stay in base's space) or "displacement" (move to the expert's space).
        data: a dataset directory / manifest, or a loaded `Dataset`; train and val splits are used.
        lambdas: per-modality λ (weight of the projected side).
        cache_dir: where leaf embedding caches live (default `$SPACEBIND_HOME/caches/<dataset key>`).
        work_dir: where resumable projector checkpoints go (default: none, train in memory).
        head_kwargs: `tune` (choose λ on val, default True), and `train_head`'s: `projector`
            ("mlp", "linear", "procrustes", "relative"), `pairing`, `mixture`, `pseudo`, `train` (TrainConfig).
    """
    dataset = data if isinstance(data, Dataset) else Dataset.load(data)
    experts = [expert] if isinstance(expert, Space) else list(expert)
    caches = ensure_caches([base, *experts], dataset, cache_dir, progress=progress)
    return train_bond(
        base, experts, bond, caches, dataset, lambdas=lambdas,
        work_dir=Path(work_dir) if work_dir is not None else None, progress=progress, **head_kwargs,
    )
