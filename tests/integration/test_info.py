"""Cost accounting (`spacebind info`): frozen expert parameters, trained head parameters, and the
formula and dimension of every stage, checked against the modules' own parameter counts."""
from __future__ import annotations

from pathlib import Path

import torch
from typer.testing import CliRunner

import spacebind
from spacebind.cli import app
from spacebind.evaluation.cost import describe
from spacebind.experts.registry import EXPERTS
from spacebind.space import Space
from spacebind.training.trainer import TrainConfig
from spacebind.world.experts import CONFIGS
from spacebind.world.training import trained_towers


def towers_params(name: str) -> int:
    towers, _ = trained_towers(CONFIGS[name], 0, 24, progress=False)
    return sum(p.numel() for p in towers.parameters())


def test_info_counts_frozen_experts_and_trained_heads_per_stage(small_world, tmp_path: Path, one_thread) -> None:
    unified, point_text, audio_text = (EXPERTS.create(n).renamed(a) for n, a in
                                       (("world_unified", "U"), ("world_point_text", "PT"), ("world_audio_text", "AT")))
    inner = unified.bind(point_text, "displacement", data=small_world, projector="linear", channel=False,
                         cache_dir=tmp_path / "c", progress=False)
    space = inner.bind(audio_text, "combination", data=small_world, mixture=2, cache_dir=tmp_path / "c", progress=False,
                       train=TrainConfig(epochs=1, hidden=32), projector="mlp", channel=False)
    info = describe(space)
    frozen = {"U": towers_params("world_unified"), "PT": towers_params("world_point_text"), "AT": towers_params("world_audio_text")}
    assert {e.name: e.frozen for e in info.experts} == frozen
    trained = [sum(p.numel() for h in bond.heads.values() for p in h.parameters()) for bond in space.bonds()]
    assert trained[0] == 64 * 32 + 32  # least squares U (64) → PT (32), with bias
    assert trained[1] == 2 * sum(p.numel() for p in space.heads["AT"].members[0].parameters()) > 0
    assert [(s.formula, s.dim, s.trained, s.depth) for s in info.stages] == [
        ("U + d(PT)", 32, trained[0], 1), ("(U + d(PT)) + c(AT)", 32, trained[1], 0)]
    assert (info.frozen, info.trained) == (sum(frozen.values()), sum(trained))

    space.save(tmp_path / "fused")
    ran = CliRunner().invoke(app, ["info", str(tmp_path / "fused")])
    assert ran.exit_code == 0, ran.output
    for number in [*frozen.values(), *trained, sum(frozen.values()), sum(trained), sum(frozen.values()) + sum(trained)]:
        assert f"{number:,}" in ran.output, number
    assert "(U + d(PT)) + c(AT)" in ran.output and "displacement" in ran.output
    assert describe(spacebind.load(tmp_path / "fused")) == info


def test_info_of_a_user_space_with_plain_callables_reports_unknown_counts() -> None:
    mine = Space.from_encoders("mine", {"text": lambda xs: torch.ones(len(xs), 4)}, dim=4)
    info = describe(mine)
    assert info.experts[0].frozen is None and info.stages == [] and info.frozen == 0
    module = torch.nn.Linear(3, 4)
    wrapped = Space.from_encoders("wrapped", {"point": lambda xs: module(torch.stack([torch.as_tensor(x).mean(0) for x in xs]))}, dim=4)
    assert describe(wrapped).experts[0].frozen == 16
