"""Space similarity: mutual k-NN and linear CKA against their definitions, and the ranking of
candidate encoder pairs on a small world (the pair trained together ranks first)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from spacebind.cli import app
from spacebind.errors import InputError
from spacebind.evaluation.similarity import cross_modal_pairs, linear_cka, mutual_knn, parse_encoders, rank_pairs
from spacebind.experts.registry import EXPERTS


def rows(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_mutual_knn_by_hand() -> None:
    a = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]])
    # 1-NN in a: 0↔1, 2↔3; in b: 0↔2, 1↔3: no item keeps its neighbour
    assert mutual_knn(a, a, k=1) == 1.0 and mutual_knn(a, b, k=1) == 0.0
    # 2-NN in a: 0:{1,3} 1:{0,3} 2:{3,1} 3:{2,1}; in b: 0:{2,3} 1:{3,2} 2:{0,3} 3:{1,2}
    # → overlaps 1, 1, 1, 2 of 2 each: 5/8
    assert mutual_knn(a, b, k=2) == pytest.approx(0.625)
    with pytest.raises(InputError, match="k is 4"):
        mutual_knn(a, b, k=4)


def test_linear_cka_matches_its_formula_and_invariances() -> None:
    a, b = rows(50, 6, 0), rows(50, 4, 1)
    ac, bc = a - a.mean(0), b - b.mean(0)
    by_hand = (ac.T @ bc).norm() ** 2 / ((ac.T @ ac).norm() * (bc.T @ bc).norm())
    assert linear_cka(a, b) == pytest.approx(float(by_hand), rel=1e-5)
    q, _ = torch.linalg.qr(rows(6, 6, 2))
    assert linear_cka(a, 3.0 * a @ q + 1.0) == pytest.approx(1.0, abs=1e-9)  # rotation, scale, shift
    with pytest.raises(InputError, match="paired"):
        linear_cka(a, b[:10])


def test_the_pair_trained_together_ranks_first(small_world, tmp_path: Path) -> None:
    build = lambda name: EXPERTS.create(name, progress=False)  # noqa: E731
    specs = ["world_image_text:image", "world_image_text:text", "world_audio_text:text", "world_point_text:text"]
    encoders = parse_encoders(specs, build)
    assert cross_modal_pairs(encoders) == [(0, 1), (0, 2), (0, 3)]
    ranked = rank_pairs(encoders, small_world, "test", tmp_path / "cache", progress=False)
    # Measured (world experts v1) (seed 7, 300 probe items): mutual 10-NN 0.445 / CKA 0.853 for the true pair,
    # 0.271 / 0.321 audio-text's text tower, 0.229 / 0.406 point-text's.
    assert (ranked[0]["a"], ranked[0]["b"]) == ("world_image_text:image", "world_image_text:text")
    assert ranked[0]["mutual_knn"] > ranked[1]["mutual_knn"] + 0.1
    assert ranked[0]["cka"] == max(r["cka"] for r in ranked) and ranked[0]["n"] == 300
    with pytest.raises(InputError, match="EXPERT:MODALITY"):
        parse_encoders(["world_image_text"], build)
    with pytest.raises(InputError, match="not 'audio'"):
        parse_encoders(["world_image_text:audio"], build)


def test_cli_prints_the_table_and_draws_the_heatmap(small_world, tmp_path: Path) -> None:
    plot = tmp_path / "sim.png"
    result = CliRunner().invoke(app, ["similarity", "world_image_text:image", "world_image_text:text",
                                      "world_point_text:text", "--data", str(small_world.root),
                                      "--cache", str(tmp_path / "cache"), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "world_" in line]
    assert "world_image_text:text" in lines[0] and "world_point_text:text" in lines[1]
    assert plot.read_bytes()[:4] == b"\x89PNG"
    bad = CliRunner().invoke(app, ["similarity", "world_image_text", "world_point_text:text", "--data",
                                   str(small_world.root)])
    assert bad.exit_code == 2 and "EXPERT:MODALITY" in bad.output
