"""The tree node every bond kind shares, and the registry of bond kinds.

A bond node is a space built from a `base` space and member spaces (`experts`) with trained
`heads` (see `spacebind.bonds.heads`). Its children may be experts or bond nodes of any kind, so
bonds compose: `leaves()` are the distinct experts below, `bonds()` every node in post-order (the
order of the `bonds.<i>.` keys in a fused checkpoint). Each kind registers its class with
`@register_bond(kind, ...)`, describes itself with `to_config` and rebuilds with `from_config`."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence, TypeVar

from torch import nn

from spacebind.bonds.lambdas import CHANNEL
from spacebind.errors import InputError
from spacebind.modalities import MODALITIES
from spacebind.registry import Registry
from spacebind.space import Expert, Space

BONDS: Registry[type] = Registry("bond kind")
B = TypeVar("B", bound=type)
S = TypeVar("S", bound=Space)


def register_bond(*kinds: str, section: str, description: str = "") -> Callable[[B], B]:
    """Class decorator: register a bond node class under its kind names. `section` is the recipe
    section that builds the kind (`bonds` for sequential bonds, `routed` for routed stages)."""

    def decorate(cls: B) -> B:
        for kind in kinds:
            BONDS.register(kind, description=description, extra={"section": section})(cls)
        return cls

    return decorate


def bond_kinds(section: str) -> list[str]:
    """The registered kinds a recipe section builds."""
    return [k for k in BONDS.list() if BONDS.entry(k).extra.get("section") == section]


class BondNode(Space):
    """Base of bound and routed spaces: `base`, member `experts`, trained `heads`, `lambdas`, `presets`."""

    kind: str
    base: Space
    experts: list[Space]
    heads: dict[str, nn.Module]
    lambdas: dict[str, float]
    presets: dict[str, dict[str, float]]

    def _init_node(self, base: Space, experts: Sequence[Space], heads: Mapping[str, nn.Module], owner: str) -> None:
        """Set the tree fields shared by every kind; `owner` names the kind in errors."""
        if not experts:
            raise InputError(f"a {owner} needs at least one member space besides its base")
        require_projectors(list(experts), heads, owner)
        self.base = base
        self.experts = list(experts)
        self.heads = {k: v.eval() for k, v in heads.items()}
        covered = set(base.modalities).union(*(e.modalities for e in self.experts))
        self.modalities = tuple(m for m in MODALITIES if m in covered)
        self._leaves = distinct_leaves([base, *self.experts])

    def leaves(self) -> list[Expert]:
        return list(self._leaves)

    def bonds(self) -> list["BondNode"]:
        """Every bond node in the tree, inner ones first (post-order); this one last."""
        found: list[BondNode] = []
        for child in [self.base, *self.experts]:
            if isinstance(child, BondNode):
                found.extend(child.bonds())
        return [*found, self]

    def setting_keys(self, modality: str) -> list[str]:
        """The tuned parameters (λ by modality, `channel:<…>` κ) `modality`'s embedding depends on."""
        return [modality, CHANNEL + modality]

    def settings(self) -> list[str]:
        """The parameters `with_lambdas` can set (λ by modality, `channel:<…>` κ): what `spacebind sweep` varies."""
        return []

    def setting_value(self, parameter: str) -> float:
        """The current value of one of `settings()`."""
        raise InputError(f"space {self.name!r} has no parameter {parameter!r}")

    def kind_config(self) -> dict[str, Any]:
        """Fields a kind adds to its checkpoint node (after `presets`)."""
        return {}

    def to_config(self, index: int, child: Callable[[Space], dict[str, Any]]) -> dict[str, Any]:
        """This node as JSON: `index` is its position in `bonds()`, `child` describes a child space."""
        return {
            "type": "bond", "bond": self.kind, "index": index, "name": self.name, "dim": self.dim,
            "modalities": list(self.modalities), "lambdas": self.lambdas, "presets": self.presets,
            **self.kind_config(),
            "base": child(self.base), "experts": [child(e) for e in self.experts],
            "heads": {k: h.config for k, h in self.heads.items()},
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], base: Space, experts: list[Space],
                    heads: dict[str, nn.Module]) -> "BondNode":
        """Rebuild a node of this kind from its JSON, its rebuilt children and loaded heads."""
        raise NotImplementedError

    @classmethod
    def train(cls, base: Space, experts: list[Space], kind: str, caches: Any, dataset: Any, **kwargs: Any) -> "BondNode":
        """Train a node of this kind on cached embeddings (a recipe's `bonds:` entry); kinds built
        by their own recipe section (routed) do not implement it."""
        raise InputError(f"bond kind {kind!r} cannot be trained from a recipe's bonds list: its class "
                         f"{cls.__name__} defines no `train` classmethod (docs/extending.md, \"Add a bond kind\")")

    @staticmethod
    def card_weights(config: dict[str, Any]) -> str:
        """How the node mixes its sides, for the model card's bond table."""
        return ", ".join(f"{m} {v:g}" for m, v in config["lambdas"].items())


def placed_like(source: Space, derived: S) -> S:
    """`derived` (a node built from `source`'s heads: other λ, κ, presets) on `source`'s device and
    dtype, where those heads already are."""
    derived.device, derived.dtype = source.device, source.dtype
    return derived


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
