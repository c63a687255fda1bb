"""Composed queries (`compose`, `compose_query`): the formula, and parts composed one by one in a
space with a channel, so a carried modality's query is not drowned where a non-carried one is compared."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from toy_experts import multi_expert

from spacebind.bonds.bind import BoundSpace
from spacebind.bonds.projector import MLPProjector
from spacebind.search import compose, compose_query


def test_without_blocks_the_composition_is_the_normalised_weighted_sum() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 5, generator=gen), torch.randn(3, 5, generator=gen)
    expected = F.normalize(F.normalize(a, dim=-1) + 0.5 * F.normalize(b, dim=-1), dim=-1)
    torch.testing.assert_close(compose([a, b], [1.0, 0.5]), expected)
    torch.testing.assert_close(compose([a, b], [1.0, 0.5], blocks=(5,)), expected)


def test_each_part_is_composed_over_the_queries_that_have_it() -> None:
    """Text [√(1−κ)·t, √κ·r] and image [i, 0] at κ 0.999: outside the channel the composition is the
    even mix of t and i (a whole-vector sum gives the text 3 % of it); the channel part is the text's."""
    gen = torch.Generator().manual_seed(1)
    kappa = 0.999
    t, r, i = (F.normalize(torch.randn(d, generator=gen), dim=0) for d in (4, 3, 4))
    text = torch.cat([(1 - kappa) ** 0.5 * t, kappa ** 0.5 * r])
    image = torch.cat([i, torch.zeros(3)])
    q = compose([text, image], blocks=(4, 3))
    first, channel = q[:4], q[4:]
    torch.testing.assert_close(F.normalize(first, dim=0), F.normalize(t + i, dim=0))
    torch.testing.assert_close(F.normalize(channel, dim=0), r)
    torch.testing.assert_close(first.norm() / channel.norm(), torch.tensor(((1 - kappa) ** 0.5 + 1) / 2 / kappa ** 0.5))
    whole = compose([text, image])[:4]  # the whole-vector sum: outside the channel, the image all but alone
    assert float(F.normalize(whole, dim=0) @ t) < float(F.normalize(first, dim=0) @ t) - 0.3


def test_compose_query_composes_by_the_spaces_blocks() -> None:
    torch.manual_seed(0)
    u, e = multi_expert("U", 6, ("text", "image"), 0), multi_expert("E", 5, ("text", "audio"), 1)
    space = BoundSpace(u, [e], "combination", {"E": MLPProjector(5, 6, hidden=8).eval()}, lambdas={"text": 0.3},
                       channels={"text": 0.999, "audio": 0.999})
    assert space.blocks == (6, 5)
    image = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    got = compose_query(space, {"text": ["a red kettle"], "image": [image]})
    parts = [space.encode("text", ["a red kettle"])[0], space.encode("image", [image])[0]]
    torch.testing.assert_close(got, compose(parts, blocks=space.blocks))
    text_share = float(F.normalize(got[:6], dim=0) @ F.normalize(parts[0][:6], dim=0))
    image_share = float(F.normalize(got[:6], dim=0) @ F.normalize(parts[1][:6], dim=0))
    assert abs(text_share - image_share) < 1e-5  # an even mix where images are compared
