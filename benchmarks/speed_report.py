"""Shared pieces of the speed benchmarks: timing, target rows, tables and JSON output."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.table import Table


def best_seconds(work: Callable[[], Any], repeats: int = 3) -> float:
    """The fastest of `repeats` timed calls of `work` (the least disturbed by other load)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def best_seconds_interleaved(works: list[Callable[[], Any]], repeats: int = 3) -> list[float]:
    """The fastest of `repeats` timed calls of each of `works`, taking turns, so that load from
    other processes disturbs each about equally."""
    best = [float("inf")] * len(works)
    for _ in range(repeats):
        for i, work in enumerate(works):
            start = time.perf_counter()
            work()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def target(name: str, measured: float, limit: float, higher_is_better: bool, unit: str = "×") -> dict[str, Any]:
    """One benchmark target: the measured ratio, its limit and whether it is met."""
    met = measured >= limit if higher_is_better else measured <= limit
    return {"target": name, "measured": measured, "limit": limit, "unit": unit,
            "direction": ">=" if higher_is_better else "<=", "met": bool(met)}


def print_report(title: str, rows: list[dict[str, Any]], columns: list[str], targets: list[dict[str, Any]]) -> None:
    """A table of the measured rows, then a table of the targets with met / missed."""
    console = Console(width=160)
    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    console.print(table)
    checks = Table("target", "measured", "required", "met", title=f"{title}: targets")
    for t in targets:
        fmt = (lambda v: f"{100 * v:.0f} %") if t["unit"] == "%" else (lambda v: f"{v:.2f}×")
        checks.add_row(t["target"], fmt(t["measured"]), f"{t['direction']} {fmt(t['limit'])}",
                       "[green]yes[/green]" if t["met"] else "[red]no[/red]")
    console.print(checks)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return "–" if value is None else str(value)


def write_json(path: Path | None, result: dict[str, Any]) -> None:
    """Write one benchmark's result as JSON when a path is given."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2))
