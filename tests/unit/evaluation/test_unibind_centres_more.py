"""UniBind centres with a space's blocks (a channel): `mix` weighs the prompt, 1 − mix the
descriptions, as without blocks: mix = 1 gives the prompts, mix = 0 the picked descriptions."""
import torch
import torch.nn.functional as F

from spacebind.unibind.centres import centres_from


def _rows(n: int, g: torch.Generator) -> torch.Tensor:  # unit rows whose two parts (2, 3) have norms √0.6, √0.4
    a, b = F.normalize(torch.randn(n, 2, generator=g), dim=-1), F.normalize(torch.randn(n, 3, generator=g), dim=-1)
    return torch.cat([0.6 ** 0.5 * a, 0.4 ** 0.5 * b], dim=-1)


def test_mix_weighs_prompt_against_descriptions_part_by_part() -> None:
    g = torch.Generator().manual_seed(0)
    prompts, means = _rows(3, g), _rows(3, g)
    descriptions = [_rows(1, g) for _ in range(3)]  # one description per class: it is the pick
    picked = torch.cat(descriptions)
    torch.testing.assert_close(centres_from(prompts, descriptions, means, n=1, mix=1.0, blocks=(2, 3)), prompts)
    torch.testing.assert_close(centres_from(prompts, descriptions, means, n=1, mix=0.0, blocks=(2, 3)), picked)
    # the same as the whole-vector formula at the ends
    torch.testing.assert_close(centres_from(prompts, descriptions, means, n=1, mix=1.0), prompts)
