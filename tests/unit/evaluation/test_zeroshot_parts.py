"""prompt_classes keeps a space's parts (`blocks`) when it averages templates, and zeroshot_with
refuses a split with no labelled items of the modality (instead of NaN metrics with n = 0)."""
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from spacebind.errors import InputError
from spacebind.evaluation.zeroshot import prompt_classes, zeroshot_with
from spacebind.io.datasets import ClassInfo, Dataset, Item

S = 2 ** -0.5


def test_prompt_classes_average_part_by_part() -> None:
    # c0's templates agree in part 1 and disagree in part 2: part by part each part keeps norm 1/√2
    table = {"a c0": [S, 0, S, 0], "b c0": [S, 0, 0, S], "a c1": [S, 0, S, 0], "b c1": [0, S, S, 0]}
    space = SimpleNamespace(blocks=(2, 2), encode=lambda m, prompts: torch.tensor([table[p] for p in prompts]))
    centres = prompt_classes(space, ["c0", "c1"], ["a {}", "b {}"])
    torch.testing.assert_close(centres[:, :2].norm(dim=-1), torch.full((2,), S))
    torch.testing.assert_close(centres[:, 2:].norm(dim=-1), torch.full((2,), S))
    torch.testing.assert_close(centres[0], torch.tensor([S, 0, 0.5, 0.5]))


def test_zeroshot_with_no_labelled_items_is_an_error() -> None:
    items = [Item("i0", "train", "c0", {"image": "img0"}), Item("i1", "test", None, {"image": "img1"})]
    data = Dataset.of_items(Path("tiny"), items, [ClassInfo("c0"), ClassInfo("c1")])
    caches = SimpleNamespace(usable_ids=lambda sp, m, ids: list(ids),
                             embeddings=lambda sp, m, ids: torch.zeros(len(ids), 2))
    with pytest.raises(InputError, match="no labelled image items in the test split"):
        zeroshot_with(SimpleNamespace(), caches, data, "test", "image", torch.eye(2))
