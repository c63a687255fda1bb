"""Rebuild any projector head from its `config` (for loading fused checkpoints)."""
from __future__ import annotations

from typing import Any

from torch import nn

from spacebind.bonds.baselines import LinearMap
from spacebind.bonds.mixture import ProjectorMixture
from spacebind.bonds.projector import MLPProjector
from spacebind.bonds.relative import RelativeMap
from spacebind.bonds.routed import Router
from spacebind.errors import CheckpointError

HEAD_TYPES: tuple[str, ...] = ("mlp", "linear", "procrustes", "relative", "mixture", "router")


def head_from_config(config: dict[str, Any]) -> nn.Module:
    """A freshly initialised head of the described shape, in eval mode, for `load_state_dict`.

    Raises:
        CheckpointError: unknown head type or a missing field.
    """
    kind = config.get("type")
    try:
        if kind == "mlp":
            head: nn.Module = MLPProjector(config["in_dim"], config["out_dim"], config["hidden"])
        elif kind in ("linear", "procrustes"):
            head = LinearMap(config["in_dim"], config["out_dim"], kind)
        elif kind == "relative":
            head = RelativeMap(config["in_dim"], config["out_dim"], config["anchors"], config["k"], config["power"])
        elif kind == "mixture":
            head = ProjectorMixture([head_from_config(c) for c in config["members"]])
        elif kind == "router":
            head = Router(config["in_dim"], config["out_dim"], config["hidden"])
        else:
            raise CheckpointError(f"unknown head type {kind!r}; expected one of {', '.join(HEAD_TYPES)}")
    except KeyError as exc:
        raise CheckpointError(f"head config of type {kind!r} lacks the field {exc.args[0]!r}: {config}") from None
    return head.eval()
