"""The domain oracle of `benchmarks/omnibind.py`: a bound on routing by domain, weights per item."""
from __future__ import annotations

import torch

from benchmarks.omnibind import oracle_weights

ROUTES = ["anchor", "even", "odd", "unified"]
DOMAINS = {"even": (0, 2), "odd": (1, 2)}


def test_the_specialist_that_never_learned_the_concept_gets_no_weight() -> None:
    weights = oracle_weights(ROUTES, torch.tensor([0, 1, 4]), DOMAINS, own_only=False)
    third = 1 / 3
    torch.testing.assert_close(weights, torch.tensor([[third, third, 0.0, third],
                                                      [third, 0.0, third, third],
                                                      [third, third, 0.0, third]]))


def test_own_only_gives_the_specialist_that_learned_the_concept_all_the_weight() -> None:
    weights = oracle_weights(ROUTES, torch.tensor([2, 3]), DOMAINS, own_only=True)
    torch.testing.assert_close(weights, torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]))


def test_modalities_no_specialist_covers_stay_uniform() -> None:
    for own_only in (False, True):
        weights = oracle_weights(["anchor", "point_text", "unified"], torch.tensor([0, 1]), DOMAINS, own_only)
        torch.testing.assert_close(weights, torch.full((2, 3), 1 / 3))
