"""Reading and writing: dataset manifests, input loaders (images, audio, point clouds, video,
events, …), audio features, atomic file writes, progress output."""
from spacebind.io.datasets import Dataset, Item
from spacebind.io.inputs import load_inputs

__all__ = ["Dataset", "Item", "load_inputs"]
