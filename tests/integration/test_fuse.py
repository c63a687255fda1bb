"""End to end on a small held-out world: recipe → fused checkpoint, and the demo's claims."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

import spacebind
from spacebind.cli import app
from spacebind.fuse import fuse
from spacebind.recipe import validate_recipe

ROOT = Path(__file__).resolve().parents[2]


def r1(records: list[dict], role: str, pair: list[str], key: str) -> float:
    rec = next(r for r in records if r["role"] == role and r["task"] == "retrieval" and r["modalities"] == pair)
    return rec["metrics"][key]


@pytest.fixture(scope="module")
def fused_run(small_world, tmp_path_factory):
    raw = yaml.safe_load((ROOT / "recipes" / "demo.yaml").read_text())
    raw["data"] = {"path": str(small_world.root)}
    raw["export"] = {"out": str(tmp_path_factory.mktemp("export") / "demo")}
    work = tmp_path_factory.mktemp("work")
    result = fuse(validate_recipe(raw), recipe_text=yaml.safe_dump(raw), work=work, progress=False)
    return result, small_world


def test_export_holds_everything(fused_run) -> None:
    result, _ = fused_run
    names = sorted(p.name for p in result.out.iterdir())
    assert names == ["README.md", "config.json", "history.json", "history.png", "metrics.json", "model.safetensors",
                     "recipe.yaml"]
    records = json.loads((result.out / "metrics.json").read_text())
    assert {r["role"] for r in records} == {"base", "expert", "fused"}
    assert {r["model"] for r in records} == {"unified", "image_text", "audio_text", "demo"}
    config = json.loads((result.out / "config.json").read_text())
    assert config["space"]["base"]["experts"][0]["source"] == "world_image_text"
    assert len(config["space"]["base"]["experts"][0]["sha256"]) == 64
    card = (result.out / "README.md").read_text()
    assert "- `versatile`: text 0.1, audio 0.5" in card  # the recipe's presets, loadable by name
    if result.space.channels:  # how to score other κ, on the outermost bond's channel line only
        assert card.count("spacebind sweep FUSED DATA --channel") == 1


def test_fused_beats_base_on_audio_text_and_keeps_image_text(fused_run) -> None:
    result, _ = fused_run
    rec = result.records
    for key in ["audio_retrieval_recall@1", "text_retrieval_recall@1"]:
        assert r1(rec, "fused", ["text", "audio"], key) > r1(rec, "base", ["text", "audio"], key) + 0.02, key
    image_text = ["image_retrieval_recall@1", "text_retrieval_recall@1"]
    fused = sum(r1(rec, "fused", ["text", "image"], k) for k in image_text) / 2
    expert = sum(r1(rec, "expert", ["text", "image"], k) for k in image_text) / 2
    assert fused >= expert - 0.01  # mean of both directions: within 1 point of the image-text expert


def test_fused_is_not_below_the_audio_text_expert_on_its_own_pair(fused_run) -> None:
    """The default (channel at the prior unless val shows better) ranks audio↔text as the expert
    does, and classifies audio as it does: never below it on its pair, on a held-out world."""
    result, _ = fused_run
    rec = result.records
    for key in ["audio_retrieval_recall@1", "text_retrieval_recall@1"]:
        assert r1(rec, "fused", ["text", "audio"], key) >= r1(rec, "expert", ["text", "audio"], key) - 0.004, key

    def acc1(role: str) -> float:
        return next(r["metrics"]["acc1"] for r in rec if r["role"] == role and r["task"] == "zeroshot_classification"
                    and r["modalities"] == ["audio", "text"])

    assert acc1("fused") >= acc1("expert") - 0.004


def test_loaded_checkpoint_encodes_raw_files_like_the_trained_space(fused_run) -> None:
    result, world = fused_run
    wav = world.select("test", "audio")[0].fields["audio"]
    loaded = spacebind.load(result.out)
    emb = loaded.encode("audio", [wav])
    assert emb.shape == (1, result.space.dim)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(1))
    torch.testing.assert_close(emb, result.space.encode("audio", [wav]))


def test_cli_eval_and_encode_on_the_export(fused_run, tmp_path: Path) -> None:
    result, world = fused_run
    runner = CliRunner()
    out_json = tmp_path / "m.json"
    ev = runner.invoke(app, ["eval", str(result.out), str(world.root), "--out", str(out_json), "--cache-dir", str(tmp_path / "c")])
    assert ev.exit_code == 0, ev.output
    fused = [r for r in result.records if r["role"] == "fused"]
    assert json.loads(out_json.read_text()) == json.loads(json.dumps(fused))
    texts = [it.fields["text"] for it in world.select("test", "text")[:3]]
    enc = runner.invoke(app, ["encode", str(result.out), "text", *texts, "--out", str(tmp_path / "t.npy")])
    assert enc.exit_code == 0, enc.output
    import numpy as np

    arr = np.load(tmp_path / "t.npy")
    np.testing.assert_allclose(arr, result.space.encode("text", texts).numpy(), atol=1e-6)


def test_presets_and_lambda_sweep(fused_run, tmp_path: Path) -> None:
    """Coarse presets from the recipe load by name; the bond's own λ were chosen on val from the
    recipe's; the sweep stores the best λ per task."""
    result, world = fused_run
    expertise = spacebind.load(result.out, preset="audio_text_expertise")
    assert expertise.lambdas == {"audio": 0.8, "text": 0.5}
    assert spacebind.load(result.out, preset="versatile").lambdas == {"audio": 0.5, "text": 0.1}
    choice = result.space.choices["lambdas"]
    assert choice["coarse"] == {"text": 0.1, "audio": 0.5} and choice["lambdas"] == result.space.lambdas
    with pytest.raises(spacebind.InputError, match="no λ preset 'nope'"):
        spacebind.load(result.out, preset="nope")
    before = json.loads((result.out / "config.json").read_text())["files_sha256"]
    runner = CliRunner()
    swept = runner.invoke(app, ["sweep", str(result.out), str(world.root), "--grid", "0,0.5,1", "--cache-dir", str(tmp_path)])
    assert swept.exit_code == 0, swept.output
    after = json.loads((result.out / "config.json").read_text())["files_sha256"]  # the rest of the export stays
    regenerated = ("README.md", "history.png", "sweep.json", "sweep.png")  # the card, a plot, the sweep's own files
    assert "history.json" in after and {k: v for k, v in after.items() if k not in regenerated} == \
        {k: v for k, v in before.items() if k not in regenerated}
    assert set(after) == set(before) | {"sweep.json", "sweep.png"} and "history.png" in (result.out / "README.md").read_text()
    report = json.loads((result.out / "sweep.json").read_text())
    assert report["modalities"] == ["text", "audio"] and len(report["points"]) == 9
    assert (result.out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    best, scores = report["best"]["text→audio R@1"], report["scores"]["text→audio R@1"]
    if best in report["points"]:
        assert scores[report["points"].index(best)] == max(scores)
    else:  # no grid point beats the current λ (the channel ranks audio↔text): it is kept
        assert best == {m: result.space.lambdas[m] for m in best} and max(scores) <= report["baseline"]["text→audio R@1"]
    tuned = spacebind.load(result.out, preset="best:text-audio")
    assert tuned.lambdas == {**result.space.lambdas, **best}
    assert spacebind.load(result.out, preset="versatile").lambdas == {"audio": 0.5, "text": 0.1}  # coarse presets kept
    reloaded = spacebind.load(result.out)
    assert reloaded.choices == result.space.choices  # the sweep keeps what training chose
    assert reloaded.channels == result.space.channels and reloaded.dim == result.space.dim  # and the channel
    texts = ["a dog barking", "rain on a roof"]
    torch.testing.assert_close(reloaded.encode("text", texts), result.space.encode("text", texts))
    # the channel's κ swept the same way: its best per task becomes the preset of that name
    swept = runner.invoke(app, ["sweep", str(result.out), str(world.root), "--channel", "--grid", "0,0.5",
                                "--cache-dir", str(tmp_path)])
    assert swept.exit_code == 0, swept.output
    report = json.loads((result.out / "sweep.json").read_text())
    assert report["modalities"] == ["channel:text", "channel:audio"] and len(report["points"]) == 4
    assert report["current"] == {f"channel:{m}": v for m, v in result.space.channels.items()}
    best = report["best"]["audio zero-shot acc1"]
    zero_shot = spacebind.load(result.out, preset="best:zeroshot-audio")
    assert zero_shot.channels == {m.removeprefix("channel:"): v for m, v in best.items()}
    assert zero_shot.lambdas == result.space.lambdas
