"""Bound spaces: combination `U + c(E1 ∥ …)` and displacement `U + d(E)` (FreeBind notation).

With n() L2-normalisation, P̄ the mean of a mixture's unit outputs, λ_m a per-modality factor:

- combination (result in U's space): for m covered by U and an expert,
  `e_m = n((1 − λ_m)·u_m + λ_m·P̄_{E→U}(x^E_m))`; m only in U: `u_m`; m only in experts:
  `n(P̄_{E→U}(x^E_m))`. Several experts (parallel bond) average all their projector outputs.
- displacement (result in E's space): m in both: `e_m = n(λ_m·P̄_{U→E}(u_m) + (1 − λ_m)·x^E_m)`;
  m only in U: `n(P̄_{U→E}(u_m))`; m only in E: `x^E_m`.
- channel (spacebind's extension, `channels` set): the projected side's own unit embedding r_m
  (the experts' x^E_m, concatenated and renormalised, for a combination; u_m for a displacement)
  is appended with weight κ_m: `[√(1 − κ_m)·e_m, √κ_m·r_m]`, and `[e_m, 0]` for modalities the
  projected side lacks. κ = 0 everywhere is FreeBind's formula (zero padding). Similarities become
  (1 − κ)-weighted bond similarities plus κ-weighted own similarities: between a modality with a
  channel and one without, every ranking is the bond's; between two with one, an ensemble of the
  bond and the projected side, which at κ → 1 ranks as that side does.

`train_bond` trains the projectors a bond needs on cached leaf embeddings (`spacebind.bonds.fit`);
`bind` is `Space.bind`.
"""
from __future__ import annotations

import difflib
import inspect
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from spacebind.bonds.fit import train_heads
from spacebind.bonds.heads import projector_types
from spacebind.bonds.lambdas import CHANNEL, choose_lambdas, split_setting
from spacebind.bonds.node import BondNode, placed_like, register_bond
from spacebind.cache.cache_set import CacheSet, ensure_caches
from spacebind.errors import InputError
from spacebind.io.datasets import Dataset
from spacebind.modalities import check_modality
from spacebind.space import Space

AUTO_PROJECTORS = ("mlp", "procrustes")  # `projector: auto`'s candidates, FreeBind's first
DEFAULT_LAMBDA = 0.5  # λ of a modality the bond sets none for
# a combination's default λ: FreeBind's `versatile` preset keeps the base's text, the hub of its pairs
# (ImageNet 76.32 against ImageBind's 76.31); the channel carries the expert's own pairs
VERSATILE = {"text": 0.1, "audio": 0.5}
PBAR = ("unit", "plain")  # P̄ renormalised before mixing (FreeBind), or mixed as it is (OmniBind's anchor)


def projector_choices() -> list[str]:
    """What a bond's `projector` takes: `auto` (`AUTO_PROJECTORS`, chosen on val) or a projector head type."""
    return ["auto", *projector_types()]


def default_lambda(kind: str, modality: str) -> float:
    """λ of a modality a bond of `kind` sets none for: a combination's is FreeBind's `versatile`
    preset (text 0.1, so the base's text and its pairs stay; 0.5 elsewhere), a displacement's 0.5."""
    return VERSATILE.get(modality, DEFAULT_LAMBDA) if kind == "combination" else DEFAULT_LAMBDA


def _unit(projected: torch.Tensor, pbar: str) -> torch.Tensor:
    """P̄ alone as an embedding: already unit when `pbar` is "unit"."""
    return projected if pbar == "unit" else F.normalize(projected, dim=-1)


def _members_mean(heads: list[nn.Module], inputs: list[torch.Tensor], modality: str, pbar: str) -> torch.Tensor:
    """P̄: the mean of the unit outputs of every member of every head (a parallel bond pools them
    all) that was trained on inputs of `modality`; with `pbar` "unit" renormalised before it is
    mixed, as FreeBind's code does (`F.normalize(torch.mean(...))`: members that disagree do not
    shrink λ), with "plain" as it is, as OmniBind's anchor (`mean(...)·0.1 + x·0.9`)."""
    outs = []
    for head, x in zip(heads, inputs):
        members = head.members_for(modality) if hasattr(head, "members_for") else [head]
        outs.extend(member(x) for member in members)
    mean = torch.stack(outs).mean(dim=0)
    return F.normalize(mean, dim=-1) if pbar == "unit" else mean


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
        channels: Mapping[str, float] | None = None,
        pbar: str = "unit",
    ) -> None:
        if kind not in ("combination", "displacement"):
            raise InputError(f"unknown bond {kind!r}; expected combination or displacement")
        if kind == "displacement" and len(experts) != 1:
            raise InputError("a displacement bond moves the space to one expert; got several")
        self._init_node(base, experts, heads, "bond")
        self.kind = kind
        self.lambdas = _checked(lambdas or {})
        self.presets = {name: checked_setting(values) for name, values in (presets or {}).items()}
        # κ per modality of the channel (None: no channel, FreeBind's formula and dimension)
        self.channels = _checked(channels, "channel weight") if channels is not None else None
        bond_dim = base.dim if kind == "combination" else experts[0].dim
        self.dim = bond_dim + (sum(s.dim for s in self._raw_sides()) if self.channels is not None else 0)
        self.name = name or self.formula()
        self.choices = dict(choices or {})  # what training chose and why: targets per member, λ, κ
        if pbar not in PBAR:
            raise InputError(f"pbar {pbar!r}: expected one of {', '.join(PBAR)}")
        self.pbar = pbar  # P̄ renormalised before mixing (FreeBind) or mixed as it is (OmniBind's anchor)

    def _raw_sides(self) -> list[Space]:
        """The projected side's spaces, whose own embeddings form the channel."""
        return list(self.experts) if self.kind == "combination" else [self.base]

    @property
    def blocks(self) -> tuple[int, ...]:
        """The bonded part's own blocks (those of the space it lives in: the base's for a combination,
        the expert's for a displacement), then, with a channel, the channel's: one block of the
        experts' joint embedding for a combination, the base's blocks for a displacement."""
        inner = self.base.blocks if self.kind == "combination" else self.experts[0].blocks
        if self.channels is None:
            return inner
        channel = (sum(s.dim for s in self.experts),) if self.kind == "combination" else self.base.blocks
        return (*inner, *channel)

    def channel_modalities(self) -> list[str]:
        """The modalities the channel carries: those the projected side covers."""
        return [m for m in self.modalities if any(m in s.modalities for s in self._raw_sides())]

    def channel_for(self, modality: str) -> float:
        """κ_m, the channel's weight (0 without a channel or where unset)."""
        return (self.channels or {}).get(modality, 0.0)

    def settings(self) -> list[str]:
        """λ of the modalities the bond mixes, then κ of those its channel carries."""
        kappas = [CHANNEL + m for m in self.channel_modalities()] if self.channels is not None else []
        return [*self.tunable_modalities(), *kappas]

    def setting_value(self, parameter: str) -> float:
        """λ of a modality, or κ of `channel:<modality>`."""
        if parameter.startswith(CHANNEL):
            return self.channel_for(parameter.removeprefix(CHANNEL))
        return self.lambda_for(parameter)

    def tunable_modalities(self) -> list[str]:
        """The modalities whose λ mixes two sides: covered by the base and by a member."""
        return [m for m in self.modalities if m in self.base.modalities and any(m in e.modalities for e in self.experts)]

    def kind_config(self) -> dict[str, Any]:
        # a config without `pbar` was saved before P̄ was renormalised: it loads as "plain", as it was
        return {**({"channels": self.channels} if self.channels is not None else {}),
                **({"choices": self.choices} if self.choices else {}),
                **({"pbar": self.pbar} if self.pbar != "plain" else {})}

    @staticmethod
    def card_weights(config: dict[str, Any]) -> str:
        """λ of every modality the bond mixes (the defaults it applies marked), then κ."""
        base, lambdas = set(config["base"]["modalities"]), config["lambdas"]
        sides = {m for expert in config["experts"] for m in expert["modalities"]}
        mixed = [m for m in config["modalities"] if m in base and m in sides]
        weights = ", ".join([*(f"{m} {v:g}" for m, v in lambdas.items() if m in mixed),
                             *(f"{m} {default_lambda(config['bond'], m):g} (default)" for m in mixed if m not in lambdas)])
        channels = config.get("channels")
        mixtures = any(h.get("type") == "mixture" and len(h.get("members", ())) > 1 for h in config["heads"].values())
        plain = "; P̄ plain mean (OmniBind)" if mixtures and config.get("pbar", "plain") == "plain" else ""
        return weights + plain + ("; channel " + ", ".join(f"{m} {v:g}" for m, v in channels.items()) if channels else "")

    def formula(self) -> str:
        """FreeBind notation, e.g. `(world_unified + d(world_image_text)) + c(world_audio_text)`;
        a channel appends `⊕ <its side>`."""
        base = f"({self.base.formula()})" if isinstance(self.base, BondNode) else self.base.formula()
        inner = " ∥ ".join(e.formula() for e in self.experts)
        channel = f" ⊕ {inner if self.kind == 'combination' else base}" if self.channels is not None else ""
        return f"{base} + {self.kind[0]}({inner}){channel}"

    def lambda_for(self, modality: str) -> float:
        """λ_m: the weight on the projected side (`default_lambda` where the bond sets none)."""
        return self.lambdas.get(modality, default_lambda(self.kind, modality))

    def with_lambdas(self, lambdas: str | Mapping[str, float], channels: Mapping[str, float] | None = None) -> "BoundSpace":
        """The same space (heads shared) with other λ on this bond: a preset name or a mapping of λ
        by modality and, under `channel:<modality>` keys, κ of the channel; what the mapping does not
        name keeps its value. Coarse-to-fine inference picks presets. `channels`: other κ by
        modality (the space must have a channel for any κ)."""
        if isinstance(lambdas, str):
            if lambdas not in self.presets:
                known = ", ".join(self.presets) or "(none)"
                raise InputError(f"space {self.name!r} has no λ preset {lambdas!r}; known: {known}")
            lambdas = self.presets[lambdas]
        lambdas, kappas = split_setting(lambdas)
        kappas.update(channels or {})
        if kappas and self.channels is None:
            raise InputError(f"space {self.name!r} has no channel to weigh (κ given for {', '.join(kappas)})")
        return self._replaced(lambdas={**self.lambdas, **lambdas},
                              channels=None if self.channels is None else {**self.channels, **kappas})

    def with_presets(self, presets: Mapping[str, Mapping[str, float]]) -> "BoundSpace":
        """The same space (heads, λ, κ and choices shared) with `presets` added; a name it already
        has takes the new values."""
        return self._replaced(presets={**self.presets, **presets})

    def _replaced(self, **changes: Any) -> "BoundSpace":
        """A copy of this space (heads shared) with some constructor arguments changed."""
        current = dict(lambdas=self.lambdas, name=self.name, presets=self.presets, choices=self.choices,
                       channels=self.channels, pbar=self.pbar)
        return placed_like(self, BoundSpace(self.base, self.experts, self.kind, self.heads, **{**current, **changes}))

    @classmethod
    def from_config(cls, config: dict[str, Any], base: Space, experts: list[Space],
                    heads: dict[str, nn.Module]) -> "BoundSpace":
        return cls(base, experts, config["bond"], heads, lambdas=config["lambdas"], name=config["name"],
                   presets=config.get("presets"), choices=config.get("choices"), channels=config.get("channels"),
                   pbar=config.get("pbar", "plain"))

    @classmethod
    def train(cls, base: Space, experts: list[Space], kind: str, caches: CacheSet, dataset: Dataset,
              **kwargs: Any) -> "BoundSpace":
        return train_bond(base, experts, kind, caches, dataset, **kwargs)

    @torch.no_grad()
    def combine(self, modality: str, leaf_embeddings: Mapping[str, torch.Tensor]) -> torch.Tensor:
        check_modality(modality, self.modalities, owner=f"space {self.name!r}")
        u = self.base.combine(modality, leaf_embeddings) if modality in self.base.modalities else None
        xs = {e.name: e.combine(modality, leaf_embeddings) for e in self.experts if modality in e.modalities}
        bonded = self._bonded(modality, u, xs)
        if self.channels is None:
            return bonded
        if self.kind == "combination":
            parts = [xs.get(e.name, bonded.new_zeros(bonded.shape[0], e.dim)) for e in self.experts]
            raw = torch.cat(parts, dim=-1)  # all zeros where no expert covers it (normalising zeros is NaN in float16)
            raw = F.normalize(raw, dim=-1) if xs else raw
        else:
            raw = u if u is not None else bonded.new_zeros(bonded.shape[0], self.base.dim)
        has_raw = bool(xs) if self.kind == "combination" else u is not None
        kappa = self.channel_for(modality) if has_raw else 0.0
        return torch.cat([(1.0 - kappa) ** 0.5 * bonded, kappa ** 0.5 * raw], dim=-1)

    def _bonded(self, modality: str, u: torch.Tensor | None, xs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """FreeBind's e_m from the base's embedding `u` and the covering experts' `xs` (by name)."""
        lam = self.lambda_for(modality)
        if self.kind == "combination":
            if not xs:
                return u
            projected = _members_mean([self.heads[name] for name in xs], list(xs.values()), modality, self.pbar)
            if u is None:
                return _unit(projected, self.pbar)
            return F.normalize((1.0 - lam) * u + lam * projected, dim=-1)
        x = next(iter(xs.values()), None)
        if u is None:
            return x
        projected = _members_mean([self.heads[self.experts[0].name]], [u], modality, self.pbar)
        if x is None:
            return _unit(projected, self.pbar)
        return F.normalize(lam * projected + (1.0 - lam) * x, dim=-1)


def checked_setting(values: Mapping[str, float]) -> dict[str, float]:
    """A preset's λ and κ (`split_setting`), each key a modality and each value in [0, 1]."""
    lambdas, kappas = split_setting(values)
    return {**_checked(lambdas), **{CHANNEL + m: v for m, v in _checked(kappas, "channel weight").items()}}


def _checked(lambdas: Mapping[str, float], what: str = "lambda") -> dict[str, float]:
    out = {check_modality(m): float(v) for m, v in lambdas.items()}
    for m, v in out.items():
        if not 0.0 <= v <= 1.0:
            raise InputError(f"{what} for {m!r} is {v}; expected a value in [0, 1]")
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
    projector: str = "auto",
    channel: bool = True,
    groups: str | None = None,
    pbar: str = "unit",
    **head_kwargs: Any,
) -> BoundSpace:
    """Train the projectors a bond needs and return the bound space. With `tune`, the λ of the
    modalities both sides cover are then chosen on the val split, starting from `lambdas` and
    keeping them unless another λ is better beyond the noise (`spacebind.bonds.lambdas`).

    `projector="auto"` fits the candidates of `AUTO_PROJECTORS` on the same pairs and keeps the
    first (FreeBind's MLP) unless another (Procrustes: an isometry, so the fused space can keep
    the expert's own geometry) is better on val beyond the noise; without a val split, the first.
    `channel` (with `tune`) lets the val split weigh a channel of the projected side's own
    embeddings per modality (see the module docstring); where it chooses 0 everywhere the space
    is FreeBind's, without the channel. `groups`: the item attribute (e.g. "speaker") whose val
    items the guard's bootstrap resamples together. `pbar`: "unit" renormalises P̄ before mixing
    (FreeBind), "plain" mixes it as it is (OmniBind's anchor)."""
    if kind not in ("combination", "displacement"):
        raise InputError(f"unknown bond {kind!r}; expected combination or displacement")
    check_mixed(base.modalities, experts, lambdas, presets)
    kinds = AUTO_PROJECTORS if projector == "auto" else (projector,)
    judged = tune and dataset.count("val") > 0
    heads: dict[str, dict[str, nn.Module]] = {k: {} for k in kinds}
    targets = {}
    for expert in experts:
        src, tgt = (expert, base) if kind == "combination" else (base, expert)
        ckpt = work_dir / expert.name if work_dir is not None else None
        kwargs = {**head_kwargs, "miner": head_kwargs.get("miner") or expert.name}
        fitted, chosen = train_heads(src, tgt, caches, dataset, checkpoint_dir=ckpt,
                                     projectors=kinds if judged else kinds[:1], **kwargs)
        for k, head in fitted.items():
            heads[k][expert.name] = head
        targets[expert.name] = chosen.to_json()

    def space_with(k: str, lams: Mapping[str, float] | None, choices: dict[str, Any],
                   channels: Mapping[str, float] | None = None) -> BoundSpace:
        return BoundSpace(base, list(experts), kind, heads[k], lambdas=lams, name=name, presets=presets,
                          choices=choices, channels=channels, pbar=pbar)

    if not judged:
        return space_with(kinds[0], lambdas, {"targets": targets})
    unweighed = {} if channel else None  # a channel at κ = 0: FreeBind's formula, zero padded
    first = space_with(kinds[0], lambdas, {}, unweighed)
    alternatives = {k: space_with(k, lambdas, {}, unweighed) for k in kinds[1:]}
    choice = choose_lambdas(first, [base, *experts], caches, dataset, alternatives=alternatives, groups=groups)
    if choice is None:
        return space_with(kinds[0], lambdas, {"targets": targets})
    kept = choice.projector or kinds[0]
    record = {"targets": targets, "lambdas": choice.to_json()}
    if len(kinds) > 1:
        record["projector"] = {"chosen": kept, "candidates": {k or kinds[0]: v for k, v in choice.candidates.items()}}
    channels = choice.channels if choice.channels and any(v > 0 for v in choice.channels.values()) else None
    return space_with(kept, {**(lambdas or {}), **choice.lambdas}, record, channels)


def check_mixed(base_modalities: Sequence[str], experts: Sequence[Space], lambdas: Mapping[str, float] | None,
                presets: Mapping[str, Mapping[str, float]] | None, where: str = "") -> None:
    """Raise an InputError for a λ (given or in a preset) of a modality the bond does not mix: one
    the base (covering `base_modalities`) and none of the experts cover, or the other way round,
    takes no λ. `where` prefixes the field names (a recipe's `bonds.<i>.`)."""
    mixed = set(base_modalities) & {m for e in experts for m in e.modalities}
    given = {"lambdas": dict(lambdas or {})} | {f"presets.{p}": split_setting(v)[0] for p, v in (presets or {}).items()}
    for field, values in given.items():
        unused = sorted(set(values) - mixed)
        if unused:
            raise InputError(f"{where}{field}: λ for {', '.join(unused)}, which the bond does not mix; it mixes "
                             f"{', '.join(sorted(mixed)) or 'nothing'} (the modalities its base and an expert both "
                             "cover), elsewhere a λ has no effect")


def _check_bond_options(options: Mapping[str, Any]) -> None:
    """Raise an InputError for an option `bind` does not take (naming the nearest ones) or an
    unknown projector type."""
    taken = [p.name for f in (train_bond, train_heads) for p in inspect.signature(f).parameters.values()
             if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in ("projectors", "checkpoint_dir", "progress")]
    for key in options:
        if key not in taken:
            near = difflib.get_close_matches(key, taken, n=1)
            raise InputError(f"bind() got an unknown option {key!r}" + (f"; did you mean {near[0]!r}?" if near else "")
                             + f" It takes: {', '.join(sorted(set(taken)))}")
    if options.get("projector", "auto") not in projector_choices():
        raise InputError(f"unknown projector {options['projector']!r}; expected one of {', '.join(projector_choices())}")


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
        lambdas: per-modality λ (weight of the projected side; unset: see `BoundSpace.lambda_for`).
        cache_dir: where leaf embedding caches live (default `$SPACEBIND_HOME/caches/<dataset key>`).
        work_dir: where resumable projector checkpoints go (default: none, train in memory).
        head_kwargs: `tune` (choose λ on val, default True), `projector` ("auto", the default, or
            "mlp", "linear", "procrustes", "relative"), `channel` (default True: see `train_bond`),
            `groups` (the item attribute whose val items the λ guard resamples together),
            and `train_heads`'s: `pairing`, `mixture`, `pseudo`, `train` (TrainConfig).
    """
    _check_bond_options(head_kwargs)  # before anything is embedded
    dataset = data if isinstance(data, Dataset) else Dataset.load(data)
    experts = [expert] if isinstance(expert, Space) else list(expert)
    check_mixed(base.modalities, experts, lambdas, head_kwargs.get("presets"))
    caches = ensure_caches([base, *experts], dataset, cache_dir, progress=progress)
    return train_bond(
        base, experts, bond, caches, dataset, lambdas=lambdas,
        work_dir=Path(work_dir) if work_dir is not None else None, progress=progress, **head_kwargs,
    )
