"""`spacebind eval --format clip_benchmark`: one JSON per task with the fields `clip_benchmark eval`
writes and `clip_benchmark build` reads."""
from __future__ import annotations

import csv
import importlib
import json
from argparse import Namespace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spacebind.cli import app
from spacebind.evaluation.report import write_clip_benchmark

RECORDS = [
    {"model": "fused", "role": "fused", "dataset": "world-test", "task": "retrieval", "modalities": ["image", "text"],
     "metrics": {"text_retrieval_recall@1": 0.5, "image_retrieval_recall@1": 0.25, "n": 4}},
    {"model": "fused", "role": "fused", "dataset": "world-test", "task": "retrieval", "modalities": ["audio", "text"],
     "metrics": {"text_retrieval_recall@1": 0.75, "audio_retrieval_recall@1": 0.5, "n": 4}},
    {"model": "fused", "role": "fused", "dataset": "world-test", "task": "zeroshot_classification",
     "modalities": ["image", "text"], "metrics": {"acc1": 0.5, "acc5": 1.0, "mean_per_class_recall": 0.5, "n": 4}},
]


def test_one_file_per_task_with_clip_benchmark_fields(tmp_path: Path) -> None:
    paths = write_clip_benchmark(tmp_path / "cb", RECORDS, pretrained="org/space@v1")
    assert [p.name for p in paths] == [
        "world-test_org_space@v1_fused_en_zeroshot_retrieval_fused_image-text.json",
        "world-test_org_space@v1_fused_en_zeroshot_retrieval_fused_audio-text.json",
        "world-test_org_space@v1_fused_en_zeroshot_classification_fused_image-text.json",
    ]
    results = [json.loads(p.read_text()) for p in paths]
    first = results[0]
    assert list(first) == ["dataset", "model", "pretrained", "task", "metrics", "language", "modalities", "role"]
    assert first["dataset"] == "world-test" and first["model"] == "fused" and first["pretrained"] == "org/space@v1"
    assert first["task"] == "zeroshot_retrieval" and first["language"] == "en"
    assert first["metrics"] == RECORDS[0]["metrics"]  # same keys as CLIP_benchmark: image_retrieval_recall@k is text→image
    assert results[2]["task"] == "zeroshot_classification" and results[2]["metrics"]["acc1"] == 0.5
    assert results[1]["modalities"] == ["audio", "text"]


def test_clip_benchmark_build_reads_the_files(tmp_path: Path) -> None:
    cli = pytest.importorskip("clip_benchmark.cli")
    write_clip_benchmark(tmp_path / "cb", RECORDS, pretrained="runs/demo")
    cli.main_build(Namespace(files=[str(tmp_path / "cb")], output=str(tmp_path / "benchmark.csv")))
    with open(tmp_path / "benchmark.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3
    retrieval = next(r for r in rows if r["task"] == "zeroshot_retrieval" and "audio" in r["modalities"])
    assert retrieval["model_fullname"] == "fused runs/demo" and float(retrieval["audio_retrieval_recall@1"]) == 0.5


def test_eval_cli_writes_clip_benchmark_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    evaluate = importlib.import_module("spacebind.evaluation.evaluate")  # the package exports a function of that name
    monkeypatch.setattr(evaluate, "evaluate_checkpoint", lambda *a, **k: RECORDS)
    out = tmp_path / "cb"
    result = CliRunner().invoke(app, ["eval", "runs/demo", str(tmp_path), "--out", str(out), "--format", "clip_benchmark"])
    assert result.exit_code == 0, result.output
    assert len(list(out.glob("*.json"))) == 3 and "wrote 3 files" in result.output
    result = CliRunner().invoke(app, ["eval", "runs/demo", str(tmp_path), "--format", "csv"])
    assert result.exit_code != 0 and "expected json or clip_benchmark" in result.output
