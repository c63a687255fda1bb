"""Mixture of projectors: several projectors for one pair of spaces, outputs averaged, and their training."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from spacebind.bonds.heads import head_from_config, register_head
from spacebind.errors import InputError
from spacebind.training import distributed
from spacebind.training.batched import per_member, train_projectors
from spacebind.training.trainer import TrainConfig, _is_source, train_projector

if TYPE_CHECKING:
    from spacebind.training.pairs import CachePairs


@register_head("mixture", description="several projectors for one pair of spaces, outputs averaged")
class ProjectorMixture(nn.Module):
    """P̄(x) = mean of the members' unit outputs, not renormalised here: a bond renormalises it
    before mixing it with the other side (FreeBind), a routed space mixes it as it is (OmniBind)."""

    def __init__(self, members: list[nn.Module], sources: list[list[str]] | None = None) -> None:
        super().__init__()
        if not members:
            raise InputError("a projector mixture needs at least one member, got none")
        if sources is not None and len(sources) != len(members):
            raise InputError(f"a projector mixture got {len(sources)} source lists for {len(members)} members")
        self.members = nn.ModuleList(members)
        self.sources = [list(s) for s in sources] if sources is not None else None

    def members_for(self, modality: str) -> list[nn.Module]:
        """The members trained on inputs of `modality` (all members when none or no record says so)."""
        if self.sources is None:
            return list(self.members)
        seen = [m for m, s in zip(self.members, self.sources) if modality in s]
        return seen or list(self.members)

    @property
    def config(self) -> dict[str, Any]:
        """This head described as JSON (see `spacebind.bonds.heads`)."""
        config: dict[str, Any] = {"type": "mixture", "members": [m.config for m in self.members]}
        if self.sources is not None:
            config["sources"] = self.sources
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ProjectorMixture":
        return cls([head_from_config(c) for c in config["members"]], config.get("sources"))

    @staticmethod
    def summary(config: dict[str, Any]) -> str:
        from spacebind.bonds.heads import head_summary

        return f"mixture of {len(config['members'])} × {head_summary(config['members'][0])}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(dim=0)


def _member_rows(src: torch.Tensor | CachePairs, tgt: torch.Tensor | None, rows: torch.Tensor | slice
                 ) -> tuple[torch.Tensor | CachePairs, torch.Tensor | None]:
    """A member's pairs: its rows of the tensors, or its subset of the shard source (`tgt` None)."""
    if _is_source(src):
        return (src if isinstance(rows, slice) else src.subset(rows)), None
    return src[rows], tgt[rows]


def train_mixture(
    src: torch.Tensor | CachePairs,
    tgt: torch.Tensor | None,
    *,
    n: int,
    config: TrainConfig,
    val_src: torch.Tensor | Sequence[torch.Tensor | None] | None = None,
    val_tgt: torch.Tensor | Sequence[torch.Tensor | None] | None = None,
    checkpoint_dir: Path | None = None,
    subsets: list[torch.Tensor] | None = None,
    sources: list[list[str]] | None = None,
    progress: bool = True,
    batched: bool = True,
) -> ProjectorMixture:
    """Train `n` MLP projectors and average them (FreeBind's mixture of projectors).

    Member i uses seed `config.seed + i` and, if `subsets` is given, only the rows `subsets[i]`
    (one pseudo dataset each); otherwise all rows, so members differ by initialisation and batch
    order (all rows rather than bootstrap resamples: see docs/decisions.md).
    `sources[i]` records the source modalities member i trained on: the bonds apply a member only
    to those (see `ProjectorMixture.members_for`). `val_src` / `val_tgt`: the validation pairs that
    choose every member's best epoch, or a list with member i's at i (a pseudo dataset's own val
    pairs, of the inputs it will project). Member i checkpoints under `checkpoint_dir / f"member{i}"`.

    With `batched` (the default; not under torchrun) the members train together as stacked weights
    (`spacebind.training.batched`), the same members as one by one up to float rounding, with the
    same state files; `batched=False` trains them one by one.

    `src` may be a shard source (`spacebind.training.pairs.CachePairs`, `tgt` None; see
    `train_projector`): the members then train one by one, each reading its pairs (all, or its
    subset's) from the shards in its own seed's shard-block order (batched members would read
    different shards at each step).

    Raises:
        InputError: `subsets` not of length `n`, or a subset with fewer than 2 pairs.
    """
    if subsets is not None and len(subsets) != n:
        raise InputError(f"got {len(subsets)} subsets for {n} mixture members; expected one per member")
    rows = list(subsets) if subsets is not None else [slice(None)] * n
    configs = [config.model_copy(update={"seed": config.seed + i}) for i in range(n)]
    dirs = [checkpoint_dir / f"member{i}" if checkpoint_dir is not None else None for i in range(n)]
    if batched and not distributed.is_distributed() and not _is_source(src):
        results = train_projectors(src, tgt, configs=configs, rows=rows, val_src=val_src, val_tgt=val_tgt,
                                   checkpoint_dirs=dirs, progress=progress)
    else:
        vals = zip(per_member(val_src, n), per_member(val_tgt, n))
        results = [train_projector(*_member_rows(src, tgt, r), config=c, val_src=vs, val_tgt=vt, progress=progress,
                                   checkpoint_dir=d) for r, c, d, (vs, vt) in zip(rows, configs, dirs, vals)]
    return ProjectorMixture([result.head for result in results], sources).eval()
