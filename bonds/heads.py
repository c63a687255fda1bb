"""The registry of head types. A head is the trained module of a bond: a projector from one space
into another (`mlp`, `linear`, `procrustes`, `relative`, or a `mixture` of projectors) or a router
(OmniBind). Each head type registers its class here and describes and rebuilds itself:
`head.config` (JSON) and `Class.from_config(config)`; fused checkpoints ask this registry."""
from __future__ import annotations

from typing import Any, Callable, TypeVar

from torch import nn

from spacebind.errors import CheckpointError, UnknownNameError
from spacebind.registry import Registry

HEADS: Registry[nn.Module] = Registry("head type")
H = TypeVar("H", bound=type)


def register_head(*names: str, projector: bool = False, description: str = "") -> Callable[[H], H]:
    """Class decorator: register a head class under one or more type names (its `config["type"]`).
    `projector`: a bond's `projector:` may name it (the class then trains through the projector
    trainer, `mlp`, or fits in closed form with a static `fit_pairs(kind, src, tgt, options)`, and
    from a shard source under `train.stream_mb` with an optional static `fit_source(kind, source, options)`)."""

    def decorate(cls: H) -> H:
        for name in names:
            HEADS.register(name, description=description, extra={"projector": projector})(cls)
        return cls

    return decorate


def fits_in_closed_form(kind: str) -> bool:
    """Whether projector type `kind` is fitted in closed form (`fit_pairs`), with no training run
    and so no training history; `auto` trains its MLP candidates."""
    return kind in HEADS.list() and hasattr(HEADS.entry(kind).factory, "fit_pairs")


def projector_types() -> list[str]:
    """Head types a bond's `projector:` may name."""
    return [n for n in HEADS.list() if HEADS.entry(n).extra.get("projector")]


class ConfigFromArgs:
    """Mixin for head types rebuilt from their constructor arguments: `config` is `{"type": TYPE}`
    plus the attributes named in `FIELDS`, in the constructor's order."""

    TYPE: str
    FIELDS: tuple[str, ...]

    @property
    def config(self) -> dict[str, Any]:
        """This head described as JSON."""
        return {"type": self.TYPE, **{f: getattr(self, f) for f in self.FIELDS}}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        return cls(*(config[f] for f in cls.FIELDS))


def init_linear_layers(net: nn.Sequential) -> None:
    """Xavier-uniform weights and zero biases for the Linear layers of `net`; the bias of a Linear
    that feeds a BatchNorm is also frozen. The BatchNorm subtracts any constant shift, so that
    bias's gradient is zero but for float rounding, which AdamW would turn into steps of the size
    of the learning rate: a random walk that the running mean follows with a lag, changing the
    eval-mode function (and making DDP and batched training disagree with one process)."""
    layers = list(net)
    for layer, after in zip(layers, [*layers[1:], None]):
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
            if isinstance(after, nn.modules.batchnorm._BatchNorm):
                layer.bias.requires_grad_(False)


def head_from_config(config: dict[str, Any]) -> nn.Module:
    """A freshly initialised head of the described shape, in eval mode, for `load_state_dict`.

    Raises:
        CheckpointError: unknown head type or a missing field.
    """
    kind = config.get("type")
    try:
        cls: Any = HEADS.entry(str(kind)).factory
    except UnknownNameError as exc:
        raise CheckpointError(str(exc)) from None
    try:
        head = cls.from_config(config)
    except KeyError as exc:
        raise CheckpointError(f"head config of type {kind!r} lacks the field {exc.args[0]!r}: {config}") from None
    return head.eval()


def head_summary(config: dict[str, Any]) -> str:
    """One line for model cards, e.g. `mlp 40→64` or `mixture of 3 × mlp 40→64`."""
    cls: Any = HEADS.entry(str(config.get("type"))).factory
    summary = getattr(cls, "summary", None)
    return summary(config) if summary else f"{config.get('type')} {config.get('in_dim')}→{config.get('out_dim')}"
