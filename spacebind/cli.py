"""The `spacebind` command line: a thin layer over the Python API."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer
import yaml
from rich.console import Console

from spacebind.errors import SpacebindError
from spacebind.training.distributed import is_main

DEFAULT_GRID_TEXT = (0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1)
app = typer.Typer(
    help="Bind pretrained embedding spaces into one fused multimodal space.\n\n"
    "Quick start: spacebind fuse recipes/demo.yaml --out runs/demo",
    no_args_is_help=True, add_completion=False,
)
world_app = typer.Typer(help="The procedural world: a multimodal test bed with known ground truth.", no_args_is_help=True)
app.add_typer(world_app, name="world")
console = Console(width=None if sys.stdout.isatty() else 160)  # logs get a wide table
err_console = Console(stderr=True, soft_wrap=True)


def _run(job: Callable[[], Any]) -> Any:
    """Run a command body; spacebind errors become one red line and exit code 2, no traceback."""
    try:
        return job()
    except SpacebindError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
        raise typer.Exit(2) from None


def _kwargs(pairs: list[str] | None) -> dict[str, Any]:
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE")
        out[key] = yaml.safe_load(value)
    return out


def expand_directories(modality: str, inputs: list[str]) -> list[str]:
    """File inputs with each directory replaced by its files (sorted, hidden ones left out); text is kept."""
    if modality == "text":
        return list(inputs)
    out = []
    for item in inputs:
        path = Path(item)
        out += sorted(str(p) for p in path.iterdir() if p.is_file() and not p.name.startswith(".")) if path.is_dir() else [item]
    return out


@app.command()
def validate(recipe: Path = typer.Argument(..., help="Recipe YAML file.")) -> None:
    """Check a recipe and report every error at once, before any work.

    Example: spacebind validate recipes/demo.yaml
    """
    from spacebind.recipe import load_recipe

    parsed, _ = _run(lambda: load_recipe(recipe))
    console.print(f"[green]ok[/] {recipe}: {len(parsed.experts)} experts, {len(parsed.bonds)} bonds")


@app.command()
def experts(pattern: str = typer.Argument("*", help="Wildcard filter, e.g. 'world_*'.")) -> None:
    """List registered experts.

    Example: spacebind experts 'world_*'
    """
    from rich.table import Table

    from spacebind.errors import InputError
    from spacebind.experts.registry import EXPERTS

    def matching() -> list[str]:
        names = EXPERTS.list(pattern)
        if not names:
            raise InputError(f"no registered expert matches {pattern!r}; known: {', '.join(EXPERTS.list())}")
        return names

    table = Table("name", "modalities", "dim", "description")
    for name in _run(matching):
        e = EXPERTS.entry(name)
        table.add_row(name, ", ".join(e.modalities), str(e.dim or "?"), e.description)
    console.print(table)


@world_app.command("generate")
def world_generate(
    out: Path = typer.Argument(..., help="Output directory."),
    seed: int = typer.Option(0, help="Instance sampling seed."),
    train: int = typer.Option(2000, help="Train items."),
    val: int = typer.Option(300, help="Validation items."),
    test: int = typer.Option(500, help="Test items."),
    concepts_seed: int = typer.Option(0, help="Seed of the concept set (the world itself)."),
    num_concepts: int = typer.Option(24, help="Number of concepts (classes)."),
    sensors: str = typer.Option("", help="Optional modalities to add, comma-separated: video,thermal,event."),
) -> None:
    """Write a procedural-world dataset: PNG, WAV, NPY files, manifest.jsonl and classes.json.

    Example: spacebind world generate data/world --seed 1 --test 1000
    Example: spacebind world generate data/seven --sensors video,thermal,event
    """
    from spacebind.world.generate import generate_world

    path = _run(lambda: generate_world(
        out, seed=seed, sizes={"train": train, "val": val, "test": test},
        concepts_seed=concepts_seed, num_concepts=num_concepts, sensors=[m for m in sensors.split(",") if m],
    ))
    console.print(f"[green]wrote[/] {path}")


@app.command()
def embed(
    expert: str = typer.Argument(..., help="Registered expert name or module:attribute."),
    data: Path = typer.Argument(..., help="Dataset directory or manifest.jsonl."),
    out: Path = typer.Option(..., "--out", help="Cache directory (resumes if it exists)."),
    kwarg: Optional[list[str]] = typer.Option(None, "--kwarg", help="Expert argument KEY=VALUE (repeatable)."),
    modality: Optional[list[str]] = typer.Option(None, "--modality", help="Only these modalities (repeatable)."),
    shard_size: int = typer.Option(1024, help="Items per shard."),
    batch_size: Optional[int] = typer.Option(None, help="Encoder batch size (halved automatically on out-of-memory)."),
    workers: int = typer.Option(0, help="DataLoader processes decoding files while the expert runs."),
    precision: str = typer.Option("fp32", help="fp32, or bf16 / fp16 autocast on CUDA (no effect on CPU)."),
) -> None:
    """Embed a dataset with one expert into a sharded float16 cache. Runs unchanged under torchrun
    (shards split over ranks).

    Example: spacebind embed world_audio_text data/world --out caches/audio_text
    Example: torchrun --nproc-per-node 8 -m spacebind embed world_audio_text data/world --out caches/audio_text
    """
    from spacebind.cache.store import embed_dataset
    from spacebind.experts import build_expert
    from spacebind.io.datasets import Dataset

    for option, value, least in [("--shard-size", shard_size, 1), ("--batch-size", batch_size, 1), ("--workers", workers, 0)]:
        if value is not None and value < least:
            err_console.print(f"[bold red]error:[/] {option} must be at least {least}, got {value}", markup=True, highlight=False)
            raise typer.Exit(2)

    def job() -> Any:
        space = build_expert(expert, _kwargs(kwarg))
        return embed_dataset(space, Dataset.load(data), out, modalities=modality or None,
                             shard_size=shard_size, batch_size=batch_size, workers=workers, precision=precision)

    cache = _run(job)
    if not is_main():
        return
    counts = ", ".join(f"{m} {len(cache.ids(m))}" for m in cache.modalities)
    console.print(f"[green]cached[/] {out}: {counts}")


@app.command("mine")
def mine_cmd(
    cache: Path = typer.Argument(..., help="Embedding cache of an expert covering both modalities."),
    seed: str = typer.Option(..., "--seed", help="Modality of the seed items (the queries)."),
    target: str = typer.Option(..., "--target", help="Modality of the pool they retrieve from."),
    k: int = typer.Option(5, help="Neighbours per seed."),
    index: str = typer.Option("flat", help="flat (exact) or ivf (approximate, for large pools)."),
    nlist: int = typer.Option(256, help="IVF lists."),
    nprobe: int = typer.Option(16, help="IVF lists probed per query."),
    chunk_size: int = typer.Option(4096, help="Vectors per streamed chunk (bounds memory)."),
    out: Path = typer.Option(..., "--out", help="Directory for neighbours.safetensors (reused if it matches)."),
) -> None:
    """Mine pseudo pairs: each seed item retrieves its k nearest items of another modality.

    Example: spacebind mine caches/audio_text --seed text --target audio --k 5 --out pseudo/text2audio
    """
    from spacebind.cache.store import EmbeddingCache
    from spacebind.retrieval.mining import mine

    def job() -> Any:
        return mine(EmbeddingCache.open(cache), seed, target, k=k, index=index, nlist=nlist, nprobe=nprobe,  # type: ignore[arg-type]
                    chunk_size=chunk_size, out=out)

    result = _run(job)
    console.print(f"[green]mined[/] {len(result.seed_ids)} {seed} seeds × {result.indices.shape[1]} {target} neighbours → {out}")


@app.command()
def fuse(
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    out: Optional[Path] = typer.Option(None, "--out", help="Export directory (default: the recipe's export.out or runs/NAME)."),
    work: Optional[Path] = typer.Option(None, "--work", help="Work directory for data, caches, checkpoints."),
) -> None:
    """Run a recipe end to end: data, embed, train bonds, evaluate, export. Runs unchanged under
    torchrun (embedding and training split over ranks; rank 0 evaluates and exports).

    Example: spacebind fuse recipes/demo.yaml --out runs/demo
    Example: torchrun --nproc-per-node 8 -m spacebind fuse recipes/demo.yaml --out runs/demo
    """
    from spacebind.evaluation.report import records_table
    from spacebind.fuse import fuse as run_fuse
    from spacebind.recipe import load_recipe

    def job() -> Any:
        parsed, text = load_recipe(recipe)
        return run_fuse(parsed, recipe_text=text, base_dir=recipe.parent, out=out, work=work)

    result = _run(job)
    if not is_main():
        return
    console.print(records_table(result.records))
    console.print(f"[green]exported[/] {result.out}")


@app.command("eval")
def evaluate_cmd(
    fused: Path = typer.Argument(..., help="Fused checkpoint directory."),
    data: Path = typer.Argument(..., help="Dataset directory or manifest.jsonl."),
    split: str = typer.Option("test", help="Split to evaluate."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write records as JSON here."),
    cache_dir: Optional[Path] = typer.Option(None, help="Leaf embedding caches (default under $SPACEBIND_HOME)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow the checkpoint's user-code or remote-code experts to run."),
) -> None:
    """Evaluate a fused checkpoint: retrieval between every modality pair and zero-shot classification
    (with UniBind's class centres too when the checkpoint has them).

    Example: spacebind eval runs/demo data/world --split test --out metrics.json
    """
    from spacebind.evaluation import write_records
    from spacebind.evaluation.evaluate import evaluate_checkpoint
    from spacebind.evaluation.report import records_table

    records = _run(lambda: evaluate_checkpoint(fused, data, split, cache_dir=cache_dir, trust_remote_code=trust_remote_code))
    console.print(records_table(records))
    if out:
        write_records(out, records)


@app.command()
def similarity(
    encoders: list[str] = typer.Argument(..., help="Two or more EXPERT:MODALITY encoders."),
    data: Path = typer.Option(..., "--data", help="Probe dataset directory (items with paired modalities)."),
    split: str = typer.Option("test", help="Split of the probe dataset."),
    k: int = typer.Option(10, help="Neighbours for mutual k-NN."),
    cache: Optional[Path] = typer.Option(None, help="Embedding cache root (default $SPACEBIND_HOME/caches/<data>)."),
    plot: Optional[Path] = typer.Option(None, help="Also draw the mutual k-NN scores as a heatmap PNG."),
) -> None:
    """Rank candidate encoder pairs (every pair of different modalities) by mutual k-NN
    alignment and linear CKA on a probe set, to choose encoders to bind.

    Example: spacebind similarity world_image:image minilm:text world_audio_text:text --data data/world
    """
    from rich.table import Table

    from spacebind.evaluation.similarity import heatmap, rank_similarity

    rows = _run(lambda: rank_similarity(encoders, data, split, k, cache))
    table = Table("rank", "encoder A", "encoder B", f"mutual {k}-NN", "linear CKA", "probe items")
    for i, r in enumerate(rows, 1):
        table.add_row(str(i), str(r["a"]), str(r["b"]), f"{r['mutual_knn']:.3f}", f"{r['cka']:.3f}", str(r["n"]))
    console.print(table)
    if plot is not None:
        console.print(f"[green]wrote[/] {heatmap(rows, plot)}")


@app.command()
def sweep(
    fused: Path = typer.Argument(..., help="Fused checkpoint directory."),
    data: Path = typer.Argument(..., help="Dataset directory or manifest.jsonl (its validation split is used)."),
    split: str = typer.Option("val", help="Split to tune on (never the test split you report)."),
    grid: str = typer.Option(",".join(map(str, DEFAULT_GRID_TEXT)), help="Comma-separated λ values."),
    modality: Optional[list[str]] = typer.Option(None, "--modality", help="Sweep only these λ (repeatable; at most two for the heatmap)."),
    save: bool = typer.Option(True, help="Store the best λ per task as presets `best:<task>` in the checkpoint."),
    held_out: str = typer.Option("test", help="Also score the current and best λ on this split (reported, never used to choose; '' for none)."),
    cache_dir: Optional[Path] = typer.Option(None, help="Leaf embedding caches (default under $SPACEBIND_HOME)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow the checkpoint's user-code or remote-code experts to run."),
) -> None:
    """Fine λ tuning: evaluate a λ grid of the last bond, pick the best per task, draw heatmaps.

    Writes FUSED/sweep.json and FUSED/sweep.png; with --save the best λ become presets
    (`spacebind.load(FUSED, preset="best:text-audio")`).

    Example: spacebind sweep runs/demo data/world --grid 0,0.25,0.5,0.75,1
    """
    from spacebind.evaluation.sweep import preset_name, sweep_checkpoint

    values = [float(v) for v in grid.split(",") if v.strip()]
    result = _run(lambda: sweep_checkpoint(fused, data, split=split, grid=values, modalities=modality or None,
                                           save=save, held_out=held_out or None, cache_dir=cache_dir,
                                           trust_remote_code=trust_remote_code))
    from rich.table import Table

    other = result.held_out_split
    columns = ["task", "now", "best", *([f"now ({other})", f"best ({other})"] if other else []), "best λ", "preset"]
    table = Table(*columns, title=f"λ sweep on {split} (%)")
    for task, best in result.best.items():
        score = max(result.scores[task] + [result.baseline[task]])
        lam = ", ".join(f"{m} {v:g}" for m, v in best.items())
        held = [f"{100 * result.held_out[task][k]:.1f}" for k in ("now", "best")] if other else []
        table.add_row(task, f"{100 * result.baseline[task]:.1f}", f"{100 * score:.1f}", *held, lam, preset_name(task))
    console.print(table)


@app.command()
def encode(
    fused: Path = typer.Argument(..., help="Fused checkpoint directory (or a registered expert name)."),
    modality: str = typer.Argument(..., help="text, image, audio, point, ..."),
    inputs: list[str] = typer.Argument(..., help="Files or directories of files, or strings for text."),
    out: Path = typer.Option(..., "--out", help="Output .npy file [N, dim]."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow the checkpoint's user-code or remote-code experts to run."),
) -> None:
    """Encode inputs with a fused space and write the embeddings as .npy.

    Example: spacebind encode runs/demo audio clip.wav --out clip.npy
    """
    import numpy as np

    from spacebind.checkpoint import load
    from spacebind.experts import build_expert
    from spacebind.io.files import atomic_path

    def job() -> Any:
        space = load(fused, trust_remote_code=trust_remote_code) if fused.is_dir() else build_expert(str(fused))
        emb = space.encode(modality, expand_directories(modality, inputs)).numpy()
        with atomic_path(out) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, emb)
        return emb

    emb = _run(job)
    console.print(f"[green]wrote[/] {out}: {emb.shape[0]} × {emb.shape[1]}")



@app.command("index")
def index_cmd(
    fused: Path = typer.Argument(..., help="Fused checkpoint directory."),
    data: Path = typer.Argument(..., help="Dataset directory or manifest.jsonl: the collection to index."),
    out: Path = typer.Option(..., "--out", help="Index directory."),
    modality: Optional[list[str]] = typer.Option(None, "--modality", help="Only these modalities (repeatable; default: all)."),
    split: Optional[str] = typer.Option(None, help="Only items of this split (default: all)."),
    index: str = typer.Option("flat", help="flat (exact inner product) or ivf (approximate, for large collections)."),
    nlist: int = typer.Option(256, help="IVF lists."),
    nprobe: int = typer.Option(16, help="IVF lists probed per query."),
    chunk_size: int = typer.Option(4096, help="Items embedded and added per step (bounds memory)."),
    cache_dir: Optional[Path] = typer.Option(None, help="Leaf embedding caches (default under $SPACEBIND_HOME)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow the checkpoint's user-code or remote-code experts to run."),
) -> None:
    """Build a FAISS index of a collection embedded by a fused space, one index per modality.

    Example: spacebind index runs/demo data/world --out runs/demo-index --modality point --split test
    """
    from spacebind.checkpoint import load
    from spacebind.search import build_index

    def job() -> Any:
        return build_index(load(fused, trust_remote_code=trust_remote_code), data, out, modalities=modality or None, split=split, kind=index,  # type: ignore[arg-type]
                           nlist=nlist, nprobe=nprobe, chunk_size=chunk_size, cache_dir=cache_dir, fused=fused)

    built = _run(job)
    counts = ", ".join(f"{m} {len(items)}" for m, items in built.items.items())
    console.print(f"[green]indexed[/] {out}: {counts} (dim {built.dim}, {index})")


@app.command("search")
def search_cmd(
    fused: Path = typer.Argument(..., help="Fused checkpoint directory the index was built with."),
    index: Path = typer.Argument(..., help="Index directory (from `spacebind index`)."),
    text: Optional[list[str]] = typer.Option(None, "--text", help="Text query (repeatable)."),
    image: Optional[list[str]] = typer.Option(None, "--image", help="Image file query (repeatable)."),
    audio: Optional[list[str]] = typer.Option(None, "--audio", help="Audio file query (repeatable)."),
    point: Optional[list[str]] = typer.Option(None, "--point", help="Point cloud file query (repeatable)."),
    query: Optional[list[str]] = typer.Option(None, "--query", help="MODALITY=INPUT for other modalities (repeatable)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Comma-separated weights, one per query, in the order "
                                          "text, image, audio, point, then other --query modalities (default: all 1)."),
    k: int = typer.Option(10, "-k", "--k", help="Items to show."),
    target: Optional[list[str]] = typer.Option(None, "--target", help="Only items of these modalities (repeatable)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow the checkpoint's user-code or remote-code experts to run."),
) -> None:
    """Search an index with one or several queries of any modalities, composed as the weighted sum
    of their unit embeddings, renormalised.

    Example: spacebind search runs/demo runs/demo-index --audio clip.wav --text "a kettle" --weights 1,0.5 -k 5
    """
    from rich.table import Table

    from spacebind.checkpoint import load
    from spacebind.errors import InputError
    from spacebind.search import compose_query, load_index, query_labels, search

    queries: dict[str, list[str]] = {m: list(v) for m, v in (("text", text), ("image", image), ("audio", audio), ("point", point)) if v}
    for pair in query or []:
        m, sep, value = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"{pair!r} is not MODALITY=INPUT", param_hint="--query")
        queries.setdefault(m, []).append(value)

    def job() -> Any:
        if not queries:
            raise InputError("no query: give --text, --image, --audio, --point or --query MODALITY=INPUT")
        try:
            w = [float(v) for v in weights.split(",")] if weights else None
        except ValueError:
            raise InputError(f"--weights {weights!r}: expected comma-separated numbers, e.g. 1,0.5") from None
        space = load(fused, trust_remote_code=trust_remote_code)
        idx = load_index(index, space)
        return query_labels(queries), w, search(idx, compose_query(space, queries, w), k, target or None)

    labels, w, hits = _run(job)
    shown = ", ".join(f"{q} ×{1.0 if w is None else w[i]:g}" for i, q in enumerate(labels))
    table = Table("rank", "id", "modality", "label", "score", "input", title=f"top {k} for {shown}")
    for h in hits:
        table.add_row(str(h.rank), h.id, h.modality, h.label or "", f"{h.score:.4f}", h.input)
    console.print(table)


@app.command("export")
def export_cmd(
    fused: Path = typer.Argument(..., help="Fused checkpoint directory."),
    out: Path = typer.Option(..., "--out", help="Directory for one module per modality and export.json."),
    format: str = typer.Option("pt2", "--format", help="pt2: torch.export programs (the only format so far)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow the checkpoint's user-code or remote-code experts to run."),
) -> None:
    """Export the trained part of a fused space: per modality, a torch.export program from the leaf
    experts' embeddings to the fused embedding (heads and λ baked in), for stacks that run the experts.

    Example: spacebind export runs/demo --out runs/demo-export
    """
    from spacebind.bonds.export import export_programs
    from spacebind.checkpoint import load
    from spacebind.errors import InputError

    def job() -> Any:
        if format != "pt2":
            raise InputError(f"--format {format!r}: only 'pt2' (torch.export) is supported")
        return export_programs(load(fused, trust_remote_code=trust_remote_code), out)

    console.print(f"[green]exported[/] {_run(job)}")


@app.command()
def info(
    fused: Path = typer.Argument(..., help="Fused checkpoint directory (or a registered expert name)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow the checkpoint's user-code or remote-code experts to run."),
) -> None:
    """Cost accounting: experts and their frozen parameters, trained parameters per stage, and the
    formula and embedding dimension of every stage.

    Example: spacebind info runs/demo
    """
    from spacebind.checkpoint import load
    from spacebind.evaluation.cost import describe, info_tables
    from spacebind.experts import build_expert

    result = _run(lambda: describe(load(fused, trust_remote_code=trust_remote_code) if fused.is_dir()
                                   else build_expert(str(fused))))
    for table in info_tables(result):
        console.print(table)
