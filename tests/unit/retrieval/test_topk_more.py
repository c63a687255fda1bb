"""topk_indices breaks ties toward the lower gallery index also when k is large and the ties sit
inside the top k (not across its cut): the reorder of the top k by index within equal scores must
be a stable sort; an unstable sort of a few hundred columns scrambles tied entries."""
import torch

from spacebind.retrieval.topk import topk_indices


def test_ties_inside_a_large_top_k_go_to_the_lower_index() -> None:
    g = torch.Generator().manual_seed(3)
    n, k = 600, 300
    scores = torch.zeros(n)
    top = torch.randperm(n, generator=g)[:k]
    scores[top[: k // 2]] = 2.0  # two score levels inside the top k, none across the cut
    scores[top[k // 2:]] = 1.0
    gal = torch.stack([scores, torch.zeros(n)], dim=1)
    q = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    expected = torch.sort(q @ gal.T, dim=1, descending=True, stable=True).indices[:, :k]
    got = topk_indices(q, gal, k)
    assert torch.equal(got, expected)
    # by hand: the score-2 items in index order, then the score-1 items in index order
    twos, ones = torch.sort(top[: k // 2]).values, torch.sort(top[k // 2:]).values
    assert got[0].tolist() == twos.tolist() + ones.tolist()
