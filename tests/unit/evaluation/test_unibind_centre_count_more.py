"""centres_from refuses n < 1 (n = 0 would average no description: NaN centres)."""
import pytest
import torch

from spacebind.errors import InputError
from spacebind.unibind.centres import centres_from


def test_n_zero_is_refused() -> None:
    prompts, means = torch.eye(2), torch.eye(2)
    with pytest.raises(InputError, match="n is 0"):
        centres_from(prompts, [torch.eye(2), torch.eye(2)], means, n=0, mix=0.5)

