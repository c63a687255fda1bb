"""The modalities spacebind knows, and their checks."""
from __future__ import annotations

import difflib

from spacebind.errors import InputError

MODALITIES: tuple[str, ...] = (
    "text", "image", "audio", "point", "video", "depth", "thermal", "event", "imu",
)


def check_modality(modality: str, allowed: tuple[str, ...] | list[str] | None = None, *, owner: str = "") -> str:
    """Return `modality` if known (and in `allowed`), else raise an InputError naming the choices."""
    choices = tuple(allowed) if allowed is not None else MODALITIES
    if modality in choices:
        return modality
    near = difflib.get_close_matches(str(modality), choices, n=1)
    hint = f" Did you mean {near[0]!r}?" if near else ""
    where = f" {owner}" if owner else ""
    raise InputError(
        f"unknown modality {modality!r} for{where or ' spacebind'}; expected one of {', '.join(choices)}.{hint}"
    )


def modality_pairs(modalities: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    """Unordered pairs of distinct modalities, in MODALITIES order."""
    ordered = [m for m in MODALITIES if m in modalities]
    return [(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1:]]
