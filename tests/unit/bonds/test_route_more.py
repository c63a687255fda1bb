"""route.py: the language-representation decoupling term (the text regret)
holds the paired modality's routed side fixed, so it trains the text router only: adding it
(`decoupling` > 0) must not change the gradient of another modality's router."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from test_router_loss import Rows
from toy_experts import table_expert

from spacebind.bonds.linear import LinearMap
from spacebind.bonds.route import RouteData, RoutedSpace, RouterConfig, router_loss
from spacebind.bonds.router import Router

N = 8


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


def test_a_pseudo_dataset_left_without_partners_is_kept_when_the_target_covers_its_seed() -> None:
    """partners the member's miner cannot retrieve are dropped; a dataset left
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
