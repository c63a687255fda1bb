"""Item ids as fixed-size keys, for lookups that do not hold an id string (nor a dict entry) per item.

A key is the 128-bit BLAKE2b digest of an id's UTF-8 bytes, kept as two uint64 columns (16 bytes
an item). A `KeyIndex` maps keys to row numbers (e.g. rows of an embedding cache, in cache order)
with sorted numpy arrays: 24 bytes an item, against ~150 for a dict from id strings. Two distinct
ids share a key with probability ~n² / 2¹²⁹ (about 10⁻²⁷ at a billion items), so a lookup by key is
taken as a lookup by id; equal leading halves (~n² / 2⁶⁵) are resolved on the second half."""
from __future__ import annotations

import hashlib
from itertools import islice
from typing import Iterable

import numpy as np

CHUNK = 65536  # ids hashed per numpy block


def id_keys(ids: Iterable[str]) -> np.ndarray:
    """[n, 2] uint64 keys of `ids`, in their order (the ids are consumed a chunk at a time)."""
    it = iter(ids)
    parts: list[np.ndarray] = []
    while True:
        block = b"".join(hashlib.blake2b(i.encode("utf-8", "surrogatepass"), digest_size=16).digest()
                         for i in islice(it, CHUNK))
        if not block:
            break
        parts.append(np.frombuffer(block, dtype="<u8").reshape(-1, 2))
    if not parts:
        return np.empty((0, 2), dtype=np.uint64)
    return np.concatenate(parts) if len(parts) > 1 else parts[0].copy()


class KeyIndex:
    """Row numbers of keys: `rows(keys)` gives each key's row (its position in the keys the index
    was built from), or -1 where absent. Where a key repeats, its first row is given."""

    def __init__(self, keys: np.ndarray) -> None:
        keys = np.asarray(keys, dtype=np.uint64).reshape(-1, 2)
        self.order = np.lexsort((np.arange(len(keys)), keys[:, 1], keys[:, 0]))  # by hi, lo, then row
        self.hi = keys[self.order, 0]
        self.lo = keys[self.order, 1]
        self._repeats = bool(len(self.hi) > 1 and (self.hi[1:] == self.hi[:-1]).any())

    def __len__(self) -> int:
        return len(self.order)

    @property
    def nbytes(self) -> int:
        return self.order.nbytes + self.hi.nbytes + self.lo.nbytes

    def rows(self, keys: np.ndarray) -> np.ndarray:
        """int64 rows of `keys` ([n, 2] uint64), -1 for keys not in the index."""
        keys = np.asarray(keys, dtype=np.uint64).reshape(-1, 2)
        n = len(self.hi)
        if n == 0 or len(keys) == 0:
            return np.full(len(keys), -1, dtype=np.int64)
        qh, ql = keys[:, 0], keys[:, 1]
        left = np.searchsorted(self.hi, qh, side="left")
        at = np.minimum(left, n - 1)
        found = (left < n) & (self.hi[at] == qh) & (self.lo[at] == ql)
        if self._repeats:  # equal leading halves: look for the second half within the run
            right = np.searchsorted(self.hi, qh, side="right")
            for j in np.flatnonzero(~found & (right - left > 1)):
                hit = np.flatnonzero(self.lo[left[j]:right[j]] == ql[j])
                if hit.size:
                    found[j], at[j] = True, left[j] + hit[0]
        return np.where(found, self.order[at], -1).astype(np.int64)
