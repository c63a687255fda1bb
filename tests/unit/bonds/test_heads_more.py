"""heads.py: the one-line head summary shown on model cards must read
source→target (in_dim→out_dim), for a plain head and inside a mixture."""
from __future__ import annotations

import torch

from spacebind.bonds.heads import head_summary
from spacebind.bonds.mixture import ProjectorMixture
from spacebind.bonds.projector import MLPProjector


def test_head_summary_reads_from_the_source_dim_to_the_target_dim() -> None:
    torch.manual_seed(0)
    mlp = MLPProjector(40, 64, hidden=8)
    assert head_summary(mlp.config) == "mlp 40→64"
    mix = ProjectorMixture([MLPProjector(40, 64, hidden=8) for _ in range(3)])
    assert head_summary(mix.config) == "mixture of 3 × mlp 40→64"
