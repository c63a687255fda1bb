"""Embedding caches: each expert embeds a dataset once into float16 shards; training, mining and
evaluation read them through a `CacheSet`."""
from spacebind.cache.cache_set import CacheSet, dataset_key, default_cache_root, ensure_caches
from spacebind.cache.store import EmbeddingCache, embed_dataset

__all__ = ["CacheSet", "EmbeddingCache", "dataset_key", "default_cache_root", "embed_dataset", "ensure_caches"]
