"""An index records the fingerprint of the space that built it. The fingerprint covers what fixes the
embeddings (experts, heads, λ, κ), not a bond's name, presets or record of its choices: `sweep`
adds presets to a checkpoint and the indexes built with it stay valid."""
from __future__ import annotations

import torch
from toy_experts import multi_expert

from spacebind.bonds.bind import BoundSpace
from spacebind.bonds.projector import MLPProjector
from spacebind.search import space_fingerprint


def bond(seed: int = 0, **options) -> BoundSpace:
    u, e = multi_expert("U", 8, ("text",), 0), multi_expert("E", 6, ("text",), 1)
    torch.manual_seed(seed)
    return BoundSpace(u, [e], "combination", {"E": MLPProjector(6, 8, hidden=16).eval()}, lambdas={"text": 0.3},
                      channels={"text": 0.5}, **options)


def test_presets_names_and_choices_keep_the_fingerprint() -> None:
    space = bond()
    same = [space.with_presets({"sharp": {"text": 0.8}}), bond(name="renamed"),
            bond(choices={"lambdas": {"split": "val"}})]
    assert {space_fingerprint(s) for s in same} == {space_fingerprint(space)}


def test_what_changes_embeddings_changes_the_fingerprint() -> None:
    space = bond()
    other = [space.with_lambdas({"text": 0.5}), space.with_lambdas({"channel:text": 0.2}), bond(seed=1)]
    assert len({space_fingerprint(s) for s in [space, *other]}) == 4
