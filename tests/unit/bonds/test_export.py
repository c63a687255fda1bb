"""Export of the trained part: each modality's program gives what `combine` gives, at any batch size."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from toy_experts import multi_expert
from typer.testing import CliRunner

from spacebind.bonds.bind import BoundSpace
from spacebind.bonds.export import export_programs
from spacebind.bonds.mixture import ProjectorMixture
from spacebind.bonds.projector import MLPProjector
from spacebind.bonds.route import ROUTER_PREFIX, RoutedSpace
from spacebind.bonds.router import Router
from spacebind.cli import app
from spacebind.errors import InputError


def warmed(head: torch.nn.Module, width: int) -> torch.nn.Module:
    head.train()
    with torch.no_grad():
        for _ in range(3):
            head(torch.randn(16, width))
    return head.eval()


def routed_then_bound() -> BoundSpace:
    torch.manual_seed(0)
    t, a = multi_expert("T", 6, ("text", "image"), 0), multi_expert("A", 5, ("text", "image"), 1)
    router = warmed(Router(6 + 5, 2, hidden=(8, 4)), 11)
    with torch.no_grad():
        router.net[-1].weight.normal_()
    routed = RoutedSpace(t, [a], {"A": warmed(MLPProjector(5, 6, hidden=8), 5), f"{ROUTER_PREFIX}text": router})
    c = multi_expert("C", 4, ("text", "point"), 2)
    mixture = ProjectorMixture([warmed(MLPProjector(4, 6, hidden=8), 4) for _ in range(2)], sources=[["text"], ["text", "point"]])
    return BoundSpace(routed, [c], "combination", {"C": mixture}, lambdas={"text": 0.3, "point": 0.6})


def routed_with_channel() -> RoutedSpace:
    """T (text, image, point) with the image-text specialist A remapped, A's channel at κ 0.6."""
    torch.manual_seed(0)
    t, a = multi_expert("T", 6, ("text", "image", "point"), 0), multi_expert("A", 5, ("text", "image"), 1)
    routed = RoutedSpace(t, [a], {"A": warmed(MLPProjector(5, 6, hidden=8), 5)}, channels={"A": 0.6})
    assert routed.dim == 6 + 5
    return routed


def bound_with_channel() -> BoundSpace:
    """U (text, image) + c(E (text, audio)) with a channel: image takes the channel's zero padding."""
    torch.manual_seed(0)
    u, e = multi_expert("U", 6, ("text", "image"), 0), multi_expert("E", 5, ("text", "audio"), 1)
    return BoundSpace(u, [e], "combination", {"E": warmed(MLPProjector(5, 6, hidden=8), 5)},
                      lambdas={"text": 0.3}, channels={"text": 0.5, "audio": 0.7})


@pytest.mark.parametrize("build", [routed_then_bound, routed_with_channel, bound_with_channel])
def test_exported_modules_match_combine_on_any_batch_size(tmp_path: Path, build) -> None:
    space = build()
    flags = [p.requires_grad for node in space.bonds() for h in node.heads.values() for p in h.parameters()]
    out = export_programs(space, tmp_path / "export")
    assert [p.requires_grad for node in space.bonds() for h in node.heads.values() for p in h.parameters()] == flags  # the space itself is left as it was
    spec = json.loads((out / "export.json").read_text())
    assert set(spec["modalities"]) == set(space.modalities)
    for m, entry in spec["modalities"].items():
        module = torch.export.load(str(out / entry["file"])).module()
        leaves = {i["expert"]: F.normalize(torch.randn(7, i["dim"]), dim=-1) for i in entry["inputs"]}
        got = module(*leaves.values())
        torch.testing.assert_close(got, space.combine(m, leaves), atol=1e-5, rtol=0)
        assert got.shape == (7, space.dim) and not got.requires_grad  # serving output: no autograd graph
        raw = [3.0 * x for x in leaves.values()]  # raw expert outputs need not be unit-norm (ImageBind's are not)
        torch.testing.assert_close(module(*raw), got, atol=1e-5, rtol=0)


def test_export_command_and_errors(tmp_path: Path) -> None:
    space = routed_then_bound()
    with pytest.raises(InputError, match="no trained part"):
        export_programs(multi_expert("T", 6, ("text",), 0), tmp_path / "x")
    space.save(tmp_path / "fused")
    experts = " ".join(leaf.name for leaf in space.leaves())
    result = CliRunner().invoke(app, ["export", str(tmp_path / "fused"), "--out", str(tmp_path / "exported")])
    # the toy experts were built in memory: the checkpoint cannot rebuild them, and says so
    assert result.exit_code == 2 and "built in memory" in result.output, (result.output, experts)
