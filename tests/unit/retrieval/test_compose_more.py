"""compose with blocks and a NEGATIVE weight ("this, but not that"): each part's norm is the
|w|-weighted mean of the queries' part norms (module docstring), not a signed mean that a
subtracted query would shrink."""
import torch

from spacebind.search import compose


def test_a_negative_weight_does_not_shrink_a_parts_norm() -> None:
    q1 = torch.tensor([0.8, 0.0, 0.6, 0.0])  # part norms 0.8, 0.6
    q2 = torch.tensor([0.0, 0.6, 0.0, 0.8])  # part norms 0.6, 0.8
    out = compose([q1, q2], [1.0, -0.5], blocks=(2, 2))
    d = torch.nn.functional.normalize(torch.tensor([1.0, -0.5]), dim=0)  # each part's direction
    n1, n2 = (0.8 + 0.5 * 0.6) / 1.5, (0.6 + 0.5 * 0.8) / 1.5
    expected = torch.nn.functional.normalize(torch.cat([n1 * d, n2 * d]), dim=0)
    torch.testing.assert_close(out, expected)
