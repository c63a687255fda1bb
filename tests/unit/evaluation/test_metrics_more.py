"""acc5 is NaN only with FEWER than 5 classes: with exactly 5 it is defined (and trivially 1.0,
every class being in the top 5)."""
import math

import pytest
import torch

from spacebind.evaluation.metrics import zeroshot_classification


def test_acc5_with_exactly_five_classes_is_a_number() -> None:
    classes = torch.eye(5)
    feats = torch.tensor([[1.0, 0, 0, 0, 0], [0.9, 0.1, 0, 0, 0], [0, 0, 0, 0, 1.0]])
    m = zeroshot_classification(feats, torch.tensor([0, 1, 4]), classes)
    assert not math.isnan(m["acc5"]) and m["acc5"] == 1.0
    assert m["acc1"] == pytest.approx(2 / 3)
    four = zeroshot_classification(feats[:, :4], torch.tensor([0, 1, 3]), torch.eye(4))
    assert math.isnan(four["acc5"])


def test_positives_may_be_numpy_or_torch_integers() -> None:
    """An index tensor or numpy array of positives (one per query, or lists of them) is read as ints."""
    import numpy as np
    import torch

    from spacebind.evaluation.metrics import first_hit_ranks, retrieval_recall

    q = torch.eye(3)
    as_ints = retrieval_recall(q, q, [0, 1, 2], ks=(1,))
    assert retrieval_recall(q, q, torch.arange(3), ks=(1,)) == as_ints == {1: 1.0}
    assert retrieval_recall(q, q, list(np.arange(3)), ks=(1,)) == as_ints
    assert first_hit_ranks(q, q, [np.array([1, 0]), torch.tensor([1]), [2]]).tolist() == [0, 0, 0]
