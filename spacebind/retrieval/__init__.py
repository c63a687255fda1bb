"""Retrieval over embeddings: exact chunked top-k, FAISS mining of pseudo pairs, pseudo datasets."""
from spacebind.retrieval.mining import mine
from spacebind.retrieval.pseudo import PseudoDataset, pseudo_pairs
from spacebind.retrieval.topk import topk_indices

__all__ = ["PseudoDataset", "mine", "pseudo_pairs", "topk_indices"]
