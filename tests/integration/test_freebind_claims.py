"""FreeBind's coarse-to-fine claim on a small held-out world: U + c(audio-text expert) with the
`expertise` preset reaches the audio-text expert and leaves the base far behind; `versatile`
keeps the base's image-text retrieval while improving audio-text."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from spacebind.cache import ensure_caches
from spacebind.evaluation.evaluate import evaluate_space
from spacebind.evaluation.report import task_scores
from spacebind.fuse import fuse
from spacebind.recipe import validate_recipe

ROOT = Path(__file__).resolve().parents[2]


def mean_r1(scores: dict[str, float], a: str, b: str) -> float:
    return (scores[f"{a}→{b} R@1"] + scores[f"{b}→{a} R@1"]) / 2


@pytest.fixture(scope="module")
def columns(small_world, tmp_path_factory) -> dict[str, dict[str, float]]:
    """Test-split scores per model: base, audio-text expert, and the fused space per preset."""
    raw = yaml.safe_load((ROOT / "recipes" / "demo.yaml").read_text())
    # U + c(audio_text) with FreeBind's formula (MLP projectors, no channel): the claims are the paper's
    raw["bonds"] = [{**b, "projector": "mlp", "channel": False} for b in raw["bonds"] if b["type"] == "combination"]
    raw["data"] = {"path": str(small_world.root)}
    raw["export"] = {"out": str(tmp_path_factory.mktemp("export") / "uc")}
    result = fuse(validate_recipe(raw), work=tmp_path_factory.mktemp("work"), progress=False)
    assert result.space.formula() == "unified + c(audio_text)"
    scores = {role: task_scores([r for r in result.records if r["role"] == role]) for role in ("base", "expert")}
    caches = ensure_caches([result.space], small_world, tmp_path_factory.mktemp("cache"), progress=False)
    for preset in ("versatile", "audio_text_expertise"):
        space = result.space.with_lambdas(preset)
        scores[preset] = task_scores(evaluate_space(space, "fused", caches, small_world, "test", [1]))
    return scores


def test_expertise_preset_reaches_the_audio_text_expert(columns) -> None:
    expertise, expert, base = (mean_r1(columns[c], "text", "audio") for c in ("audio_text_expertise", "expert", "base"))
    # Measured (world experts v1) on this world (seed 7, 800 training items): 0.339 vs the expert's 0.347 and the
    # base's 0.053; seed 8: 0.375 vs 0.388. With 2,000 training items (benchmarks/freebind.py,
    # seed 11) it is above the expert: 0.252 vs 0.237. On small worlds it stays within 2 points.
    assert expertise >= expert - 0.02
    assert expertise > 4 * base


def test_versatile_preset_keeps_image_text_and_improves_audio_text(columns) -> None:
    versatile, base = columns["versatile"], columns["base"]
    assert mean_r1(versatile, "text", "image") >= mean_r1(base, "text", "image") - 0.01
    assert mean_r1(versatile, "text", "audio") > mean_r1(base, "text", "audio") + 0.1  # measured (world experts v1) 0.205 vs 0.053
    assert mean_r1(columns["audio_text_expertise"], "text", "audio") > mean_r1(versatile, "text", "audio")
