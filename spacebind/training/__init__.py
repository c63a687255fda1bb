"""Training on cached embeddings: InfoNCE, the projector trainer (resumable, DDP under torchrun),
process groups and thread control."""
from spacebind.training.losses import info_nce
from spacebind.training.trainer import TrainConfig, TrainResult, train_projector

__all__ = ["TrainConfig", "TrainResult", "info_nce", "train_projector"]
