"""Mutation gap (route.py, Ro7): the language-representation decoupling term (the text regret)
holds the paired modality's routed side fixed, so it trains the text router only: adding it
(`decoupling` > 0) must not change the gradient of another modality's router."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import spacebind

sys.path.insert(0, str(Path(spacebind.__file__).resolve().parents[1] / "tests" / "helpers"))
from toy_experts import table_expert  # noqa: E402

from spacebind.bonds.linear import LinearMap  # noqa: E402
from spacebind.bonds.route import RouteData, RoutedSpace, RouterConfig, router_loss  # noqa: E402
from spacebind.bonds.router import Router  # noqa: E402

N = 8


class Rows:
    def __init__(self, routed: RoutedSpace, leaves: dict[str, dict[str, torch.Tensor]]) -> None:
        self.routed, self.leaves = routed, leaves

    def gather(self, m: str, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        leaf = {name: emb[rows] for name, emb in self.leaves[m].items()}
        return self.routed.candidates(m, leaf), self.routed.router_input(m, leaf)


def setup():
    head = LinearMap(6, 8)
    with torch.no_grad():
        head.weight.copy_(torch.randn(6, 8, generator=torch.Generator().manual_seed(3)))
        head.bias.zero_()
    routed = RoutedSpace(table_expert("T", 8, ("text", "audio"), 1), [table_expert("A", 6, ("text", "audio"), 2)],
                         {"A": head.eval()})
    g = torch.Generator().manual_seed(0)
    unit = lambda dim: F.normalize(torch.randn(N, dim, generator=g), dim=-1)  # noqa: E731
    leaves = {"text": {"T": unit(8), "A": unit(6)}, "audio": {"T": unit(8), "A": unit(6)}}
    data = RouteData(np.zeros((N, 2), dtype=np.uint64), {m: torch.arange(N) for m in ("text", "audio")},
                     Rows(routed, leaves))
    torch.manual_seed(0)
    routers = {m: Router(14, 2, (8, 4)) for m in ("text", "audio")}
    for r in routers.values():
        torch.nn.init.normal_(r.net[-1].weight)  # trained-looking: candidates weighted unevenly
        r.eval()
    return routed, routers, data


def audio_grads(decoupling: float) -> tuple[float, list[torch.Tensor]]:
    routed, routers, data = setup()
    config = RouterConfig(temperature=0.1, decoupling=decoupling)
    loss = router_loss(routed, routers, data, torch.arange(N), config)
    loss.backward()
    return float(loss.detach()), [p.grad.clone() for p in routers["audio"].parameters() if p.grad is not None]


def test_the_text_regret_sends_no_gradient_to_the_other_modalitys_router() -> None:
    with_regret, g1 = audio_grads(1.0)
    without, g0 = audio_grads(0.0)
    assert with_regret > without + 1e-3  # the regret is active in this batch
    assert len(g1) == len(g0) > 0
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


class Fixed:
    """Candidates given directly: one per row (K = 1), no router input."""

    def __init__(self, rows: dict[str, torch.Tensor]) -> None:
        self.rows = rows

    def gather(self, m: str, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rows[m][rows].unsqueeze(1), torch.zeros(len(rows), 0)


def test_validation_recall_is_the_mean_of_both_directions() -> None:
    """Ro14: the routers' val score is the mean R@1 over each modality pair in *both* directions."""
    from types import SimpleNamespace

    from spacebind.bonds.route import mean_pair_recall

    text = torch.eye(3)
    audio = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 1.0]])  # clip 1 is nearer text 0 than text 1
    sims = text @ audio.T
    t2a = float((sims.argmax(dim=1) == torch.arange(3)).float().mean())
    a2t = float((sims.argmax(dim=0) == torch.arange(3)).float().mean())
    assert t2a != a2t
    data = RouteData(np.zeros((3, 2), dtype=np.uint64), {"text": torch.arange(3), "audio": torch.arange(3)},
                     Fixed({"text": text, "audio": audio}))
    scales = SimpleNamespace(scales={"text": 1.0, "audio": 1.0})
    assert abs(mean_pair_recall(scales, {}, data) - (t2a + a2t) / 2) < 1e-6


def test_a_pseudo_dataset_left_without_partners_is_kept_when_the_target_covers_its_seed() -> None:
    """Ro16 (`member_pseudo`): partners the member's miner cannot retrieve are dropped; a dataset left
    with none still trains the member on same-item pairs when the target covers its seed, and is
    dropped when it does not."""
    from spacebind.bonds.route import member_pseudo
    from spacebind.retrieval.pseudo import PseudoDataset

    leaves = {"T": ("image", "text", "audio"), "AT": ("audio", "text")}
    specs = [PseudoDataset(seed="audio", partners=["image"]), PseudoDataset(seed="text", partners=["audio"])]
    kept = member_pseudo(specs, "AT", leaves, ("image", "text", "audio"))
    assert [(s.seed, s.partners) for s in kept] == [("audio", []), ("text", ["audio"])]
    kept = member_pseudo(specs, "AT", leaves, ("image", "text"))  # the target lacks audio
    assert [(s.seed, s.partners) for s in kept] == [("text", [])]
