"""The `spacebind` command line: a thin layer over the Python API."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
import yaml
from rich.console import Console

from spacebind.errors import InputError, SpacebindError
from spacebind.training.distributed import is_main

DEFAULT_GRID_TEXT = (0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1)
app = typer.Typer(
    help="Bind pretrained embedding spaces into one fused multimodal space.\n\n"
    "Quick start: spacebind fuse recipes/demo.yaml --out runs/demo",
    no_args_is_help=True, add_completion=False,
)
world_app = typer.Typer(help="The procedural world: a multimodal test bed with known ground truth.", no_args_is_help=True)
app.add_typer(world_app, name="world")
data_app = typer.Typer(help="Datasets: import common layouts into a spacebind dataset directory.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console(width=None if sys.stdout.isatty() else 160)  # logs get a wide table
err_console = Console(stderr=True, soft_wrap=True)


def _run(job: Callable[[], Any]) -> Any:
    """Run a command body; spacebind errors become one red line and exit code 2, no traceback."""
    try:
        return job()
    except SpacebindError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
        raise typer.Exit(2) from None


def _names_expert(target: Path) -> bool:
    """Whether a FUSED argument names an expert (registered, an import path, or another bare name)
    rather than a fused checkpoint (a directory, or a path or hub id `org/name`)."""
    from spacebind.experts import EXPERTS, is_import_path

    text = str(target)
    return not target.is_dir() and (text in EXPERTS.list() or is_import_path(text) or len(target.parts) == 1)


def _named_expert(target: Path) -> Any:
    """The expert a FUSED argument names (`_names_expert`); a bare name that is neither an expert
    nor a directory is an error saying both."""
    from spacebind.experts import EXPERTS, build_expert, is_import_path

    text = str(target)
    if text not in EXPERTS.list() and not is_import_path(text):
        near = EXPERTS.near(text)
        hint = f" (experts named like it: {', '.join(near)})" if near else ""
        raise InputError(f"{text!r} is neither a fused checkpoint directory nor a registered expert{hint}; "
                         "`spacebind experts` lists the experts")
    return build_expert(text)


def _print_json(data: Any) -> None:
    """Machine-readable output: JSON on stdout, nothing else there (dataclasses as objects)."""
    import dataclasses
    import json

    def plain(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return dataclasses.asdict(obj)
        return str(obj)

    print(json.dumps(data, indent=2, default=plain))


JSON_HELP = "Print the result as JSON on stdout (nothing else there)."
QUIET_HELP = "No progress lines on stderr (errors and the result only)."
VERBOSE_HELP = "Progress lines at every 10 % of each step, however fast."


# Progress options shared by the long commands (fuse, embed, mine, index, eval, sweep, world generate).
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help=QUIET_HELP)]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help=VERBOSE_HELP)]


def verbosity_level(quiet: bool, verbose: bool) -> int | None:
    """The progress level that `--quiet` / `--verbose` ask for; None (neither) keeps SPACEBIND_PROGRESS.

    Raises:
        typer.BadParameter: both given (a usage error, exit code 2).
    """
    from spacebind.io.progress import QUIET, VERBOSE

    if quiet and verbose:
        raise typer.BadParameter("--quiet and --verbose exclude each other")
    return QUIET if quiet else VERBOSE if verbose else None


def _verbosity(quiet: bool, verbose: bool) -> Any:
    """A context in which progress follows `--quiet` / `--verbose` (neither: as configured)."""
    from contextlib import nullcontext

    from spacebind.io.progress import verbosity

    value = verbosity_level(quiet, verbose)
    return nullcontext() if value is None else verbosity(value)


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
def validate(
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    check_files: bool = typer.Option(False, "--check-files", help="Also check that the experts' checkpoint files "
                                     "and the dataset's media files exist (all missing ones reported at once)."),
) -> None:
    """Check a recipe and report every error at once, before any work.

    Example: spacebind validate recipes/demo.yaml --check-files
    """
    from spacebind.fuse import check_recipe

    parsed = _run(lambda: check_recipe(recipe, check_files=check_files))
    console.print(f"[green]ok[/] {recipe}: {len(parsed.experts)} experts, {len(parsed.bonds)} bonds"
                  + (", all files present" if check_files else ""))


@app.command()
def experts(
    pattern: str = typer.Argument("*", help="Wildcard filter, e.g. 'world_*'."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """List registered experts.

    Example: spacebind experts 'world_*'
    """
    from rich.table import Table

    from spacebind.experts.registry import EXPERTS

    def matching() -> list[str]:
        names = EXPERTS.list(pattern)
        if not names:
            raise InputError(f"no registered expert matches {pattern!r}; known: {', '.join(EXPERTS.list())}")
        return names

    entries = [EXPERTS.entry(name) for name in _run(matching)]
    if as_json:
        _print_json([{"name": e.name, "modalities": list(e.modalities), "dim": e.dim, "licence": e.licence or None,
                      "description": e.description} for e in entries])
        return
    table = Table("name", "modalities", "dim", "licence", "description")
    for e in entries:
        table.add_row(e.name, ", ".join(e.modalities), str(e.dim or "?"), e.licence or "–", e.description)
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
    unpaired: bool = typer.Option(False, help="Write the train split as unimodal pools (one modality per item)."),
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Write a procedural-world dataset: PNG, WAV, NPY files, manifest.jsonl and classes.json.

    Example: spacebind world generate data/world --seed 1 --test 1000
    Example: spacebind world generate data/seven --sensors video,thermal,event
    """
    from spacebind.world.generate import generate_world

    with _verbosity(quiet, verbose):
        path = _run(lambda: generate_world(
            out, seed=seed, sizes={"train": train, "val": val, "test": test},
            concepts_seed=concepts_seed, num_concepts=num_concepts, sensors=[m for m in sensors.split(",") if m],
            unpaired=unpaired,
        ))
    console.print(f"[green]wrote[/] {path}")


@data_app.command("import")
def data_import(
    format: str = typer.Argument(..., help="Source format: folder, points, csv, coco, webdataset, hf."),
    source: Path = typer.Argument(..., help="Folder, CSV/TSV file, COCO JSON, tar shard(s), or parquet / save_to_disk folder."),
    out: Path = typer.Argument(..., help="Dataset directory to write (manifest.jsonl, classes.json)."),
    copy: bool = typer.Option(False, "--copy", help="Copy media into OUT/media (default: manifest points at them in place)."),
    append: bool = typer.Option(False, "--append", help="Add to the dataset already in OUT (e.g. a second unimodal pool)."),
    split: Optional[str] = typer.Option(None, help="Put every item in this split (train, val or test)."),
    split_ratio: Optional[str] = typer.Option(None, help="Seeded train,val,test ratio, e.g. 0.8,0.1,0.1 (overrides source splits)."),
    seed: int = typer.Option(0, help="Seed of --split-ratio."),
    id_prefix: str = typer.Option("", help="Prefix for item ids (keeps two sources with the same file names apart)."),
    modality: Optional[str] = typer.Option(None, help="Modality of every media file (default: by extension)."),
    media_root: Optional[Path] = typer.Option(None, help="csv, coco, hf: folder the paths are relative to (default: the source's folder)."),
    path_column: Optional[str] = typer.Option(None, help="csv: column of media paths (default: 'path' if present)."),
    text_column: Optional[str] = typer.Option(None, help="csv, hf: caption column (default: 'caption' or 'text' if present)."),
    label_column: Optional[str] = typer.Option(None, help="csv, hf: class label column."),
    split_column: Optional[str] = typer.Option(None, help="csv, hf: split column (train / val / validation / test)."),
    id_column: Optional[str] = typer.Option(None, help="csv: item id column (default: the path without extension)."),
    delimiter: Optional[str] = typer.Option(None, help="csv: field separator (default: tab for .tsv, else comma)."),
    captions: Optional[str] = typer.Option(None, help="coco: 'first' (one item per image, default) or 'each' (one per caption)."),
    image_column: Optional[str] = typer.Option(None, help="hf: image column (default: 'image' if present)."),
    audio_column: Optional[str] = typer.Option(None, help="hf: audio column (default: 'audio' if present)."),
) -> None:
    """Import a dataset from a common layout: manifest and classes written, media left in place
    unless --copy. Bad rows are reported with their line or member name and skipped.

    Example: spacebind data import folder ~/ESC-50/audio data/esc50 --split-ratio 0.8,0.1,0.1
    Example: spacebind data import csv clotho_captions.csv data/clotho --path-column file_name --text-column caption_1 --media-root clotho/audio
    Example: spacebind data import csv sentences.csv data/pools --text-column sentence --append
    """
    from spacebind.io.importers import format_report, import_data

    options = dict(media_root=media_root, path_column=path_column, text_column=text_column, label_column=label_column,
                   split_column=split_column, id_column=id_column, delimiter=delimiter, captions=captions,
                   image_column=image_column, audio_column=audio_column)
    report = _run(lambda: import_data(format, source, out, copy=copy, append=append, split=split, split_ratio=split_ratio,
                                      seed=seed, id_prefix=id_prefix, modality=modality, **options))
    for line in format_report(report):
        console.print(line, markup=False, highlight=False)


@app.command()
def embed(
    expert: str = typer.Argument(..., help="Registered expert name or module:attribute."),
    data: Path = typer.Argument(..., help="Dataset directory or manifest.jsonl."),
    out: Path = typer.Option(..., "--out", help="Cache directory (resumes if it exists)."),
    kwarg: Optional[list[str]] = typer.Option(None, "--kwarg", help="Expert argument KEY=VALUE (repeatable)."),
    modality: Optional[list[str]] = typer.Option(None, "--modality", help="Only these modalities (repeatable)."),
    shard_size: int = typer.Option(1024, min=1, help="Items per shard."),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Encoder batch size (halved automatically on out-of-memory)."),
    workers: int = typer.Option(0, min=0, help="DataLoader processes decoding files while the expert runs."),
    precision: str = typer.Option("fp32", help="fp32, or bf16 / fp16 autocast on CUDA (no effect on CPU)."),
    retry_bad: bool = typer.Option(False, "--retry-bad", help="Embed again the finished shards that hold bad items."),
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Embed a dataset with one expert into a sharded float16 cache. Runs unchanged under torchrun
    (shards split over ranks).

    Example: spacebind embed world_audio_text data/world --out caches/audio_text
    Example: spacebind embed world_audio_text data/world --out caches/audio_text --retry-bad   (after fixing bad files)
    Example: torchrun --nproc-per-node 8 -m spacebind embed world_audio_text data/world --out caches/audio_text
    """
    from spacebind.cache.store import embed_dataset
    from spacebind.experts import build_expert
    from spacebind.io.datasets import Manifest

    def job() -> Any:
        space = build_expert(expert, _kwargs(kwarg))
        return embed_dataset(space, Manifest.open(data), out, modalities=modality or None,
                             shard_size=shard_size, batch_size=batch_size, workers=workers, precision=precision,
                             retry_bad=retry_bad)

    with _verbosity(quiet, verbose):
        cache = _run(job)
    if not is_main():
        return
    counts = ", ".join(f"{m} {cache.count(m)}" for m in cache.modalities)
    console.print(f"[green]cached[/] {out}: {counts}")
    bad = {m: cache.bad(m) for m in cache.modalities if cache.bad(m)}
    for m, items in bad.items():
        shown = "; ".join(f"{b['id']}: {b['reason']}" for b in items[:3]) + ("; …" if len(items) > 3 else "")
        err_console.print(f"[yellow]skipped[/] {len(items)} bad {m} item(s), left out of every task "
                          f"(listed under 'bad' in {out / 'manifest.json'}; --retry-bad tries them again): {shown}")


# Index settings shared by `mine` and `index` (FAISS; see spacebind.retrieval.mining.IndexOptions).
Nlist = Annotated[int, typer.Option(min=1, help="IVF lists (index ivf, ivfpq).")]
Nprobe = Annotated[int, typer.Option(min=1, help="IVF lists probed per query (index ivf, ivfpq).")]
HnswM = Annotated[int, typer.Option("--hnsw-m", min=1, help="HNSW links per node (index hnsw).")]
EfConstruction = Annotated[int, typer.Option("--ef-construction", min=1, help="HNSW build candidate list (index hnsw).")]
EfSearch = Annotated[int, typer.Option("--ef-search", min=1, help="HNSW search candidate list (index hnsw).")]
PqM = Annotated[int, typer.Option("--pq-m", min=1, help="PQ sub-quantizers, dividing the dimension (index pq, ivfpq).")]
PqBits = Annotated[int, typer.Option("--pq-bits", min=1, help="Bits per PQ code (index pq, ivfpq).")]
TrainSize = Annotated[int, typer.Option("--train-size", min=1, help="Vectors trained on (index ivf, pq, ivfpq).")]


@app.command("mine")
def mine_cmd(
    cache: Path = typer.Argument(..., help="Embedding cache of an expert covering both modalities."),
    seed: str = typer.Option(..., "--seed", help="Modality of the seed items (the queries)."),
    target: str = typer.Option(..., "--target", help="Modality of the pool they retrieve from."),
    k: int = typer.Option(5, "-k", "--k", min=1, help="Neighbours per seed."),
    index: str = typer.Option("flat", help="flat (exact), or approximate for large pools: ivf, hnsw, pq, ivfpq."),
    nlist: Nlist = 256,
    nprobe: Nprobe = 16,
    hnsw_m: HnswM = 32,
    ef_construction: EfConstruction = 40,
    ef_search: EfSearch = 64,
    pq_m: PqM = 32,
    pq_bits: PqBits = 8,
    train_size: TrainSize = 65536,
    chunk_size: int = typer.Option(4096, min=1, help="Vectors per streamed chunk (bounds memory)."),
    out: Path = typer.Option(..., "--out", help="Directory for neighbours.safetensors (reused if it matches)."),
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Mine pseudo pairs: each seed item retrieves its k nearest items of another modality.

    Example: spacebind mine caches/audio_text --seed text --target audio --k 5 --out pseudo/text2audio
    """
    from spacebind.cache.store import EmbeddingCache
    from spacebind.retrieval.mining import IndexOptions, mine

    options = IndexOptions(nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m, ef_construction=ef_construction, ef_search=ef_search,
                           pq_m=pq_m, pq_bits=pq_bits, train_size=train_size)

    def job() -> Any:
        return mine(EmbeddingCache.open(cache), seed, target, k=k, index=index,  # type: ignore[arg-type]
                    chunk_size=chunk_size, out=out, options=options)

    with _verbosity(quiet, verbose):
        result = _run(job)
    console.print(f"[green]mined[/] {len(result.seed_rows)} {seed} seeds × {result.indices.shape[1]} {target} neighbours → {out}")


@app.command()
def fuse(
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    out: Optional[Path] = typer.Option(None, "--out", help="Export directory (default: the recipe's export.out or runs/NAME)."),
    work: Optional[Path] = typer.Option(None, "--work", help="Work directory for data, caches, checkpoints."),
    device: Optional[str] = typer.Option(None, "--device", help="Device for every expert that takes one (cpu, cuda, cuda:1)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Training seed (overrides the recipe's train.seed)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate, check every file and print the plan; write nothing."),
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Run a recipe end to end: data, embed, train bonds, evaluate, export. Runs unchanged under
    torchrun (embedding and training split over ranks; rank 0 evaluates and exports).

    Example: spacebind fuse recipes/demo.yaml --out runs/demo
    Example: spacebind fuse recipes/demo.yaml --dry-run
    Example: torchrun --nproc-per-node 8 -m spacebind fuse recipes/demo.yaml --out runs/demo
    """
    from spacebind.evaluation.report import records_table
    from spacebind.fuse import fuse as run_fuse
    from spacebind.fuse import plan_fuse
    from spacebind.recipe import load_recipe

    def job() -> Any:
        parsed, text = load_recipe(recipe)
        if dry_run:
            return plan_fuse(parsed, base_dir=recipe.parent, out=out, work=work, seed=seed, device=device)
        return run_fuse(parsed, recipe_text=text, base_dir=recipe.parent, out=out, work=work, seed=seed, device=device)

    with _verbosity(quiet, verbose):
        result = _run(job)
    if not is_main():
        return
    if dry_run:
        for line in result.lines():
            console.print(line, markup=False, highlight=False)
        return
    console.print(records_table(result.records))
    console.print(f"[green]exported[/] {result.out}")


@app.command("eval")
def evaluate_cmd(
    fused: Path = typer.Argument(..., help="Fused checkpoint directory."),
    data: Path = typer.Argument(..., help="Dataset directory or manifest.jsonl."),
    split: str = typer.Option("test", help="Split to evaluate."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write records as JSON here (a directory with --format clip_benchmark)."),
    format: str = typer.Option("json", "--format", help="json (one list of records) or clip_benchmark (one file per task, for `clip_benchmark build`)."),
    cache_dir: Optional[Path] = typer.Option(None, help="Leaf embedding caches (default under $SPACEBIND_HOME)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow the checkpoint's user-code or remote-code experts to run."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Evaluate a fused checkpoint (a directory or hub id org/name[@revision]): retrieval between
    every modality pair and zero-shot classification (with UniBind's class centres too when the
    checkpoint has them).

    Example: spacebind eval runs/demo data/world --split test --out metrics.json
    """
    from spacebind.evaluation import write_records
    from spacebind.evaluation.evaluate import evaluate_checkpoint
    from spacebind.evaluation.report import records_table, write_clip_benchmark
    from spacebind.io.files import check_output

    if format not in ("json", "clip_benchmark"):
        raise typer.BadParameter(f"--format {format!r}: expected json or clip_benchmark")
    if out:
        _run(lambda: check_output(out, directory=format == "clip_benchmark"))
    with _verbosity(quiet, verbose):
        records = _run(lambda: evaluate_checkpoint(fused, data, split, cache_dir=cache_dir, trust_remote_code=trust_remote_code))
    if as_json:
        _print_json(records)
    else:
        console.print(records_table(records))
    if out and format == "clip_benchmark":
        written = len(_run(lambda: write_clip_benchmark(out, records, pretrained=str(fused))))
        (err_console if as_json else console).print(f"wrote {written} files to {out}")
    elif out:
        _run(lambda: write_records(out, records))


@app.command()
def push(
    fused: Path = typer.Argument(..., help="Fused checkpoint directory."),
    repo: str = typer.Argument(..., help="Hub model repo org/name, or org/name@branch."),
    private: bool = typer.Option(False, "--private", help="Create the repo private (if it does not exist)."),
    message: Optional[str] = typer.Option(None, "--message", help="Commit message."),
) -> None:
    """Upload a fused checkpoint (config, weights, recipe, metrics, model card) to the Hugging Face
    Hub; the token comes from `hf auth login` or $HF_TOKEN. Load it back with spacebind.load("org/name").

    Example: spacebind push runs/demo my-org/demo-space
    """
    from spacebind.interop.hub import push_directory

    url = _run(lambda: push_directory(fused, repo, private=private or None, commit_message=message))
    console.print(f"pushed {fused} → {url}")


@app.command()
def similarity(
    encoders: list[str] = typer.Argument(..., help="Two or more EXPERT:MODALITY encoders."),
    data: Path = typer.Option(..., "--data", help="Probe dataset directory (items with paired modalities)."),
    split: str = typer.Option("val", help="Split of the probe dataset (val: choosing encoders is a choice; test stays held out)."),
    k: int = typer.Option(10, "-k", "--k", min=1, help="Neighbours for mutual k-NN."),
    cache: Optional[Path] = typer.Option(None, help="Embedding cache root (default $SPACEBIND_HOME/caches/<data>)."),
    plot: Optional[Path] = typer.Option(None, help="Also draw the mutual k-NN scores as a heatmap PNG."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Rank candidate encoder pairs (every pair of different modalities) by mutual k-NN
    alignment and linear CKA on a probe set, to choose encoders to bind.

    Example: spacebind similarity world_image:image minilm:text world_audio_text:text --data data/world
    """
    from rich.table import Table

    from spacebind.evaluation.similarity import heatmap, rank_similarity
    from spacebind.io.files import check_output

    if plot is not None:
        _run(lambda: check_output(plot, what="--plot"))
    rows = _run(lambda: rank_similarity(encoders, data, split, k, cache))
    if as_json:
        _print_json(rows)
        if plot is not None:
            err_console.print(f"wrote {_run(lambda: heatmap(rows, plot))}", highlight=False)
        return
    table = Table("rank", "encoder A", "encoder B", f"mutual {k}-NN", "linear CKA", "probe items")
    for i, r in enumerate(rows, 1):
        table.add_row(str(i), str(r["a"]), str(r["b"]), f"{r['mutual_knn']:.3f}", f"{r['cka']:.3f}", str(r["n"]))
    console.print(table)
    if plot is not None:
        console.print(f"[green]wrote[/] {_run(lambda: heatmap(rows, plot))}")


@app.command()
def sweep(
    fused: Path = typer.Argument(..., help="Fused checkpoint directory."),
    data: Path = typer.Argument(..., help="Dataset directory or manifest.jsonl (its validation split is used)."),
    split: str = typer.Option("val", help="Split to tune on (never the test split you report)."),
    grid: str = typer.Option(",".join(map(str, DEFAULT_GRID_TEXT)), help="Comma-separated λ (or κ) values; a κ grid stops at the channel's prior."),
    modality: Optional[list[str]] = typer.Option(None, "--modality", help="Sweep only these λ, or κ as channel:<modality> (repeatable; at most two for the heatmap)."),
    channel: bool = typer.Option(False, "--channel", help="Sweep the channel's κ of every modality it carries (at the current λ) instead of λ; of a routed space, the κ of its channel's specialists."),
    save: bool = typer.Option(True, help="Store the best setting per task as presets `best:<task>` in the checkpoint."),
    held_out: str = typer.Option("test", help="Also score the current and best setting on this split (reported, never used to choose; '' for none)."),
    cache_dir: Optional[Path] = typer.Option(None, help="Leaf embedding caches (default under $SPACEBIND_HOME)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow the checkpoint's user-code or remote-code experts to run."),
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Fine λ tuning: evaluate a λ grid of the last bond, pick the best per task, draw heatmaps.

    Writes FUSED/sweep.json and FUSED/sweep.png; with --save the best settings become presets
    (`spacebind.load(FUSED, preset="best:text-audio")`). With --channel the grid is over the κ of
    the bond's channel (how much the experts' own ranking weighs on the pairs they carry).

    Example: spacebind sweep runs/demo data/world --grid 0,0.25,0.5,0.75,1
    """
    from spacebind.evaluation.sweep import preset_name, sweep_checkpoint

    try:
        values = [float(v) for v in grid.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"--grid {grid!r}: expected comma-separated numbers, e.g. 0,0.25,0.5") from None
    with _verbosity(quiet, verbose):
        result = _run(lambda: sweep_checkpoint(fused, data, split=split, grid=values, modalities=modality or None,
                                               channel=channel, save=save, held_out=held_out or None, cache_dir=cache_dir,
                                               trust_remote_code=trust_remote_code))
    from rich.table import Table

    other = result.held_out_split
    columns = ["task", "now", "top of grid", "beat now in", "best", *([f"now ({other})", f"best ({other})"] if other else []),
               "best setting", "preset"]
    table = Table(*columns, title=f"sweep of {', '.join(result.modalities)} on {split} (%; a task moves only when the "
                                  "top of the grid beats now in ≥ 90 % of bootstrap resamples)")
    for task, best in result.best.items():
        top = max(result.scores[task] + [result.baseline[task]])
        score = result.scores[task][result.points.index(best)] if best in result.points else result.baseline[task]
        share = f"{100 * result.confidence[task]:.0f} % of resamples" if task in result.confidence else "–"
        lam = ", ".join(f"{m} {v:g}" for m, v in best.items())
        held = [f"{100 * result.held_out[task][k]:.1f}" for k in ("now", "best")] if other else []
        table.add_row(task, f"{100 * result.baseline[task]:.1f}", f"{100 * top:.1f}", share, f"{100 * score:.1f}", *held,
                      lam, preset_name(task))
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
    from spacebind.io.files import atomic_path

    def job() -> Any:
        space = _named_expert(fused) if _names_expert(fused) else load(fused, trust_remote_code=trust_remote_code)
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
    index: str = typer.Option("flat", help="flat (exact inner product), or approximate for large collections: ivf, hnsw, pq, ivfpq."),
    nlist: Nlist = 256,
    nprobe: Nprobe = 16,
    hnsw_m: HnswM = 32,
    ef_construction: EfConstruction = 40,
    ef_search: EfSearch = 64,
    pq_m: PqM = 32,
    pq_bits: PqBits = 8,
    train_size: TrainSize = 65536,
    chunk_size: int = typer.Option(4096, min=1, help="Items embedded and added per step (bounds memory)."),
    cache_dir: Optional[Path] = typer.Option(None, help="Leaf embedding caches (default under $SPACEBIND_HOME)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow the checkpoint's user-code or remote-code experts to run."),
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Build a FAISS index of a collection embedded by a fused space, one index per modality.

    Example: spacebind index runs/demo data/world --out runs/demo-index --modality point --split test
    """
    from spacebind.checkpoint import load
    from spacebind.retrieval.mining import IndexOptions
    from spacebind.search import build_index

    options = IndexOptions(nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m, ef_construction=ef_construction, ef_search=ef_search,
                           pq_m=pq_m, pq_bits=pq_bits, train_size=train_size)

    def job() -> Any:
        return build_index(load(fused, trust_remote_code=trust_remote_code), data, out, modalities=modality or None, split=split, kind=index,  # type: ignore[arg-type]
                           chunk_size=chunk_size, cache_dir=cache_dir, fused=fused, options=options)

    with _verbosity(quiet, verbose):
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
    k: int = typer.Option(10, "-k", "--k", min=1, help="Items to show."),
    target: Optional[list[str]] = typer.Option(None, "--target", help="Only items of these modalities (repeatable)."),
    each: bool = typer.Option(False, "--each", help="Search every query on its own instead of composing them: "
                              "one batched FAISS search for all, one top-k per query."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow the checkpoint's user-code or remote-code experts to run."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Search an index with one or several queries of any modalities, composed as the weighted sum
    of their unit embeddings (part by part in a space with a channel), renormalised; with --each,
    every query searched on its own (in one batched search).

    Example: spacebind search runs/demo runs/demo-index --audio clip.wav --text "a kettle" --weights 1,0.5 -k 5
    Each on its own: spacebind search runs/demo runs/demo-index --text "a kettle" --text "a dog" --each -k 5
    """
    from rich.table import Table

    from spacebind.checkpoint import load
    from spacebind.search import compose_query, embed_queries, load_index, query_labels, search, search_batch

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
        if each and w is not None:
            raise InputError("--weights: with --each every query is searched on its own; weights apply only to a composed query")
        space = load(fused, trust_remote_code=trust_remote_code)
        idx = load_index(index, space)
        if each:
            return query_labels(queries), w, list(search_batch(idx, embed_queries(space, queries), k, target or None))
        return query_labels(queries), w, search(idx, compose_query(space, queries, w), k, target or None)

    labels, w, hits = _run(job)
    if as_json:
        _print_json([{"query": q, "hits": h} for q, h in zip(labels, hits)] if each else hits)
        return

    def show(title: str, found: list[Any]) -> None:
        table = Table("rank", "id", "modality", "label", "score", "input", title=f"top {k} for {title}")
        for h in found:
            table.add_row(str(h.rank), h.id, h.modality, h.label or "", f"{h.score:.4f}", h.input)
        console.print(table)

    if each:
        for q, found in zip(labels, hits):
            show(q, found)
        return
    show(", ".join(f"{q} ×{1.0 if w is None else w[i]:g}" for i, q in enumerate(labels)), hits)


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

    def job() -> Any:
        if format != "pt2":
            raise InputError(f"--format {format!r}: only 'pt2' (torch.export) is supported")
        return export_programs(load(fused, trust_remote_code=trust_remote_code), out)

    console.print(f"[green]exported[/] {_run(job)}")


@app.command()
def info(
    fused: Path = typer.Argument(..., help="Fused checkpoint directory (or a registered expert name)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow the checkpoint's user-code or remote-code experts to run."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Cost accounting: experts and their frozen parameters, trained parameters per stage, and the
    formula and embedding dimension of every stage.

    Example: spacebind info runs/demo
    """
    from spacebind.evaluation.cost import describe, describe_fused, info_tables

    result = _run(lambda: describe(_named_expert(fused)) if _names_expert(fused) else describe_fused(fused, trust_remote_code))
    if as_json:
        _print_json(result)
        return
    for table in info_tables(result):
        console.print(table)
