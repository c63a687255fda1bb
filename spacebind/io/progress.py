"""Progress bars for long steps (rich), on stderr; off when SPACEBIND_PROGRESS=0, and on every
rank but 0 under torchrun (one bar per job, not one per process)."""
from __future__ import annotations

import os
from typing import Iterable, Iterator, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

T = TypeVar("T")


def enabled(requested: bool = True) -> bool:
    return requested and os.environ.get("SPACEBIND_PROGRESS", "1") != "0" and os.environ.get("RANK", "0") == "0"


def track(items: Iterable[T], description: str, total: int | None = None, show: bool = True) -> Iterator[T]:
    """Iterate `items` with a transient progress bar (or silently)."""
    if not enabled(show):
        yield from items
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total if total is not None else _len(items))
        for item in items:
            yield item
            bar.advance(task)


def _len(items: Iterable[object]) -> int | None:
    try:
        return len(items)  # type: ignore[arg-type]
    except TypeError:
        return None


def note(message: str, show: bool = True) -> None:
    """One status line on stderr (stage boundaries of long jobs; visible in CI logs too)."""
    if enabled(show):
        Console(stderr=True, highlight=False).print(f"[dim]spacebind:[/] {message}")
