"""Metric tables for the terminal (rich) and model cards (Markdown), recall-curve plots, and
CLIP_benchmark result files."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rich.table import Table


def _columns(records: list[dict[str, Any]]) -> list[tuple[str, tuple, str]]:
    """(header, (task, modalities), metric key) in first-seen order."""
    cols: list[tuple[str, tuple, str]] = []
    for r in records:
        mods = tuple(r["modalities"])
        if r["task"] == "retrieval":
            a, b = mods
            new = [(f"{a}→{b} R@1", (r["task"], mods), f"{b}_retrieval_recall@1"),
                   (f"{b}→{a} R@1", (r["task"], mods), f"{a}_retrieval_recall@1")]
        else:
            new = [(f"{mods[0]} zero-shot acc1", (r["task"], mods), "acc1")]
        cols += [c for c in new if c not in cols]
    return cols


def task_scores(records: list[dict[str, Any]]) -> dict[str, float]:
    """One model's records flattened to {"audio→text R@1": value, "image zero-shot acc1": value, …}."""
    by_task = {(r["task"], tuple(r["modalities"])): r["metrics"] for r in records}
    return {label: by_task[task][key] for label, task, key in _columns(records) if key in by_task[task]}


def _rows(records: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """One row per metric column (task × direction), one column per model (role)."""
    models: dict[tuple[str, str], dict] = {}
    for r in records:
        models.setdefault((r["model"], r["role"]), {})[(r["task"], tuple(r["modalities"]))] = r["metrics"]
    rows = []
    for label, task, key in _columns(records):
        cells = [by_task.get(task, {}).get(key) for by_task in models.values()]
        rows.append([label, *("–" if v is None else f"{100 * v:.1f}" for v in cells)])
    return ["metric", *(f"{m} ({role})" for m, role in models)], rows


def records_table(records: list[dict[str, Any]], title: str = "evaluation (%)") -> Table:
    """A rich table: R@1 per retrieval direction and zero-shot acc1 (rows) per model (columns), in percent."""
    header, rows = _rows(records)
    table = Table(*header, title=title)
    for row in rows:
        table.add_row(*row)
    return table


def records_markdown(records: list[dict[str, Any]]) -> str:
    """The same table in Markdown (percent)."""
    header, rows = _rows(records)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


CLIP_BENCHMARK_TASKS = {"retrieval": "zeroshot_retrieval", "zeroshot_classification": "zeroshot_classification"}


def clip_benchmark_result(record: dict[str, Any], pretrained: str, language: str = "en") -> dict[str, Any]:
    """One record as the JSON `clip_benchmark eval` writes and `clip_benchmark build` reads:
    `dataset`, `model` (the space's name), `pretrained` (the checkpoint as given), `task` (its name
    there), `metrics` (fractions, same keys: `image_retrieval_recall@k` is text→image), `language`;
    plus `modalities` and `role`, which tell apart the modality pairs of one dataset (`build` keeps
    extra fields as columns)."""
    return {"dataset": record["dataset"], "model": record["model"], "pretrained": pretrained,
            "task": CLIP_BENCHMARK_TASKS.get(record["task"], record["task"]), "metrics": record["metrics"],
            "language": language, "modalities": list(record["modalities"]), "role": record["role"]}


def write_clip_benchmark(directory: str | Path, records: list[dict[str, Any]], pretrained: str,
                         language: str = "en") -> list[Path]:
    """Write one CLIP_benchmark JSON per record into `directory` (`clip_benchmark build DIR` reads
    them all), named like its default output `{dataset}_{pretrained}_{model}_{language}_{task}`
    plus role and modalities; returns the paths."""
    from spacebind.io.files import write_json

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for record in records:
        result = clip_benchmark_result(record, pretrained, language)
        stem = "_".join([result["dataset"], pretrained, result["model"], language, result["task"], result["role"],
                         "-".join(result["modalities"])])
        path = out / (re.sub(r"[^A-Za-z0-9@.+-]+", "_", stem) + ".json")
        write_json(path, result)
        paths.append(path)
    return paths


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path) -> Path:
    """Lay out (unless the figure has its own layout engine), write as PNG (creating the folder) and
    close a figure."""
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
    return path


def plot_recall_curves(records: list[dict[str, Any]], path: str | Path) -> Path:
    """R@k against k, one panel per retrieval direction, one line per model; saved as PNG."""
    plt = pyplot()
    panels: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for r in records:
        if r["task"] != "retrieval":
            continue
        a, b = r["modalities"]
        for target, source in [(b, a), (a, b)]:
            prefix = f"{target}_retrieval_recall@"
            pts = sorted((int(k[len(prefix):]), v) for k, v in r["metrics"].items() if k.startswith(prefix))
            panels.setdefault(f"{source}→{target}", {})[f"{r['model']} ({r['role']})"] = pts
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(3.2 * max(1, len(panels)), 3.0), squeeze=False)
    for ax, (title, lines) in zip(axes[0], panels.items()):
        for label, pts in lines.items():
            ax.plot([k for k, _ in pts], [100 * v for _, v in pts], marker="o", label=label)
        ax.set_title(title)
        ax.set_xlabel("k")
        ax.set_ylabel("recall@k (%)")
    axes[0][0].legend(fontsize=7)
    return save_figure(fig, path)
