"""UniBind scores are cosines: the knowledge votes and the centre scores do not depend on the
norm of an item's embedding (or of a description's)."""
import torch
import torch.nn.functional as F

from spacebind.unibind.centres import knowledge_votes, predict


def test_votes_use_cosine_similarities() -> None:
    feats = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    descs = F.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]]), dim=-1)
    owners = torch.tensor([0, 1, 1, 0])
    unit = knowledge_votes(feats, descs, owners, n_classes=2, k=2, temperature=0.1)
    # by hand for item 0: its 2 nearest are descs 0 (cos 1, class 0) and 1 (cos 0.6, class 1)
    w = torch.softmax(torch.tensor([1.0, 0.6]) / 0.1, dim=0)
    torch.testing.assert_close(unit[0], w)
    torch.testing.assert_close(knowledge_votes(5.0 * feats, 3.0 * descs, owners, 2, k=2, temperature=0.1), unit)


def test_centre_scores_are_cosines_so_votes_keep_their_weight() -> None:
    centres = torch.eye(2)
    feats = torch.tensor([[0.8, 0.6]])
    votes = torch.tensor([[0.0, 1.0]])
    torch.testing.assert_close(predict(feats, centres, votes, 0.5), torch.tensor([[0.8, 1.1]]))
    # a longer embedding of the same direction: same scores (the vote still decides: class 1)
    torch.testing.assert_close(predict(10.0 * feats, centres, votes, 0.5), torch.tensor([[0.8, 1.1]]))
