"""router.py: without a router the routing weights are the uniform mixture,
w_k = 1/K per row (rows sum to 1), both from `routing_weights` and from a routed space's
`route_weights` / `weights` (which callers read as a distribution over `routes(m)`); and the k-th weight column / candidate is the space `routes(m)[k]` names (the target first)."""
from __future__ import annotations

import torch
from toy_experts import table_expert

from spacebind.bonds.linear import LinearMap
from spacebind.bonds.route import RoutedSpace
from spacebind.bonds.router import mix, routing_weights


def test_no_router_gives_weights_of_one_over_k_that_sum_to_one() -> None:
    w = routing_weights(None, torch.randn(5, 7), candidates=4, scale=10.0)
    torch.testing.assert_close(w, torch.full((5, 4), 0.25))
    torch.testing.assert_close(w.sum(dim=1), torch.ones(5))


def test_an_unrouted_space_reports_uniform_weights_and_mixes_the_candidate_mean() -> None:
    heads = {}
    for name, dim in (("A", 6), ("B", 5)):
        head = LinearMap(dim, 8)
        with torch.no_grad():
            head.weight.copy_(torch.randn(dim, 8, generator=torch.Generator().manual_seed(dim)))
            head.bias.zero_()
        heads[name] = head.eval()
    space = RoutedSpace(table_expert("T", 8, ("text", "image"), 1),
                        [table_expert("A", 6, ("text", "audio"), 2), table_expert("B", 5, ("text",), 3)], heads)
    assert space.routes("text") == ["T", "A", "B"]
    w = space.route_weights("text", ["1", "2", "3"])
    torch.testing.assert_close(w, torch.full((3, 3), 1 / 3))
    leaves = space.leaf_embeddings("text", ["1", "2", "3"])
    cands = space.candidates("text", leaves)
    # column k of the candidates (and of the weights) is the space named routes()[k]
    routes = space.routes("text")
    torch.testing.assert_close(cands[:, routes.index("T")], space.base.combine("text", leaves))
    torch.testing.assert_close(cands[:, routes.index("A")], heads["A"](leaves["A"]))
    torch.testing.assert_close(space.combine("text", leaves), mix(cands, torch.full((3, 3), 1 / 3)))
    torch.testing.assert_close(space.combine("text", leaves),
                               torch.nn.functional.normalize(cands.mean(dim=1), dim=-1))
