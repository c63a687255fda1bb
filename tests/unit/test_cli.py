"""The CLI: thin commands, examples in --help, one-line errors with exit code 2."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from spacebind.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_help_lists_commands_with_examples() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ["validate", "experts", "world", "embed", "mine", "fuse", "eval", "sweep", "encode"]:
        assert command in result.output
    for command in [["validate"], ["experts"], ["world", "generate"], ["embed"], ["mine"], ["fuse"], ["eval"], ["sweep"], ["encode"]]:
        sub = runner.invoke(app, [*command, "--help"])
        assert sub.exit_code == 0 and "Example: spacebind" in sub.output, command


def test_validate_ok_and_errors(tmp_path: Path) -> None:
    ok = runner.invoke(app, ["validate", str(ROOT / "recipes" / "demo.yaml")])
    assert ok.exit_code == 0 and "ok" in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "recipes" / "demo.yaml").read_text().replace("epochs:", "epochz:").replace("world_audio_text", "world_audio_txt"))
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2
    assert "2 error(s)" in result.output and "train.epochz: unknown field" in result.output
    assert "Traceback" not in result.output


def test_experts_wildcard() -> None:
    result = runner.invoke(app, ["experts", "world_*"])
    assert result.exit_code == 0
    for name in ["world_unified", "world_image_text", "world_audio_text", "world_point_text"]:
        assert name in result.output
    assert "minilm" not in result.output


@pytest.mark.parametrize("args, message", [
    (["encode", "no_such_expert", "text", "hello", "--out", "x.npy"], "unknown expert 'no_such_expert'"),
    (["eval", "not-a-checkpoint", "nowhere"], "not a fused checkpoint"),
    (["world", "generate", "out", "--sensors", "smell"], "unknown sensor modality(ies) ['smell']"),
    (["experts", "nomatch*"], "no registered expert matches 'nomatch*'; known: "),
])
def test_errors_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_world_generate_and_embed_commands(tmp_path: Path) -> None:
    data = tmp_path / "world"
    gen = runner.invoke(app, ["world", "generate", str(data), "--seed", "2", "--train", "6", "--val", "2", "--test", "4"])
    assert gen.exit_code == 0, gen.output
    assert len((data / "manifest.jsonl").read_text().splitlines()) == 12
    args = ["embed", "toy_experts:text_expert", str(data), "--out", str(tmp_path / "cache"), "--kwarg", "dim=5", "--shard-size", "5"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "text 12" in result.output
    from spacebind.cache.store import EmbeddingCache

    cache = EmbeddingCache.open(tmp_path / "cache")
    assert cache.dim == 5 and len(cache.manifest["modalities"]["text"]["shards"]) == 3
    other = runner.invoke(app, [*args[:-4], "--kwarg", "dim=6"])
    assert other.exit_code == 2 and "was made with" in other.output
    mined = runner.invoke(app, ["mine", str(tmp_path / "cache"), "--seed", "text", "--target", "text", "--k", "2",
                                "--out", str(tmp_path / "pseudo")])
    assert mined.exit_code == 0, mined.output
    assert "12 text seeds × 2 text neighbours" in mined.output and (tmp_path / "pseudo" / "neighbours.safetensors").is_file()


def test_recipe_can_name_user_code_by_import_path(tmp_path: Path) -> None:
    recipe = tmp_path / "mine.yaml"
    recipe.write_text(
        "name: mine\ndata: {path: data}\nexperts:\n  a: {import: 'toy_experts:text_expert', kwargs: {dim: 4}}\n"
        "  b: toy_experts:text_expert\nbase: a\nbonds: [{type: combination, expert: b}]\n"
    )
    result = runner.invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 0, result.output


def test_encode_expands_a_directory_of_files(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from spacebind.cli import expand_directories

    folder = tmp_path / "clouds"
    folder.mkdir()
    for name in ("b.npy", "a.npy", ".hidden"):
        (folder / name).write_bytes(b"")
    assert expand_directories("point", [str(folder), "x.npy"]) == [str(folder / "a.npy"), str(folder / "b.npy"), "x.npy"]
    assert expand_directories("text", [str(folder)]) == [str(folder)]
    images = tmp_path / "images"
    images.mkdir()
    for name in ("b.png", "a.png"):
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(images / name)
    result = runner.invoke(app, ["encode", "toy_experts:logged_expert", "image", str(images), "--out", str(tmp_path / "e.npy")])
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "e.npy").shape == (2, 8)
