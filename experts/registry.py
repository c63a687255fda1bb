"""The expert registry: `@EXPERTS.register(name, modalities=..., dim=...)` on a factory."""
from __future__ import annotations

from spacebind.registry import EXPERTS
from spacebind.space import Expert


def create_expert(name: str, **kwargs: object) -> Expert:
    """Build a registered expert."""
    return EXPERTS.create(name, **kwargs)


def list_experts(pattern: str = "*") -> list[str]:
    """Registered expert names matching a wildcard pattern."""
    return EXPERTS.list(pattern)
