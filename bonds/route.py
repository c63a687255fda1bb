"""OmniBind's routed space: many spaces remapped into one target space, mixed per input by routers.

The target T is a space (an expert, or a bound space such as the anchor `T0 + c(U)` with λ 0.1 on
image and text, i.e. `n(0.9·t0 + 0.1·P̄_{U→T0}(u))`). Every other member space E_k has a frozen
projector (a mixture) P̄_k into T. For a modality m, the candidates are T's own embedding (when T
covers m) and P̄_k(x^k_m) for every member covering m, and

    e_m(x) = n(Σ_k w_k(x)·c_k(x)),   w = softmax(s_m·sigmoid(g_m(r_m(x))))

where g_m is the router MLP of m, r_m the concatenation of the router-input experts' own
embeddings of x, and s_m the per-modality scale (OmniBind: 10 for text, 1 otherwise). A modality
without a trained router mixes its candidates uniformly (w_k = 1/K): the untrained routed space is
the uniform mixture. Trained by `spacebind.bonds.route`.

Channel (spacebind's extension, `channels` set): one text embedding serves every pair, so a mixture
good for audio↔text can cost image↔text. Each pair specialist E (`channel_leaves`: for some pair, a
leaf covering both with the fewest modalities, fewer than the space's) can append its own unit
embedding with weight κ_E ∈ [0, 1): `n([e_m, √(κ_E/(1 − κ_E))·x^E_m, …])`, zeros where E lacks m.
Between two modalities E covers (and no other channel leaf does), similarities are then
proportional to `(1 − κ_E)·e·e' + κ_E·x^E·x^E'`: E's own ranking at κ → 1, the routed one at 0;
pairs E does not cover keep the routed ranking. `channels=None` is OmniBind's formula and dimension.
`choose_channels` (`spacebind.bonds.lambdas`) picks κ on val.

Training on cached embeddings: remap every member space into the target with a frozen projector
(mixture), then train one router per modality; nothing re-encodes data.

Router losses, on tuples (dataset items carrying two or more of the space's modalities, and
pseudo tuples mined for unimodal items, see `route_data`):

1. cross-modal overall alignment: the mean of symmetric InfoNCE over every modality pair present
   in the batch's tuples, on the routed embeddings of both sides.
2. language-representation decoupling (our form; OmniBind's exact formula is not public): the
   routed text must stay good for each paired modality separately. For every modality m paired
   with text, with m's routed side held fixed, the symmetric InfoNCE (text→m and m→text) of the
   routed text with m may not exceed that of the best single text candidate for m in the batch:
   `L_dec = mean_m relu(L(t_routed, m) − min_k L(t_k, m))`. Text→audio and text→image may prefer
   different candidates; a text router trained on the pooled loss (1) alone can trade one paired
   modality for another, (2) charges every modality's regret separately. It trains the text
   router only. `benchmarks/omnibind.py` compares training with and without it.

The best epoch by validation mean R@1 over every modality pair and direction is kept.
Deterministic on CPU for a fixed seed.

With `router.stream_mb`, a split's candidates and router inputs are not held: the leaves' rows are
read from their cache shards through one byte-bounded shard LRU (`spacebind.training.pairs`) and
the frozen candidates computed batch by batch; an epoch visits the tuples in shard blocks (the
shard of each tuple's first row), and mining and validation go chunk by chunk.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from spacebind.bonds.fit import train_head
from spacebind.bonds.lambdas import CHANNEL, choose_channels, split_setting
from spacebind.bonds.node import BondNode, placed_like, register_bond
from spacebind.bonds.router import Router, mix, routing_weights
from spacebind.cache.cache_set import CacheSet
from spacebind.cache.keys import id_keys
from spacebind.cache.store import EmbeddingCache
from spacebind.errors import InputError
from spacebind.io.datasets import Dataset
from spacebind.io.progress import note, track
from spacebind.modalities import MODALITIES, check_modality, modality_pairs
from spacebind.retrieval.mining import MiningIndex, build_index, search
from spacebind.retrieval.pseudo import PseudoDataset
from spacebind.space import Expert, Space
from spacebind.training.losses import info_nce
from spacebind.training.order import block_order, epoch_order
from spacebind.training.pairs import Side, cache_side, shard_budget
from spacebind.training.trainer import TrainConfig, adamw, recall_at_1, warmup_cosine

DEFAULT_SCALES: dict[str, float] = {"text": 10.0}
ROUTER_PREFIX = "router."


@register_bond("routed", section="routed", description="OmniBind: members remapped into a target, mixed per input by routers")
class RoutedSpace(BondNode):
    """A target space plus member spaces remapped into it, mixed per modality by routers.

    Args:
        base: the target space T (also the first candidate of every modality it covers).
        experts: the member spaces E_k, each with a projector into T in `heads[E_k.name]`.
        heads: projectors by member name, and routers by `router.<modality>` (optional per modality).
        scales: s_m per modality (default 10 for text, 1 otherwise).
        inputs: router-input leaf expert names per modality (default: every leaf covering it).
        channels: κ by channel leaf name (None: no channel; see the module docstring).
        choices: what training chose and why (the channel's κ), saved with the space.
        presets: named κ settings (`channel:<leaf>` keys), as `spacebind sweep --channel` saves them.
    """

    kind = "routed"

    def __init__(
        self,
        base: Space,
        experts: Sequence[Space],
        heads: Mapping[str, nn.Module],
        *,
        scales: Mapping[str, float] | None = None,
        inputs: Mapping[str, Sequence[str]] | None = None,
        name: str | None = None,
        channels: Mapping[str, float] | None = None,
        choices: Mapping[str, Any] | None = None,
        presets: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        self._init_node(base, experts, heads, "routed space")
        self.lambdas: dict[str, float] = {}
        self.channels = self._checked_channels(channels) if channels is not None else None
        self.presets = {name: self._checked_preset(name, values) for name, values in (presets or {}).items()}
        self.choices = dict(choices or {})
        self.dim = base.dim + sum(self._leaf(n).dim for n in self.channels or {})
        self.scales = {m: float(DEFAULT_SCALES.get(m, 1.0)) for m in self.modalities}
        self.scales.update({check_modality(m, self.modalities, owner="routed space scales"): float(v)
                            for m, v in (scales or {}).items()})
        leaf_names = {leaf.name for leaf in self._leaves}
        self.inputs: dict[str, list[str]] = {}
        for m in self.modalities:
            names = list((inputs or {}).get(m) or [leaf.name for leaf in self.leaves_for(m)])
            bad = [n for n in names if n not in leaf_names or m not in self._leaf(n).modalities]
            if bad:
                raise InputError(f"routed space: router input(s) {bad} for {m!r} are not experts of the space "
                                 f"covering {m!r} ({', '.join(e.name for e in self.leaves_for(m))})")
            self.inputs[m] = names
        self.name = name or self.formula()
        for key, router in self.heads.items():
            if key.startswith(ROUTER_PREFIX):
                m = check_modality(key[len(ROUTER_PREFIX):], self.modalities, owner="routed space routers")
                if router.out_dim != len(self.routes(m)) or router.in_dim != self.router_input_dim(m):
                    raise InputError(f"router {key!r} maps {router.in_dim} → {router.out_dim}; the space needs "
                                     f"{self.router_input_dim(m)} → {len(self.routes(m))}")

    def _leaf(self, name: str) -> Expert:
        return next(leaf for leaf in self._leaves if leaf.name == name)

    def channel_leaves(self) -> list[Expert]:
        """The pair specialists a channel can carry: for each modality pair of the space, the leaves
        covering both with the fewest modalities, when fewer than the space's (a leaf covering every
        modality is one more candidate to mix, not a specialist)."""
        names: set[str] = set()
        for a, b in modality_pairs(list(self.modalities)):
            covering = [leaf for leaf in self._leaves if a in leaf.modalities and b in leaf.modalities]
            fewest = min((len(leaf.modalities) for leaf in covering), default=len(self.modalities))
            names.update(leaf.name for leaf in covering if len(leaf.modalities) == fewest < len(self.modalities))
        return [leaf for leaf in self._leaves if leaf.name in names]

    def _checked_channels(self, channels: Mapping[str, float]) -> dict[str, float]:
        """κ by channel leaf, in `channel_leaves` order; a named error for another leaf or κ outside [0, 1)."""
        allowed = [leaf.name for leaf in self.channel_leaves()]
        for name, value in channels.items():
            if name not in allowed:
                raise InputError(f"routed space: {name!r} cannot carry a channel; the pair specialists that can: "
                                 f"{', '.join(allowed) or 'none'}")
            if not 0.0 <= float(value) < 1.0:
                raise InputError(f"routed space: channel weight κ of {name!r} is {value}; expected a value in [0, 1)")
        return {name: float(channels[name]) for name in allowed if name in channels}

    def _checked_preset(self, name: str, values: Mapping[str, float]) -> dict[str, float]:
        """A preset's κ by `channel:<leaf>` key, checked against the channel."""
        lams, kappas = split_setting(values)
        if lams or self.channels is None or set(kappas) - set(self.channels):
            raise InputError(f"routed space: preset {name!r} sets {sorted(values)}; it may set only the channel's "
                             f"κ ({', '.join(CHANNEL + n for n in self.channels or {}) or 'the space has no channel'})")
        return {CHANNEL + n: v for n, v in self._checked_channels(kappas).items()}

    def formula(self) -> str:
        """E.g. `(image_text + c(unified)) + r(audio_text ∥ point_text)`; a channel appends `⊕ <its leaves>`."""
        base = self.base.formula()
        base = base if isinstance(self.base, Expert) else f"({base})"
        channel = f" ⊕ {' ∥ '.join(self.channels)}" if self.channels else ""
        return f"{base} + r({' ∥ '.join(e.formula() for e in self.experts)}){channel}"

    @property
    def blocks(self) -> tuple[int, ...]:
        """The routed part (in the target's space, so the target's blocks), then one part per channel leaf."""
        return (*self.base.blocks, *(self._leaf(n).dim for n in self.channels or {}))

    def kind_config(self) -> dict[str, Any]:
        return {"scales": self.scales, "inputs": self.inputs,
                **({"channels": self.channels} if self.channels is not None else {}),
                **({"choices": self.choices} if self.choices else {})}

    @classmethod
    def from_config(cls, config: dict[str, Any], base: Space, experts: list[Space],
                    heads: dict[str, nn.Module]) -> "RoutedSpace":
        return cls(base, experts, heads, scales=config["scales"], inputs=config["inputs"], name=config["name"],
                   channels=config.get("channels"), choices=config.get("choices"), presets=config.get("presets"))

    @staticmethod
    def card_weights(config: dict[str, Any]) -> str:
        channels = config.get("channels")
        return "routers, s: " + ", ".join(f"{m} {v:g}" for m, v in config["scales"].items()) + (
            "; channel " + ", ".join(f"{n} {v:g}" for n, v in channels.items()) if channels else "")

    def setting_keys(self, modality: str) -> list[str]:
        """The tuned parameters `modality`'s embedding depends on: κ of each channel leaf covering it."""
        return [CHANNEL + n for n in self.channels or {} if modality in self._leaf(n).modalities]

    def tunable_modalities(self) -> list[str]:
        """No modality: a routed space has no λ (its channel's κ are `channel:<leaf>` settings)."""
        return []

    def settings(self) -> list[str]:
        """κ of each specialist in the channel, as `channel:<leaf>`."""
        return [CHANNEL + n for n in self.channels or {}]

    def setting_value(self, parameter: str) -> float:
        if parameter not in self.settings():
            raise InputError(f"space {self.name!r} has no parameter {parameter!r}; it has {self.settings()}")
        return self.channels[parameter.removeprefix(CHANNEL)]

    def with_lambdas(self, lambdas: str | Mapping[str, float], channels: Mapping[str, float] | None = None) -> "RoutedSpace":
        """The same space (heads shared) with other κ: a preset name, `channel:<leaf>` keys of a
        mapping, or `channels` by leaf name (a routed space has no λ)."""
        if isinstance(lambdas, str):
            if lambdas not in self.presets:
                raise InputError(f"space {self.name!r} has no preset {lambdas!r}; known: {', '.join(self.presets) or '(none)'}")
            lambdas = self.presets[lambdas]
        lams, kappas = split_setting(lambdas)
        if lams:
            raise InputError(f"space {self.name!r} is a routed space: it has no λ (given for {', '.join(lams)})")
        kappas.update(channels or {})
        if kappas and self.channels is None:
            raise InputError(f"space {self.name!r} has no channel to weigh (κ given for {', '.join(kappas)})")
        return self._replaced(channels=None if self.channels is None else {**self.channels, **kappas})

    def _same_layout(self, channels: Mapping[str, float] | None) -> bool:
        """Whether `channels` keeps this space's channel leaves (so its presets still apply)."""
        return (channels is None) == (self.channels is None) and set(channels or {}) == set(self.channels or {})

    def with_channels(self, channels: Mapping[str, float] | None, record: Mapping[str, Any] | None = None) -> "RoutedSpace":
        """The same space (heads shared) with exactly `channels` (κ by leaf; None: no channel) and, if
        given, the `record` of how they were chosen (`choices["channels"]`)."""
        choices = {**self.choices, "channels": dict(record)} if record is not None else self.choices
        return self._replaced(channels=channels, choices=choices)

    def with_presets(self, presets: Mapping[str, Mapping[str, float]]) -> "RoutedSpace":
        """The same space with `presets` added (a name it already has takes the new values)."""
        return self._replaced(presets={**self.presets, **presets})

    def _replaced(self, **changes: Any) -> "RoutedSpace":
        """A copy of this space (heads shared unless given) with some constructor arguments changed;
        presets are dropped where the channel changes (they name its κ)."""
        default_name = self.name == self.formula()  # a default name follows the new formula
        current = dict(heads=self.heads, scales=self.scales, inputs=self.inputs, name=None if default_name else self.name,
                       channels=self.channels, choices=self.choices,
                       presets=self.presets if "channels" not in changes or self._same_layout(changes["channels"]) else {})
        current.update(changes)
        return placed_like(self, RoutedSpace(self.base, self.experts, current.pop("heads"), **current))

    @property
    def routers(self) -> dict[str, nn.Module]:
        """Trained routers by modality."""
        return {k[len(ROUTER_PREFIX):]: v for k, v in self.heads.items() if k.startswith(ROUTER_PREFIX)}

    def routes(self, modality: str) -> list[str]:
        """Names of the candidate spaces of `modality`, in weight-column order (target first)."""
        check_modality(modality, self.modalities, owner=f"space {self.name!r}")
        first = [self.base.name] if modality in self.base.modalities else []
        return first + [e.name for e in self.experts if modality in e.modalities]

    def router_input_dim(self, modality: str) -> int:
        return sum(self._leaf(n).dim for n in self.inputs[modality])

    def candidates(self, modality: str, leaf_embeddings: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Every candidate's embedding of `modality` in the target space, [N, K, dim]."""
        outs = [self.base.combine(modality, leaf_embeddings)] if modality in self.base.modalities else []
        outs += [self.heads[e.name](e.combine(modality, leaf_embeddings))
                 for e in self.experts if modality in e.modalities]
        return torch.stack(outs, dim=1)

    def router_input(self, modality: str, leaf_embeddings: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """r_m: the router-input experts' own embeddings, concatenated, [N, Σ dims]."""
        return torch.cat([leaf_embeddings[n] for n in self.inputs[modality]], dim=1)

    def weights(self, modality: str, leaf_embeddings: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """w per input [N, K]; uniform when the modality has no router."""
        return routing_weights(self.routers.get(modality), self.router_input(modality, leaf_embeddings),
                               len(self.routes(modality)), self.scales[modality])

    @torch.no_grad()
    def combine(self, modality: str, leaf_embeddings: Mapping[str, torch.Tensor]) -> torch.Tensor:
        check_modality(modality, self.modalities, owner=f"space {self.name!r}")
        return self.with_channel_parts(modality, mix(self.candidates(modality, leaf_embeddings),
                                                     self.weights(modality, leaf_embeddings)), leaf_embeddings)

    def with_channel_parts(self, modality: str, routed: torch.Tensor,
                           leaf_embeddings: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """A routed embedding [N, dim of the target] with the channel leaves' parts appended (each
        specialist's own embedding weighted by its κ; zeros where it lacks `modality`)."""
        if self.channels is None:
            return routed
        parts, squares = [routed], 1.0
        for name, kappa in self.channels.items():
            if modality in self._leaf(name).modalities:
                parts.append((kappa / (1.0 - kappa)) ** 0.5 * F.normalize(leaf_embeddings[name].to(routed), dim=-1))
                squares += kappa / (1.0 - kappa)
            else:
                parts.append(routed.new_zeros(routed.shape[0], self._leaf(name).dim))
        return torch.cat(parts, dim=-1) / squares ** 0.5  # unit parts: the norm is known, and 1 at κ = 0

    @torch.no_grad()
    def route_weights(self, modality: str, inputs: Any, batch_size: int | None = None) -> torch.Tensor:
        """The router's weights per input, [N, K], columns in `routes(modality)` order."""
        leaves = self.leaf_embeddings(modality, inputs, batch_size)
        return self.weights(modality, {k: v.to(self.device, self.dtype) for k, v in leaves.items()})

    def uniform(self) -> "RoutedSpace":
        """The same remapped spaces mixed uniformly (no routers; the channel kept): OmniBind's averaging baseline."""
        heads = {k: v for k, v in self.heads.items() if not k.startswith(ROUTER_PREFIX)}
        return self._replaced(heads=heads, name=f"{self.name} (uniform)", choices={})


class RouterConfig(BaseModel):
    """Router training settings (the recipe's `routed.router:` section)."""

    model_config = ConfigDict(extra="forbid")

    hidden: list[int] = Field(default_factory=lambda: [512, 100], min_length=2, max_length=2,
                              description="widths of the router MLP's two hidden layers (OmniBind: 512, 100)")
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(256, ge=2)
    lr: float = Field(1e-3, gt=0, allow_inf_nan=False)
    weight_decay: float = Field(1e-4, ge=0, allow_inf_nan=False)
    warmup: float = Field(0.05, ge=0, lt=1, allow_inf_nan=False)
    temperature: float = Field(0.05, gt=0, allow_inf_nan=False, description="fixed InfoNCE temperature")
    decoupling: float = Field(1.0, ge=0, allow_inf_nan=False, description="weight of the language-representation decoupling loss; 0: off")
    patience: int = Field(5, ge=1, description="epochs without a val mean R@1 gain before stopping")
    seed: int = Field(0, ge=0, lt=2**63)
    miners: dict[str, str] = Field(default_factory=dict, description=(
        "expert that mines each modality pair's pseudo tuples from unimodal items, e.g. {audio-text: audio_text}; "
        "default: the expert covering both with the fewest modalities"))
    stream_mb: float | None = Field(None, gt=0, allow_inf_nan=False, description=(
        "compute the candidates batch by batch from the cache shards, at most this many MB of float16 shards "
        "held (splits larger than memory; its own shard-block batch order); None: candidates in memory"))
    index: MiningIndex = Field(default_factory=MiningIndex, description=(
        "FAISS index that mines the pseudo tuples' partners: flat (exact) or an approximate kind for large pools"))
    channel: bool = Field(True, description=(
        "weigh on val a channel of each pair specialist's own embeddings (it keeps ranking its own pairs "
        "unless the routed mixture beats it beyond the noise); false: OmniBind's formula"))
    groups: str | None = Field(None, description=(
        "item attribute (e.g. speaker) whose val items the channel's bootstrap resamples together"))

    @field_validator("miners")
    @classmethod
    def _modality_pairs(cls, miners: dict[str, str]) -> dict[str, str]:
        for pair in miners:
            parts = pair.split("-")
            if len(parts) != 2 or parts[0] == parts[1] or not all(p in MODALITIES for p in parts):
                raise ValueError(f"miners: key {pair!r} is not a pair of two modalities such as audio-text "
                                 f"(modalities: {', '.join(MODALITIES)})")
        return miners


CHUNK = 8192  # rows per chunk when mining and validating: [CHUNK, K, dim] candidates at a time


class _Held:
    """Every item's candidates and router inputs of each modality, computed once and held."""

    def __init__(self, space: RoutedSpace, caches: CacheSet, pool: Mapping[str, np.ndarray]) -> None:
        self.candidates, self.inputs = {}, {}
        for m, keys in pool.items():
            leaf = {e.name: caches.embeddings_of_keys(e, m, keys) for e in space.leaves_for(m)}
            self.candidates[m], self.inputs[m] = space.candidates(m, leaf), space.router_input(m, leaf)

    def gather(self, m: str, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.candidates[m][rows], self.inputs[m][rows]

    def order(self, rows: Mapping[str, torch.Tensor], seed: int, epoch: int) -> torch.Tensor:
        return epoch_order(len(next(iter(rows.values()))), seed, epoch)


class _Streamed:
    """Candidates and router inputs computed on demand from the leaves' rows in their cache shards
    (one `ShardLRU` of `stream_mb` MB for every modality and leaf)."""

    def __init__(self, space: RoutedSpace, caches: CacheSet, pool: Mapping[str, np.ndarray], stream_mb: float) -> None:
        self.space = space
        self.sides: dict[str, dict[str, Side]] = {
            m: {e.name: cache_side([(caches.caches[e.name], m, keys)]) for e in space.leaves_for(m)}
            for m, keys in pool.items()}
        every = [side for sides in self.sides.values() for side in sides.values()]
        try:
            self.lru, self.window = shard_budget([f for side in every for f in side.files],
                                                 sum(side.block_bytes for side in every), stream_mb)
        except InputError as exc:
            raise InputError(f"routed.router.stream_mb: {exc}") from None

    @torch.no_grad()
    def gather(self, m: str, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        leaf = {name: side.gather(rows, self.lru) for name, side in self.sides[m].items()}
        return self.space.candidates(m, leaf), self.space.router_input(m, leaf)

    def order(self, rows: Mapping[str, torch.Tensor], seed: int, epoch: int) -> torch.Tensor:
        """Tuples in blocks of `window` shards: each tuple's shard is that of its first row (first
        modality it has, first leaf)."""
        n = len(next(iter(rows.values())))
        shard, offset = torch.full((n,), -1, dtype=torch.long), 0
        for m, r in rows.items():
            first = next(iter(self.sides[m].values()))
            todo = (shard < 0) & (r >= 0)
            shard[todo] = first.shard[r[todo]].long() + offset
            offset += len(first.shards)
        return block_order(shard, offset, self.window, seed, epoch)


@dataclass
class RouteData:
    """One split's tuples: tuple i is the item whose `id_keys` key is `keys[i]` (a seed item, for a
    mined tuple); `rows[m][i]` is its row among the split's items of m (-1 when the tuple lacks m);
    `gather(m, rows)` gives those rows' candidates [n, K, dim] and router inputs."""

    keys: np.ndarray
    rows: dict[str, torch.Tensor]
    source: _Held | _Streamed
    mined: int = 0  # how many tuples (the last ones) were mined from unimodal items

    def __len__(self) -> int:
        return len(self.keys)

    def gather(self, m: str, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.source.gather(m, rows)

    def order(self, seed: int, epoch: int) -> torch.Tensor:
        """The (seed, epoch)-determined order of the tuples in one epoch."""
        return self.source.order(self.rows, seed, epoch)


def _uniform_chunks(source: _Held | _Streamed, m: str, rows: torch.Tensor):
    """The uniform mixture of m's candidates at `rows`, chunk by chunk (FAISS `build_index`/`search` chunks)."""
    for start in range(0, len(rows), CHUNK):
        cands, _ = source.gather(m, rows[start:start + CHUNK])
        yield list(range(start, start + len(cands))), mix(cands, cands.new_full(cands.shape[:2], 1.0 / cands.shape[1]))


def _leaf_chunks(caches: CacheSet, leaf: Expert, m: str, keys: np.ndarray):
    """A leaf's normalised embeddings of the items `keys`, chunk by chunk."""
    for start in range(0, len(keys), CHUNK):
        part = keys[start:start + CHUNK]
        yield list(range(start, start + len(part))), F.normalize(caches.embeddings_of_keys(leaf, m, part), dim=-1)


def _source(space: RoutedSpace, caches: CacheSet, pool: Mapping[str, np.ndarray], split: str, stream_mb: float | None,
            progress: bool) -> _Held | _Streamed:
    """Held candidates, or with `stream_mb` and every leaf's cache on disk, streamed ones (a status
    line says which under `stream_mb`)."""
    if stream_mb is None:
        return _Held(space, caches, pool)
    memory = [leaf.name for leaf in space.leaves() if not isinstance(caches.caches.get(leaf.name), EmbeddingCache)]
    if memory:
        note(f"router tuples of the {split} split held in memory, not streamed (routed.router.stream_mb): the cache "
             f"of {memory[0]!r} is not an embedding cache on disk", progress)
        return _Held(space, caches, pool)
    note(f"router tuples of the {split} split computed from the cache shards (at most {stream_mb:g} MB held)", progress)
    return _Streamed(space, caches, pool, stream_mb)


@torch.no_grad()
def route_data(space: RoutedSpace, caches: CacheSet, dataset: Dataset, split: str,
               miners: Mapping[str, str] | None = None, stream_mb: float | None = None,
               progress: bool = False, index: MiningIndex | None = None) -> RouteData:
    """The tuples of a split, from the caches: every item carrying two or more of the space's
    modalities, then one pseudo tuple per unimodal item (OmniBind's unpaired pools): the item with
    its nearest item of every other modality, found by FAISS search (`index`: exact flat by
    default) over the split's items in the pair's miner (see `tuple_miner`).
    `stream_mb`: see `RouterConfig` (caches not on disk are held regardless); `progress`: status lines."""
    index = index or MiningIndex()
    mods = list(space.modalities)
    # the split's items carrying any of the space's modalities: their keys and which they carry
    keys, carries = _split_table(dataset, split, mods)
    row_of: dict[str, np.ndarray] = {}  # per modality, each item's row among its usable items, or -1
    pool: dict[str, np.ndarray] = {}  # per modality, the keys of its usable items, in split order
    for j, m in enumerate(mods):
        at = np.flatnonzero(carries[:, j])
        at = at[caches.usable(space, m, keys[at])]
        if len(at):
            row_of[m] = np.full(len(keys), -1, dtype=np.int64)
            row_of[m][at] = np.arange(len(at))
            pool[m] = keys[at]
    source = _source(space, caches, pool, split, stream_mb, progress)
    count = sum((r >= 0).astype(np.int64) for r in row_of.values()) if row_of else np.zeros(len(keys), dtype=np.int64)
    paired = np.flatnonzero(count >= 2)
    seeds = {m: np.flatnonzero((r >= 0) & (count == 1)) for m, r in row_of.items()}
    tuples = np.concatenate([paired, *seeds.values()]) if row_of else paired
    rows = {m: torch.from_numpy(r[tuples]) for m, r in row_of.items()}
    start = len(paired)
    for m, seed_at in seeds.items():
        if not len(seed_at):
            continue
        own = torch.from_numpy(row_of[m][seed_at])
        span = slice(start, start + len(own))
        rows[m][span] = own
        for other in row_of:
            if other == m:
                continue
            miner = tuple_miner(space, m, other, miners or {})
            if miner is None:
                everyone = torch.arange(len(pool[other]))
                rows[other][span] = _nearest(_uniform_chunks(source, m, own), _uniform_chunks(source, other, everyone),
                                             space.dim, index, f"{split} {m}→{other}")
            else:
                leaf = space._leaf(miner)
                rows[other][span] = _nearest(_leaf_chunks(caches, leaf, m, keys[seed_at]),
                                             _leaf_chunks(caches, leaf, other, pool[other]), leaf.dim, index,
                                             f"{split} {m}→{other}")
        start += len(own)
    return RouteData(keys[tuples], rows, source, mined=len(tuples) - len(paired))


def _split_table(dataset: Dataset, split: str, mods: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The `id_keys` of the split's items carrying any of `mods`, in split order, and a bool
    [items, len(mods)] of which each carries (ids hashed a chunk at a time, not kept)."""
    keys, carries, ids, flags = [], [], [], []

    def flush() -> None:
        keys.append(id_keys(ids))
        carries.append(np.array(flags, dtype=bool).reshape(-1, len(mods)))
        ids.clear()
        flags.clear()

    for it in dataset.iter_items(split):
        carried = [m in it.fields for m in mods]
        if any(carried):
            ids.append(it.id)
            flags.append(carried)
            if len(ids) == CHUNK:
                flush()
    flush()
    return np.concatenate(keys), np.concatenate(carries)


def tuple_miner(space: RoutedSpace, a: str, b: str, miners: Mapping[str, str]) -> str | None:
    """The expert whose space mines a's partners in b for router tuples: `miners["a-b"]` (or
    `"b-a"`) when given, else the leaf covering both with the fewest modalities (the pair's
    specialist, e.g. an audio-text expert for audio↔text); None (the uniform mixture) when no leaf
    covers both."""
    leaves = [leaf for leaf in space.leaves() if a in leaf.modalities and b in leaf.modalities]
    named = miners.get(f"{a}-{b}") or miners.get(f"{b}-{a}")
    if named is not None:
        if named not in {leaf.name for leaf in leaves}:
            raise InputError(f"router miners: {named!r} for {a}-{b} is not an expert of the space covering both "
                             f"({', '.join(leaf.name for leaf in leaves) or 'none does'})")
        return named
    return min(leaves, key=lambda leaf: len(leaf.modalities)).name if leaves else None


def _nearest(queries, gallery, dim: int, index: MiningIndex, what: str) -> torch.Tensor:
    """Row of each query's nearest gallery item (inner product) through a FAISS index of `index`'s
    kind; both given as `(positions, embeddings)` chunks. `what` names the mining in errors."""
    try:
        built, _ = build_index(gallery, dim, index.kind, index.index_options())
    except InputError as exc:
        raise InputError(f"routed.router.index, mining {what}: {exc}") from None
    _, _, found = search(built, queries, 1)
    return found[:, 0]


def _routed(space: RoutedSpace, routers: Mapping[str, nn.Module], data: RouteData, m: str,
            positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Routed embeddings of m for the batch positions that have m, the mask of those positions, and
    their candidates."""
    rows = data.rows[m][positions]
    present = rows >= 0
    cands, inputs = data.gather(m, rows[present])
    weights = routing_weights(routers.get(m), inputs, cands.shape[1], space.scales[m])
    return mix(cands, weights), present, cands


def router_loss(space: RoutedSpace, routers: Mapping[str, nn.Module], data: RouteData, positions: torch.Tensor,
                config: RouterConfig) -> torch.Tensor:
    """(1) mean pairwise InfoNCE + `decoupling` × (2) the text regret (see the module docstring)."""
    scale = 1.0 / config.temperature
    # a modality on fewer than two tuples of the batch takes part in no pair (and a router's
    # BatchNorm cannot train on one row)
    routed = {m: _routed(space, routers, data, m, positions) for m in data.rows
              if int((data.rows[m][positions] >= 0).sum()) >= 2}
    pair_losses, regrets = [], []
    for a, b in modality_pairs(list(routed)):
        (ea, pa, _), (eb, pb, _) = routed[a], routed[b]
        both = pa & pb
        if int(both.sum()) < 2:
            continue
        xa, xb = ea[both[pa]], eb[both[pb]]
        pair_losses.append(info_nce(xa, xb, scale))
        if config.decoupling > 0 and "text" in (a, b) and "text" in routers:
            text, other = (xa, xb) if a == "text" else (xb, xa)
            singles = F.normalize(routed["text"][2][both[routed["text"][1]]], dim=-1)
            best = min(float(info_nce(singles[:, k], other.detach(), scale)) for k in range(singles.shape[1]))
            regrets.append(F.relu(info_nce(text, other.detach(), scale) - best))
    if not pair_losses:
        raise InputError("router training: no batch holds two items sharing two modalities")
    loss = torch.stack(pair_losses).mean()
    if regrets:
        loss = loss + config.decoupling * torch.stack(regrets).mean()
    return loss


@torch.no_grad()
def mean_pair_recall(space: RoutedSpace, routers: Mapping[str, nn.Module], data: RouteData) -> float:
    """Mean R@1 over every modality pair and direction of a split's tuples (routed chunk by chunk).
    A tuple sharing the query's item (a partner mined for several seeds) counts as correct, as the
    projectors' `recall_at_1` counts repeated rows."""
    routed = {}
    for m in data.rows:
        parts = [_routed(space, routers, data, m, torch.arange(i, min(i + CHUNK, len(data))))[:2]
                 for i in range(0, len(data), CHUNK)]
        routed[m] = (torch.cat([e for e, _ in parts]), torch.cat([p for _, p in parts]))
    scores = []
    for a, b in modality_pairs(list(routed)):
        (ea, pa), (eb, pb) = routed[a], routed[b]
        both = pa & pb
        if int(both.sum()) == 0:
            continue
        xa, xb = ea[both[pa]], eb[both[pb]]
        ra, rb = data.rows[a][both], data.rows[b][both]
        scores += [recall_at_1(nn.Identity(), xa, xb, groups=(ra, rb)), recall_at_1(nn.Identity(), xb, xa, groups=(rb, ra))]
    return sum(scores) / len(scores) if scores else float("nan")


def train_routers(space: RoutedSpace, caches: CacheSet, dataset: Dataset, config: RouterConfig | None = None,
                  progress: bool = True) -> RoutedSpace:
    """Train one router per modality with two or more candidates (projectors frozen); returns the
    routed space with them (`space`'s own routers, if any, are replaced) and the record of their
    training in `choices["router"]`: the split scored, the kept epoch and its score, and per epoch
    the mean loss, the mean pair R@1 (`mean_pair_recall`) and the learning rate."""
    config = config or RouterConfig()
    train, val = (route_data(space, caches, dataset, split, config.miners, config.stream_mb, progress, config.index)
                  for split in ("train", "val"))
    if len(train) < 2:
        raise InputError(f"router training: the train split of {dataset.root} has {len(train)} tuples "
                         f"(items with two or more of {list(space.modalities)}, or unimodal items to mine "
                         f"partners for); need at least 2")
    routed_mods = [m for m in train.rows if len(space.routes(m)) > 1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        routers = nn.ModuleDict({m: Router(space.router_input_dim(m), len(space.routes(m)), config.hidden)
                                 for m in routed_mods})
    optimizer = adamw(routers.parameters(), config.lr, config.weight_decay)
    batch = min(config.batch_size, len(train))
    steps = max(1, len(train) // batch)
    scheduler = warmup_cosine(optimizer, steps * config.epochs, config.warmup)
    best, best_val, best_epoch = None, -math.inf, -1
    history: list[dict[str, Any]] = []
    for epoch in track(range(config.epochs), "training routers", show=progress, unit="epochs"):
        routers.train()
        order = train.order(config.seed, epoch)
        total = 0.0
        for step in range(steps):
            loss = router_loss(space, dict(routers), train, order[step * batch:(step + 1) * batch], config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach())
        routers.eval()
        score = mean_pair_recall(space, dict(routers), val if len(val) else train)
        history.append({"epoch": epoch, "loss": total / steps, "val_recall@1": score, "lr": scheduler.get_last_lr()[0]})
        if math.isnan(score) or score > best_val:  # NaN: no modality pair to score, the last epoch is kept
            best_val, best_epoch = score, epoch
            best = {k: v.detach().clone() for k, v in routers.state_dict().items()}
        if epoch - best_epoch >= config.patience:
            break
    routers.load_state_dict(best)
    heads = {k: v for k, v in space.heads.items() if not k.startswith(ROUTER_PREFIX)}
    heads.update({f"{ROUTER_PREFIX}{m}": r.eval() for m, r in routers.items()})
    record = {"split": "val" if len(val) else "train", "best_epoch": best_epoch, "best": best_val,
              "modalities": routed_mods, "history": history}
    return space._replaced(heads=heads, choices={**space.choices, "router": record})


def remap(target: Space, members: Sequence[Space], caches: CacheSet, dataset: Dataset, *,
          scales: Mapping[str, float] | None = None, inputs: Mapping[str, Sequence[str]] | None = None,
          work_dir: Path | None = None, name: str | None = None, progress: bool = True,
          **head_kwargs) -> RoutedSpace:
    """Remap every member into `target` with a projector each (`head_kwargs` as `train_head`:
    `projector`, `mixture`, `pairing`, `pseudo`, `train`, …); the uniform routed space (no routers).
    Each member trains on the `pseudo` datasets it can use (see `member_pseudo`)."""
    heads = {}
    modalities = {leaf.name: leaf.modalities for space in (target, *members) for leaf in space.leaves()}
    modalities |= {member.name: member.modalities for member in members}
    for member in members:
        ckpt = work_dir / member.name if work_dir is not None else None
        miner = head_kwargs.get("miner") or member.name
        kwargs = {**head_kwargs, "miner": miner}
        if head_kwargs.get("pseudo"):
            kwargs["pseudo"] = member_pseudo(head_kwargs["pseudo"], member.name, modalities, target.modalities)
        heads[member.name], _ = train_head(member, target, caches, dataset, checkpoint_dir=ckpt, progress=progress,
                                           **kwargs)
    return RoutedSpace(target, list(members), heads, scales=scales, inputs=inputs, name=name)


def member_pseudo(pseudo: Sequence[PseudoDataset], member: str, modalities: Mapping[str, Sequence[str]],
                  target: Sequence[str]) -> list[PseudoDataset]:
    """The routed stage's pseudo datasets restricted to what one member (by name; `modalities`: each
    expert's modalities by name, `target`: the target space's) can learn from: those whose seed the
    member covers, with the partners its miner (default: the member) and the target cover. A
    dataset left with no partners is kept only when the target covers its seed (same-item pairs)."""
    kept = []
    for spec in pseudo:
        own = modalities[member]
        miner = modalities.get(spec.miner or member, own)
        if spec.seed not in own or spec.seed not in miner:
            continue
        partners = [p for p in spec.partners if p in miner and p in target]
        if partners or spec.seed in target:
            kept.append(spec.model_copy(update={"partners": partners}))
    if not kept:
        raise InputError(f"routed stage: none of the pseudo datasets {[s.label for s in pseudo]} applies to "
                         f"{member!r} {list(modalities[member])}")
    return kept


def train_routed(target: Space, members: Sequence[Space], caches: CacheSet, dataset: Dataset, *,
                 router: RouterConfig | None = None, train: TrainConfig | None = None,
                 progress: bool = True, **kwargs) -> RoutedSpace:
    """`remap` then `train_routers`: OmniBind's routed space over `target` and `members`; with
    `router.channel` and a val split, then `choose_channels`."""
    router = router or RouterConfig()
    uniform = remap(target, members, caches, dataset, train=train, progress=progress, **kwargs)
    routed = train_routers(uniform, caches, dataset, router, progress=progress)
    if not router.channel or not dataset.count("val"):
        return routed
    return choose_channels(routed, caches, dataset, groups=router.groups)
