"""Embedding decodes a shard in expert-batch-sized groups: decoded inputs alive at once stay within
one batch whatever the shard size, and the cache is the same as the shard's inputs encoded at once."""
from __future__ import annotations

import json
import weakref
from pathlib import Path

import numpy as np
import torch

import spacebind.cache._embed_loop as embed_loop
from spacebind.cache.store import embed_dataset
from spacebind.io.datasets import Dataset
from spacebind.space import Expert, ExpertSpec


def _points_dataset(root: Path, n: int) -> Dataset:
    (root / "p").mkdir(parents=True)
    lines = []
    for i in range(n):
        if i != 7:  # item 7 names a file that is not there: a bad item inside a group
            np.save(root / "p" / f"{i}.npy", np.full((16, 3), float(i), np.float32))
        lines.append(json.dumps({"id": f"it{i}", "point": f"p/{i}.npy"}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return Dataset.load(root)


def test_decoded_inputs_alive_at_once_stay_within_a_batch(tmp_path: Path, monkeypatch) -> None:
    alive = {"now": 0, "peak": 0}
    decode = embed_loop.load_inputs_lenient

    def counting_decode(modality, xs):
        result = decode(modality, xs)
        for arr in result.loaded:
            alive["now"] += 1
            weakref.finalize(arr, lambda: alive.__setitem__("now", alive["now"] - 1))
        alive["peak"] = max(alive["peak"], alive["now"])
        return result

    monkeypatch.setattr(embed_loop, "load_inputs_lenient", counting_decode)
    data = _points_dataset(tmp_path / "d", 30)
    expert = Expert("toy", 4, {"point": lambda xs: torch.stack([torch.tensor([x[0, 0], 1.0, -1.0, 2.0]) for x in xs])},
                    spec=ExpertSpec(source="toy", checkpoint="toy.bin", sha256="abc"), batch_size=4)
    cache = embed_dataset(expert, data, tmp_path / "cache", shard_size=25, progress=False)
    assert 0 < alive["peak"] <= 4
    ids = [f"it{i}" for i in range(30) if i != 7]
    assert cache.ids("point") == ids
    assert [b["id"] for b in cache.bad("point")] == ["it7"]
    direct = expert.encode("point", [{it.id: it for it in data.iter_items()}[i].fields["point"] for i in ids])
    torch.testing.assert_close(cache.embeddings("point"), direct.half().float())
