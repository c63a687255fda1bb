"""Measuring spaces: retrieval and zero-shot metrics (CLIP_benchmark conventions), evaluation of
spaces and checkpoints, λ sweeps, space similarity, reports and plots, cost accounting."""
from spacebind.evaluation.evaluate import evaluate, read_records, write_records
from spacebind.evaluation.metrics import retrieval_recall, zeroshot_classification

__all__ = ["evaluate", "read_records", "retrieval_recall", "write_records", "zeroshot_classification"]
