"""A fused space moved to another floating dtype (`Space.to`): every path a user runs after it
works in that dtype, and float64 agrees with float32."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_datasets import tiny_dataset
from toy_experts import multi_expert

from spacebind.bonds.bind import BoundSpace
from spacebind.bonds.export import export_programs
from spacebind.bonds.projector import MLPProjector
from spacebind.bonds.route import ROUTER_PREFIX, RoutedSpace
from spacebind.bonds.router import Router
from spacebind.cache import ensure_caches
from spacebind.evaluation.evaluate import evaluate_space
from spacebind.evaluation.metrics import class_embeddings
from spacebind.interop.adapters import OpenCLIPModel, TextTokens
from spacebind.search import build_index, load_index, search
from spacebind.unibind.model import fit_unibind

IMAGES = [np.random.default_rng(i).random((6, 6, 3)).astype(np.float32) for i in range(4)]


def channelled() -> BoundSpace:
    """U (text, image) + c(E (text, audio)) with a channel: images are [e, 0]."""
    torch.manual_seed(0)
    u, e = multi_expert("U", 6, ("text", "image"), 0), multi_expert("E", 5, ("text", "audio"), 1)
    return BoundSpace(u, [e], "combination", {"E": MLPProjector(5, 6, hidden=8).eval()}, lambdas={"text": 0.3},
                      channels={"text": 0.9, "audio": 0.9})


def routed() -> RoutedSpace:
    torch.manual_seed(0)
    t, a = multi_expert("T", 6, ("text", "image"), 0), multi_expert("A", 5, ("text", "image"), 1)
    heads = {"A": MLPProjector(5, 6, hidden=8).eval(), f"{ROUTER_PREFIX}text": Router(11, 2, hidden=(8, 4)).eval()}
    return RoutedSpace(t, [a], heads)


def test_half_precision_keeps_a_channels_zeros() -> None:
    """Normalising the zero channel part of a modality no expert covers gives NaN in float16."""
    space = channelled().to(torch.float16)
    image = space.encode("image", IMAGES)
    assert image.dtype == torch.float16 and bool(torch.isfinite(image).all()) and bool((image[:, 6:] == 0).all())
    assert space.support("image").tolist() == [True] * 6 + [False] * 5


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_derived_spaces_and_routers_keep_the_dtype(dtype: torch.dtype) -> None:
    space = channelled().to(dtype)
    assert space.with_lambdas({"text": 0.5}).encode("text", ["a kettle"]).dtype == dtype
    assert space.with_lambdas({"channel:text": 0.5}).encode("text", ["a kettle"]).dtype == dtype
    assert space.with_presets({"p": {"text": 0.2}}).dtype == dtype
    mixed = routed().to(dtype)
    assert mixed.uniform().encode("text", ["a kettle"]).dtype == dtype
    assert mixed.route_weights("text", ["a kettle", "a dog"]).dtype == dtype


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_caches_evaluation_search_and_unibind_run_in_the_spaces_dtype(dtype: torch.dtype, tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "data", n=18, corrupt=None)
    reference = channelled()
    caches = ensure_caches([reference], data, tmp_path / "cache", progress=False)
    kb = {c: [f"a {c} thing", f"{c}, described", f"one more {c}"] for c in data.class_names}
    unibind = fit_unibind(reference, caches, data, kb, modalities=["image"], epochs=2, vote_weight=0.5)
    expected = {r["task"] + str(r["modalities"]): r["metrics"] for r in evaluate_space(reference, "fused", caches, data, "train", [1])}
    space = channelled().to(dtype)
    ids = [it.id for it in data.select("train", "image")]
    assert caches.embeddings(space, "image", ids).dtype == dtype
    got = {r["task"] + str(r["modalities"]): r["metrics"] for r in evaluate_space(space, "fused", caches, data, "train", [1])}
    assert got.keys() == expected.keys()
    if dtype == torch.float64:
        for task, metrics in expected.items():
            assert got[task] == pytest.approx(metrics, nan_ok=True), task  # acc5 NaN: fewer than 5 classes
    index = build_index(space, data, tmp_path / "index", cache_dir=tmp_path / "cache", progress=False)
    assert len(search(load_index(tmp_path / "index", space), space.encode("text", ["caption number 3"])[0], 3)) == 3
    assert index is not None
    unibind.space = space
    assert unibind.scores("image", space.encode("image", IMAGES)).dtype == torch.float32
    assert fit_unibind(space, caches, data, kb, modalities=["image"], epochs=1).centres["image"].dtype == torch.float32
    prompts = space.encode("text", [f"a {c}" for c in data.class_names for _ in range(2)])
    assert class_embeddings(prompts, len(data.class_names), space.blocks).dtype == dtype


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_exported_programs_of_a_cast_space_take_float32_leaf_embeddings(dtype: torch.dtype, tmp_path: Path) -> None:
    import json

    space = channelled().to(dtype)
    out = export_programs(space, tmp_path / "export")
    spec = json.loads((out / "export.json").read_text())
    assert spec["dtype"] == str(dtype).removeprefix("torch.")
    entry = spec["modalities"]["text"]
    leaves = {i["expert"]: torch.nn.functional.normalize(torch.randn(3, i["dim"]), dim=-1) for i in entry["inputs"]}
    got = torch.export.load(str(out / entry["file"])).module()(*leaves.values())
    want = space.combine("text", {k: v.to(dtype) for k, v in leaves.items()})
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), want.float(), atol=1e-2 if dtype == torch.bfloat16 else 1e-6, rtol=0)


def test_module_dtype_methods_move_the_space() -> None:
    model = OpenCLIPModel(channelled(), image_size=None)
    assert model.double() is model and model.space.dtype == torch.float64
    assert model.encode_text(TextTokens(["a kettle"])).dtype == torch.float64
    assert model.bfloat16().encode_image(IMAGES).dtype == torch.bfloat16
    assert model.half().space.dtype == torch.float16 and model.float().space.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_a_cast_space_saves_and_loads_in_its_dtype(dtype: torch.dtype, tmp_path: Path) -> None:
    import json

    import spacebind
    from spacebind.search import space_fingerprint

    space = channelled()
    leaves = {e.name: e for e in space.leaves()}
    assert "dtype" not in json.loads((space.save(tmp_path / "fp32") / "config.json").read_text())
    space.to(dtype)
    loaded = spacebind.load(space.save(tmp_path / "cast"), experts=leaves)
    assert loaded.dtype == dtype and space_fingerprint(loaded) == space_fingerprint(space)
    torch.testing.assert_close(loaded.encode("text", ["a kettle"]), space.encode("text", ["a kettle"]), rtol=0, atol=0)
