"""UniBind's official mode through a recipe: fuse exports it, the export loads it back with its
mode, and `spacebind eval` on the export reports the same zero-shot numbers."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from spacebind.cli import app
from spacebind.fuse import fuse
from spacebind.recipe import validate_recipe
from spacebind.unibind.model import UniBind

ROOT = Path(__file__).resolve().parents[2]


def test_official_mode_recipe_fuses_exports_and_loads_back(small_world, tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "recipes" / "unibind_world.yaml").read_text())
    raw["data"] = {"path": str(small_world.root)}
    raw["unibind"] = {**raw["unibind"], "scoring": "descriptions", "head": "linear", "descriptions": 50}
    result = fuse(validate_recipe(raw), out=tmp_path / "out", work=tmp_path / "work", progress=False)
    meta = json.loads((result.out / "unibind.json").read_text())
    assert meta["scoring"] == "descriptions" and meta["head"] == "linear"
    loaded = UniBind.load(result.out)
    assert loaded.scoring == "descriptions" and set(loaded.heads) == {"image", "audio"}
    assert all(h.config["type"] == "linear" for h in loaded.heads.values())
    # the world's knowledge base has 24 descriptions a class: 50 keeps every one, apart
    assert len(loaded.centres["image"]) == 24 * len(small_world.class_names)
    zs = {r["modalities"][0]: r["metrics"]["acc1"] for r in result.records
          if r["task"] == "zeroshot_classification" and r["model"] == "unibind_world (centres)"}
    metrics = tmp_path / "metrics.json"
    run = CliRunner().invoke(app, ["eval", str(result.out), str(small_world.root), "--out", str(metrics),
                                   "--cache-dir", str(tmp_path / "cache")])
    assert run.exit_code == 0, run.output
    again = {r["modalities"][0]: r["metrics"]["acc1"] for r in json.loads(metrics.read_text())
             if r["task"] == "zeroshot_classification" and r["model"] == "unibind_world (centres)"}
    assert again["image"] == pytest.approx(zs["image"], abs=0.01) and again["audio"] == pytest.approx(zs["audio"], abs=0.01)
