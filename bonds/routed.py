"""OmniBind's routed space: many spaces remapped into one target space, mixed per input by routers.

The target T is a space (an expert, or a bound space such as the anchor `T0 + c(U)` with λ 0.1 on
image and text, i.e. `n(0.9·t0 + 0.1·P̄_{U→T0}(u))`). Every other member space E_k has a frozen
projector (a mixture) P̄_k into T. For a modality m, the candidates are T's own embedding (when T
covers m) and P̄_k(x^k_m) for every member covering m, and

    e_m(x) = n(Σ_k w_k(x)·c_k(x)),   w = softmax(s_m·sigmoid(g_m(r_m(x))))

where g_m is the router MLP of m, r_m the concatenation of the router-input experts' own
embeddings of x, and s_m the per-modality scale (OmniBind: 10 for text, 1 otherwise). A modality
without a trained router mixes its candidates uniformly (w_k = 1/K): the untrained routed space is
the uniform mixture. Trained by `spacebind.routing`.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from spacebind.bonds.bound import distinct_leaves, require_projectors
from spacebind.errors import InputError
from spacebind.modalities import MODALITIES, check_modality
from spacebind.space import Expert, Space

DEFAULT_SCALES: dict[str, float] = {"text": 10.0}
ROUTER_PREFIX = "router."


class Router(nn.Module):
    """g_m of OmniBind (MOE_Router_Sig): Linear → BN → ReLU → Linear → BN → tanh → Linear → sigmoid,
    one output per candidate space. Xavier-uniform weights and zero biases, except the last layer,
    which starts at zero (OmniBind: Xavier) so an untrained router is the uniform mixture."""

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int] = (512, 100)) -> None:
        super().__init__()
        self.in_dim, self.out_dim, self.hidden = int(in_dim), int(out_dim), [int(h) for h in hidden]
        h1, h2 = self.hidden
        self.net = nn.Sequential(
            nn.Linear(self.in_dim, h1), nn.BatchNorm1d(h1), nn.ReLU(),
            nn.Linear(h1, h2), nn.BatchNorm1d(h2), nn.Tanh(), nn.Linear(h2, self.out_dim),
        )
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.net[-1].weight)

    @property
    def config(self) -> dict[str, Any]:
        """What `head_from_config` needs to rebuild this router."""
        return {"type": "router", "in_dim": self.in_dim, "out_dim": self.out_dim, "hidden": self.hidden}

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(r))


def routing_weights(router: nn.Module | None, router_input: torch.Tensor, candidates: int, scale: float) -> torch.Tensor:
    """w = softmax(s·g(r)) per input row, [N, candidates]; uniform (1/K) without a router."""
    if router is None:
        return torch.full((len(router_input), candidates), 1.0 / candidates)
    return torch.softmax(scale * router(router_input), dim=-1)


def mix(candidates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """n(Σ_k w_k·c_k) from candidates [N, K, D] and weights [N, K]."""
    return F.normalize((weights.unsqueeze(-1) * candidates).sum(dim=1), dim=-1)


class RoutedSpace(Space):
    """A target space plus member spaces remapped into it, mixed per modality by routers.

    Args:
        base: the target space T (also the first candidate of every modality it covers).
        experts: the member spaces E_k, each with a projector into T in `heads[E_k.name]`.
        heads: projectors by member name, and routers by `router.<modality>` (optional per modality).
        scales: s_m per modality (default 10 for text, 1 otherwise).
        inputs: router-input leaf expert names per modality (default: every leaf covering it).
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
    ) -> None:
        if not experts:
            raise InputError("a routed space needs at least one member space besides its target")
        require_projectors(list(experts), heads, "routed space")
        self.base = base
        self.experts = list(experts)
        self.heads = {k: v.eval() for k, v in heads.items()}
        self.lambdas: dict[str, float] = {}
        self.presets: dict[str, dict[str, float]] = {}
        covered = set(base.modalities).union(*(e.modalities for e in self.experts))
        self.modalities = tuple(m for m in MODALITIES if m in covered)
        self.dim = base.dim
        self._leaves = distinct_leaves([base, *self.experts])
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

    def formula(self) -> str:
        """E.g. `(image_text + c(unified)) + r(audio_text ∥ point_text)`."""
        base = self.base.formula()
        base = base if isinstance(self.base, Expert) else f"({base})"
        return f"{base} + r({' ∥ '.join(e.formula() for e in self.experts)})"

    def leaves(self) -> list[Expert]:
        return list(self._leaves)

    def bonds(self) -> list[Space]:
        """Every bond in the tree, inner ones first (post-order); this one last."""
        found: list[Space] = []
        for child in [self.base, *self.experts]:
            if hasattr(child, "bonds"):
                found.extend(child.bonds())
        return [*found, self]

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
        return mix(self.candidates(modality, leaf_embeddings), self.weights(modality, leaf_embeddings))

    @torch.no_grad()
    def route_weights(self, modality: str, inputs: Any, batch_size: int | None = None) -> torch.Tensor:
        """The router's weights per input, [N, K], columns in `routes(modality)` order."""
        return self.weights(modality, self.leaf_embeddings(modality, inputs, batch_size))

    def uniform(self) -> "RoutedSpace":
        """The same remapped spaces mixed uniformly (no routers): OmniBind's averaging baseline."""
        heads = {k: v for k, v in self.heads.items() if not k.startswith(ROUTER_PREFIX)}
        return RoutedSpace(self.base, self.experts, heads, scales=self.scales, inputs=self.inputs,
                           name=f"{self.name} (uniform)")
