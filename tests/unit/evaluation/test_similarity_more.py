"""Space similarity: mutual k-NN is over COSINE neighbours (norms must not matter), and
`rank_pairs` (a) caps k at N - 1, where every other probe is a neighbour in both spaces, so the
overlap is exactly 1, and (b) drops probe items either side's cache could not embed."""
from pathlib import Path

import torch

from spacebind.evaluation.similarity import ProbeEncoder, mutual_knn, rank_pairs


def test_mutual_knn_uses_cosine_not_inner_product() -> None:
    # same directions in both spaces, b rescales rows: cosine neighbours are identical → 1.0
    a = torch.tensor([[1.0, 0.0], [0.9, 0.3], [0.0, 1.0], [0.4, 0.9], [-1.0, 0.1]])
    scale = torch.tensor([[1.0], [10.0], [0.1], [5.0], [0.3]])
    assert mutual_knn(a, a * scale, k=1) == 1.0
    assert mutual_knn(a, a * scale, k=2) == 1.0


def test_rank_pairs_caps_k_and_skips_items_a_cache_could_not_embed(tmp_path: Path) -> None:
    from tiny_datasets import tiny_dataset
    from toy_experts import multi_expert, text_expert

    data = tiny_dataset(tmp_path / "data", n=23, corrupt=5)  # item5's image is corrupt; 18 train items
    encoders = [ProbeEncoder(text_expert("T", dim=6, seed=3), "text"),
                ProbeEncoder(multi_expert("I", 5, ("image", "text"), 0), "image")]
    (row,) = rank_pairs(encoders, data, "train", tmp_path / "cache", k=50, progress=False)
    assert row["n"] == 17  # the corrupt image drops out
    # k = 50 is capped at n - 1 = 16: every other probe is a neighbour in both spaces
    assert row["mutual_knn"] == 1.0
