"""UniBind's seven modalities bound on a small held-out world (recipes/seven_world.yaml)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import spacebind
from spacebind.fuse import fuse
from spacebind.io.datasets import Dataset
from spacebind.recipe import validate_recipe
from spacebind.world.generate import generate_world

ROOT = Path(__file__).resolve().parents[2]
SENSORS = ["video", "thermal", "event"]


@pytest.fixture(scope="module")
def seven_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("world7") / "w7"
    generate_world(root, seed=7, sizes={"train": 800, "val": 150, "test": 300}, sensors=SENSORS, progress=False)
    raw = yaml.safe_load((ROOT / "recipes" / "seven_world.yaml").read_text())
    raw["data"] = {"path": str(root)}
    raw["export"] = {"out": str(tmp_path_factory.mktemp("export") / "seven")}
    result = fuse(validate_recipe(raw), recipe_text=yaml.safe_dump(raw), work=tmp_path_factory.mktemp("work"),
                  progress=False)
    return result, Dataset.load(root)


def _records(result) -> dict[tuple[str, str, str], dict]:
    records = json.loads((result.out / "metrics.json").read_text())
    return {(r["role"], r["task"], "-".join(r["modalities"])): r["metrics"] for r in records}


def test_the_recipe_binds_all_seven_modalities(seven_run) -> None:
    result, world = seven_run
    assert world.modalities() == ("text", "image", "audio", "point", "video", "thermal", "event")
    assert result.space.modalities == ("text", "image", "audio", "point", "video", "thermal", "event")


# Measured (world experts v1) on this world (seed 7, 800/150/300 items, 24 classes), fused space:
#   recall@10 both directions (chance 10/300 = 0.033): video–text 0.687/0.683, video–image 0.753/0.760,
#   thermal–text 0.407/0.407, thermal–image 0.363/0.330, event–text 0.180/0.200, event–image 0.197/0.200;
#   recall@1 (chance 0.0033): video 0.11–0.15, thermal 0.04–0.07, event 0.013–0.027;
#   zero-shot acc1 (chance 1/24 = 0.042): video 0.333, thermal 0.197, event 0.093.
# Events carry shape and motion but no colour (4 concepts share each shape), so they stay weakest.
R10_FLOOR = {"video": 0.5, "thermal": 0.28, "event": 0.14}
ZEROSHOT_FLOOR = {"video": 0.25, "thermal": 0.15, "event": 0.07}


def test_metrics_cover_video_thermal_and_event_against_text_and_image_far_above_chance(seven_run) -> None:
    result, world = seven_run
    records = _records(result)
    assert len(world.select("test")) == 300
    for m in SENSORS:
        for other in ("text", "image"):
            metrics = records[("fused", "retrieval", f"{other}-{m}")]
            for side in (m, other):
                assert metrics[f"{side}_retrieval_recall@10"] >= R10_FLOOR[m], (m, other, side, metrics)
        assert records[("fused", "zeroshot_classification", f"{m}-text")]["acc1"] >= ZEROSHOT_FLOOR[m]
    # the base (toy ImageBind) has no sensor towers: the new pairs exist only in the fused space
    assert not any(role == "base" and any(s in pair for s in SENSORS) for role, _, pair in records)


def test_the_export_encodes_sensor_files_like_the_trained_space(seven_run) -> None:
    result, world = seven_run
    item = world.select("test")[0]
    loaded = spacebind.load(result.out)
    for m in SENSORS:
        emb = loaded.encode(m, [item.fields[m]])
        torch.testing.assert_close(emb, result.space.encode(m, [item.fields[m]]))
        torch.testing.assert_close(emb.norm(dim=-1), torch.ones(1))
