"""The CLI: thin commands, examples in --help, one-line errors with exit code 2."""
from __future__ import annotations

from pathlib import Path

import pytest
from tiny_datasets import TINY_RECIPE
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
    (["encode", "no_such_expert", "text", "hello", "--out", "x.npy"],
     "'no_such_expert' is neither a fused checkpoint directory nor a registered expert"),
    (["eval", "not-a-checkpoint", "nowhere"], "not a fused checkpoint"),
    (["world", "generate", "out", "--sensors", "smell"], "unknown sensor modality(ies) ['smell']"),
    (["experts", "nomatch*"], "no registered expert matches 'nomatch*'; known: "),
    (["embed", "world_unified", "nowhere", "--out", "cache", "--kwarg", "concepts_seed=abc"],
     "expert 'world_unified': wrong type: concepts_seed='abc' (expected int: "),
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




@pytest.fixture(scope="module")
def tiny_fuse(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A tiny fuse through the CLI with progress on and stderr not a terminal: (export, stderr)."""
    root = tmp_path_factory.mktemp("tiny")
    (root / "tiny.yaml").write_text(TINY_RECIPE)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPACEBIND_PROGRESS", "1")
        result = CliRunner().invoke(app, ["fuse", str(root / "tiny.yaml"), "--out", str(root / "out"), "--work", str(root / "work")])
    assert result.exit_code == 0, result.output
    return root / "out", result.stderr


def test_fuse_log_is_plain_lines_with_stage_durations(tiny_fuse: tuple[Path, str]) -> None:
    _, log = tiny_fuse
    lines = log.splitlines()
    assert lines and all(line.strip() for line in lines), log  # no blank lines, no bars
    assert all(line.startswith("spacebind: ") for line in lines) and "\x1b" not in log
    for name in ["data", "expert 'u' (toy_experts:multi_expert)", "embedding caches", "bond 0: combination with e",
                 "evaluating on the test split"]:
        assert any(line.startswith(f"spacebind: {name}: done in ") for line in lines), name
    assert any(line.startswith("spacebind: training ") and ": done, " in line for line in lines)  # projector training


def test_fuse_export_holds_training_history(tiny_fuse: tuple[Path, str]) -> None:
    import json

    out, _ = tiny_fuse
    history = json.loads((out / "history.json").read_text())
    assert sorted(history) == ["bond0/e/member0", "bond0/e/member1"]
    assert all(len(rows) == 3 and {"epoch", "loss", "val_recall@1"} <= set(rows[0]) for rows in history.values())
    assert (out / "history.png").read_bytes().startswith(b"\x89PNG")
    assert "](history.png)" in (out / "README.md").read_text()
    config = json.loads((out / "config.json").read_text())
    assert {"history.json", "history.png"} <= set(config["files_sha256"])
    from spacebind.interop.hub import EXPORT_FILES

    assert {"history.json", "history.png"} <= set(EXPORT_FILES)


def test_fuse_quiet_and_dry_run_write_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tiny.yaml").write_text(TINY_RECIPE)
    monkeypatch.setenv("SPACEBIND_PROGRESS", "1")
    args = ["fuse", str(tmp_path / "tiny.yaml"), "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")]
    result = runner.invoke(app, [*args, "--dry-run", "--seed", "3", "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "train: audio 24, image 24, point 24, text 24" in result.stdout and "bond0/e: 2 projector(s)" in result.stdout
    assert result.stderr == ""
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()
    both = runner.invoke(app, [*args, "--quiet", "--verbose"])
    assert both.exit_code == 2 and "exclude each other" in both.output


def test_progress_lines_when_not_a_terminal(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from spacebind.io import progress

    monkeypatch.setenv("SPACEBIND_PROGRESS", "1")
    with progress.verbosity(progress.VERBOSE):
        assert sum(1 for _ in progress.track(range(20), "counting")) == 20
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "spacebind: counting: 20 items" and len(lines) == 12  # start, each 10 %, done
    assert lines[1].startswith("spacebind: counting: 2/20 (10 %), ") and "ETA" in lines[1]
    assert lines[-1].startswith("spacebind: counting: done, 20 items in ")
    with progress.verbosity(progress.QUIET):
        list(progress.track(range(3), "silent"))
        progress.note("silent")
    assert capsys.readouterr().err == ""
    assert progress.duration(125) == "2 min 05 s" and progress.duration(3.21) == "3.2 s"


def test_every_bad_lambda_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY_RECIPE.replace("lambdas: {text: 0.5, image: 0.5}", "lambdas: {text: 1.5, image: -1, smell: 0.2}"))
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2
    for part in ["unknown modality 'smell'", "lambda for 'text' is 1.5", "lambda for 'image' is -1"]:
        assert part in result.output, part


def test_validate_check_files_reports_every_missing_file(tmp_path: Path) -> None:
    import json

    data = tmp_path / "data"
    data.mkdir()
    lines = [{"id": f"i{k}", "split": "train", "image": f"{k}.png", "text": "t"} for k in range(3)]
    (data / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    (data / "1.png").write_bytes(b"")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(TINY_RECIPE.replace("world: {seed: 1, train: 24, val: 8, test: 8, num_concepts: 4}", "path: data"))
    assert runner.invoke(app, ["validate", str(recipe)]).exit_code == 0
    result = runner.invoke(app, ["validate", str(recipe), "--check-files"])
    assert result.exit_code == 2 and "2 file(s) that are not there" in result.output
    assert "item 'i0' image: no file" in result.output and "item 'i2' image: no file" in result.output


def test_json_output_is_only_json(tiny_fuse: tuple[Path, str], tmp_path: Path) -> None:
    import json

    listed = runner.invoke(app, ["experts", "world_*", "--json"])
    assert listed.exit_code == 0 and {"world_unified", "world_audio_text"} <= {e["name"] for e in json.loads(listed.stdout)}
    licences = {e["name"]: e["licence"] for e in json.loads(runner.invoke(app, ["experts", "--json"]).stdout)}
    assert licences["imagebind_huge"] == "cc-by-nc-sa-4.0" and licences["world_unified"] == "apache-2.0"
    assert licences["open_clip"] is None  # the weights are the user's choice
    out, _ = tiny_fuse
    info = runner.invoke(app, ["info", str(out), "--json", "--trust-remote-code"])
    assert info.exit_code == 0, info.output
    assert json.loads(info.stdout)["name"] == "tiny"
    data = next((out.parent / "work" / "data").iterdir())
    ev = runner.invoke(app, ["eval", str(out), str(data), "--json", "--trust-remote-code", "--cache-dir", str(tmp_path / "c")])
    assert ev.exit_code == 0, ev.output
    assert {r["task"] for r in json.loads(ev.stdout)} >= {"retrieval"}


@pytest.mark.parametrize("args", [
    ["embed", "toy_experts:text_expert", "DATA", "--out", "OUT", "--shard-size", "0"],
    ["embed", "toy_experts:text_expert", "DATA", "--out", "OUT", "--shard-size", "-5"],
    ["embed", "toy_experts:text_expert", "DATA", "--out", "OUT", "--batch-size", "0"],
    ["embed", "toy_experts:text_expert", "DATA", "--out", "OUT", "--workers", "-1"],
    ["mine", "CACHE", "--seed", "text", "--target", "image", "--out", "OUT", "--k", "0"],
    ["mine", "CACHE", "--seed", "text", "--target", "image", "--out", "OUT", "--chunk-size", "-1"],
    ["index", "CKPT", "DATA", "--out", "OUT", "--nlist", "0"],
    ["search", "CKPT", "INDEX", "--text", "a kettle", "--k", "0"],
])
def test_embed_and_retrieval_numeric_options_are_range_checked(args: list[str], tmp_path: Path) -> None:
    result = runner.invoke(app, [str(tmp_path / a) if a.isupper() else a for a in args])
    assert result.exit_code == 2, result.output
    assert "greater than or equal to" in " ".join(result.output.split()) and not (tmp_path / "OUT").exists()


def test_two_fuses_of_a_recipe_give_byte_identical_exports_whatever_the_thread_count(tmp_path: Path) -> None:
    """Fresh work directories, the caller at 1 and then 2 intra-op threads: training pins its own
    threads, so the weights and metrics come out byte for byte the same (issue 20, item 9)."""
    import torch
    import yaml

    from spacebind.fuse import fuse
    from spacebind.recipe import validate_recipe

    before = torch.get_num_threads()
    outs = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out = tmp_path / f"out{threads}"
            fuse(validate_recipe(yaml.safe_load(TINY_RECIPE)), work=tmp_path / f"work{threads}", out=out, progress=False)
            outs.append(out)
    finally:
        torch.set_num_threads(before)
    for name in ("model.safetensors", "metrics.json"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name


def test_long_commands_take_quiet_and_verbose(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--quiet` / `-q` and `--verbose` / `-v` on every long command, exclusive as on `fuse` (issue 18)."""
    monkeypatch.setenv("SPACEBIND_PROGRESS", "1")
    data = tmp_path / "world"
    gen = runner.invoke(app, ["world", "generate", str(data), "--seed", "2", "--train", "4", "--val", "2", "--test", "2", "-q"])
    assert gen.exit_code == 0, gen.output
    assert gen.stderr == ""
    args = ["embed", "toy_experts:text_expert", str(data), "--out", str(tmp_path / "cache"), "--kwarg", "dim=5"]
    loud = runner.invoke(app, [*args[:-4], "--out", str(tmp_path / "loud"), "--kwarg", "dim=5", "--verbose"])
    assert loud.exit_code == 0 and "spacebind: " in loud.stderr, loud.output
    quiet = runner.invoke(app, [*args, "--quiet"])
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stderr == "" and "text 8" in quiet.stdout
    for command in (["embed"], ["sweep"], ["index"], ["mine"], ["world", "generate"], ["eval"], ["fuse"]):
        assert all(flag in runner.invoke(app, [*command, "--help"]).output for flag in ("--quiet", "--verbose", "-q", "-v"))
    both = runner.invoke(app, [*args, "-q", "-v"])
    assert both.exit_code == 2 and "exclude each other" in both.output
    for command in (["world", "generate", str(tmp_path / "w2")], ["eval", "CKPT", str(data)], ["sweep", "CKPT", str(data)],
                    ["index", "CKPT", str(data), "--out", str(tmp_path / "idx")],
                    ["mine", str(tmp_path / "cache"), "--seed", "text", "--target", "text", "--out", str(tmp_path / "p")]):
        result = runner.invoke(app, [*command, "--quiet", "--verbose"])
        assert result.exit_code == 2 and "exclude each other" in result.output, command
    assert not (tmp_path / "w2").exists() and not (tmp_path / "idx").exists() and not (tmp_path / "p").exists()


def test_search_and_similarity_json_is_only_json(tiny_fuse: tuple[Path, str], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    out, _ = tiny_fuse
    data = next((out.parent / "work" / "data").iterdir())
    built = runner.invoke(app, ["index", str(out), str(data), "--out", str(tmp_path / "idx"), "--split", "test",
                                "--trust-remote-code", "--cache-dir", str(tmp_path / "c"), "-q"])
    assert built.exit_code == 0, built.output
    found = runner.invoke(app, ["search", str(out), str(tmp_path / "idx"), "--text", "a small red thing", "--k", "2",
                                "--json", "--trust-remote-code"])
    assert found.exit_code == 0, found.output
    hits = json.loads(found.stdout)
    assert isinstance(hits, list) and 1 <= len(hits) <= 2 and [h["rank"] for h in hits] == list(range(1, len(hits) + 1))
    assert {"id", "modality", "score"} <= set(hits[0])
    each = runner.invoke(app, ["search", str(out), str(tmp_path / "idx"), "--text", "a small red thing", "--text", "a blue one",
                               "--each", "--k", "2", "--json", "--trust-remote-code"])
    assert each.exit_code == 0, each.output
    per_query = json.loads(each.stdout)  # one batched search, a top-k per query; the first equals the search above
    assert [q["query"] for q in per_query] == ["text:a small red thing", "text:a blue one"]
    assert [h["id"] for h in per_query[0]["hits"]] == [h["id"] for h in hits]
    assert [h["score"] for h in per_query[0]["hits"]] == pytest.approx([h["score"] for h in hits], abs=1e-5)
    weighted = runner.invoke(app, ["search", str(out), str(tmp_path / "idx"), "--text", "a", "--text", "b", "--each",
                                   "--weights", "1,2", "--trust-remote-code"])
    assert weighted.exit_code == 2 and "--each" in weighted.output
    from spacebind.evaluation import similarity

    splits, rank_pairs = [], similarity.rank_pairs
    monkeypatch.setattr(similarity, "rank_pairs", lambda *a, **k: splits.append(a[2]) or rank_pairs(*a, **k))
    ranked = runner.invoke(app, ["similarity", "toy_experts:logged_expert:text", "toy_experts:logged_expert:image",
                                 "toy_experts:text_expert:text", "--data", str(data), "--k", "2", "--json",
                                 "--cache", str(tmp_path / "sim"), "--plot", str(tmp_path / "sim.png")])
    assert ranked.exit_code == 0, ranked.output
    rows = json.loads(ranked.stdout)
    assert len(rows) == 2 and all({"a", "b", "mutual_knn", "cka", "n"} <= set(r) for r in rows)
    assert splits == ["val"]  # encoders are chosen on val by default: test stays held out
    assert (tmp_path / "sim.png").is_file()


def test_dry_run_plan_counts_an_unpaired_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unpaired world's train items have one modality each (image, audio, point, text in turn);
    the plan counts them as `generate_world` writes them (issue 18)."""
    import json
    from collections import Counter

    from spacebind.fuse import world_counts
    from spacebind.world.generate import generate_world

    recipe = TINY_RECIPE.replace("world: {seed: 1, train: 24, val: 8, test: 8, num_concepts: 4}",
                                 "world: {seed: 1, train: 10, val: 3, test: 2, num_concepts: 4, unpaired: true}")
    (tmp_path / "pools.yaml").write_text(recipe)
    monkeypatch.setenv("SPACEBIND_PROGRESS", "1")
    result = runner.invoke(app, ["fuse", str(tmp_path / "pools.yaml"), "--work", str(tmp_path / "work"), "--dry-run", "-q"])
    assert result.exit_code == 0, result.output
    assert "  train: audio 3, image 3, point 2, text 2" in result.stdout.splitlines()
    assert "  val: audio 3, image 3, point 3, text 3" in result.stdout.splitlines()
    assert "unimodal pools" in result.stdout and not (tmp_path / "work").exists()
    sizes = {"train": 10, "val": 3, "test": 2}
    world = generate_world(tmp_path / "w", seed=1, sizes=sizes, num_concepts=4, sensors=["thermal"], unpaired=True, progress=False)
    written: dict[str, Counter[str]] = {}
    for line in (world / "manifest.jsonl").read_text().splitlines():
        row = json.loads(line)
        written.setdefault(row["split"], Counter()).update(m for m in ("image", "audio", "point", "text", "thermal") if m in row)
    assert world_counts(sizes, ["thermal"], unpaired=True) == {s: dict(sorted(c.items())) for s, c in written.items()}


def test_outputs_and_option_values_are_checked_before_the_work(tiny_fuse: tuple[Path, str], tmp_path: Path) -> None:
    """A path that cannot be written, or a value that cannot be parsed, is one error line (exit 2)
    before any evaluation, training or export runs, not a traceback after it."""
    out, _ = tiny_fuse
    (tmp_path / "afile").write_text("x")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("x")
    (tmp_path / "tiny.yaml").write_text(TINY_RECIPE)
    recipe, missing = str(tmp_path / "tiny.yaml"), str(tmp_path / "nowhere")
    cases = [
        (["eval", missing, missing, "--out", str(tmp_path / "afile"), "--format", "clip_benchmark"], "exists and is a file"),
        (["eval", missing, missing, "--out", str(tmp_path / "afile" / "x.json")], "cannot write under"),
        (["export", str(out), "--out", str(tmp_path / "afile"), "--trust-remote-code"], "exists and is a file"),
        (["similarity", "a:text", "b:text", "--data", missing, "--plot", str(tmp_path / "afile" / "x.png")],
         "cannot write under"),
        (["fuse", recipe, "--out", str(taken), "--work", str(tmp_path / "work")], "not empty and not a fused checkpoint"),
        (["fuse", recipe, "--out", str(taken), "--dry-run"], "not empty and not a fused checkpoint"),
        (["fuse", recipe, "--seed=-1", "--dry-run"], "--seed -1"),
        (["fuse", recipe, "--device", "banana", "--dry-run"], "not a torch device"),
        (["sweep", missing, missing, "--grid", "a,b"], "comma-separated"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and message in " ".join(result.output.split()), (args, result.output)
        assert "Traceback" not in result.output
    assert not (tmp_path / "work").exists() and (taken / "mine.txt").read_text() == "x"


def test_an_export_records_the_seed_it_was_run_with(tmp_path: Path) -> None:
    """`fuse --seed` changes the weights; the export's recipe.yaml says so (and still loads)."""
    from spacebind.recipe import load_recipe

    (tmp_path / "tiny.yaml").write_text(TINY_RECIPE)
    result = runner.invoke(app, ["fuse", str(tmp_path / "tiny.yaml"), "--seed", "3", "--out", str(tmp_path / "out"),
                                 "--work", str(tmp_path / "work"), "-q"])
    assert result.exit_code == 0, result.output
    stored = (tmp_path / "out" / "recipe.yaml").read_text()
    assert stored.startswith(TINY_RECIPE.rstrip("\n"))
    assert stored.endswith("# run as `spacebind fuse … --seed 3`, which overrides train.seed: 3\n")
    assert load_recipe(tmp_path / "out" / "recipe.yaml")[0].name == load_recipe(tmp_path / "tiny.yaml")[0].name


def test_a_fused_argument_that_is_neither_a_directory_nor_an_expert_says_both() -> None:
    for args in (["info", "world_unifed"], ["encode", "world_unifed", "text", "a dog", "--out", "x.npy"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert "'world_unifed' is neither a fused checkpoint directory nor a registered expert (experts named like " \
               "it: world_unified" in " ".join(result.output.split()), result.output


def test_embed_names_the_bad_items_it_skipped(tmp_path: Path) -> None:
    from tiny_datasets import tiny_dataset

    tiny_dataset(tmp_path / "data", corrupt=5)
    result = runner.invoke(app, ["embed", "toy_experts:image_text_expert", str(tmp_path / "data"), "--out",
                                 str(tmp_path / "cache"), "-q"])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "text 23, image 22" in output and "skipped 1 bad image item(s), left out of every task" in output
    assert "item5: " in output and "--retry-bad tries them again" in output
    from PIL import Image

    Image.new("RGB", (6, 6)).save(tmp_path / "data" / "image" / "5.png", format="PNG")  # the file fixed
    result = runner.invoke(app, ["embed", "toy_experts:image_text_expert", str(tmp_path / "data"), "--out",
                                 str(tmp_path / "cache"), "-q", "--retry-bad"])
    assert result.exit_code == 0 and "text 23, image 23" in result.output and "skipped" not in result.output
