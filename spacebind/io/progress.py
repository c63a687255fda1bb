"""Progress of long steps, on stderr.

On a terminal: transient rich bars and dim status lines. Elsewhere (CI logs, `2> log`): plain
lines only, never blank ones: one when a step starts, periodic ones (done/total, rate, elapsed,
ETA; at each 10 % once 5 s have passed since the last line, and at least every 30 s) and one with
its duration when it ends. Stages (`stage`) end with their duration in both cases.

Verbosity: 0 quiet (nothing), 1 normal, 2 verbose (a line at every 10 % however fast). Set by
SPACEBIND_PROGRESS (0/1/2; default 1) or, for a block of code, by `verbosity(level)` (the CLI's
`--quiet` / `--verbose`); every rank but 0 under torchrun is quiet (one report per job).
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
QUIET, NORMAL, VERBOSE = 0, 1, 2
MIN_GAP_S = 5.0
MAX_GAP_S = 30.0
_override: list[int] = []


def level() -> int:
    """The verbosity in force: the innermost `verbosity` block, else SPACEBIND_PROGRESS; 0 off rank 0."""
    if os.environ.get("RANK", "0") != "0":
        return QUIET
    if _override:
        return _override[-1]
    try:
        return int(os.environ.get("SPACEBIND_PROGRESS", "1"))
    except ValueError:
        return NORMAL


@contextmanager
def verbosity(value: int) -> Iterator[None]:
    """Use verbosity `value` (QUIET, NORMAL, VERBOSE) inside the block."""
    _override.append(value)
    try:
        yield
    finally:
        _override.pop()


def enabled(requested: bool = True) -> bool:
    return requested and level() >= NORMAL


def _terminal() -> bool:
    return sys.stderr.isatty()


def _plain(message: str) -> None:
    print(f"spacebind: {message}", file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    """`0.4 s`, `12.3 s`, `2 min 05 s`, `1 h 02 min`."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def note(message: str, show: bool = True) -> None:
    """One status line on stderr (stage boundaries of long jobs; visible in CI logs too)."""
    if not enabled(show):
        return
    if _terminal():
        from rich.console import Console

        Console(stderr=True, highlight=False).print(f"[dim]spacebind:[/] {message}")
    else:
        _plain(message)


@contextmanager
def stage(name: str, show: bool = True) -> Iterator[None]:
    """Announce stage `name`, and end it with a line giving its duration."""
    note(name, show)
    start = time.perf_counter()
    yield
    note(f"{name}: done in {duration(time.perf_counter() - start)}", show)


def track(items: Iterable[T], description: str, total: int | None = None, show: bool = True,
          unit: str = "items") -> Iterator[T]:
    """Iterate `items` with a transient progress bar (terminal), periodic plain lines (other), or silently;
    `unit` names what is counted in the plain lines (shards, epochs, …)."""
    if not enabled(show):
        yield from items
        return
    total = total if total is not None else _len(items)
    if _terminal():
        yield from _bar(items, description, total)
    else:
        yield from _lines(items, description, total, verbose=level() >= VERBOSE, unit=unit)


def _bar(items: Iterable[T], description: str, total: int | None) -> Iterator[T]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


def _lines(items: Iterable[T], description: str, total: int | None, verbose: bool, unit: str) -> Iterator[T]:
    _plain(f"{description}: {total} {unit}" if total is not None else description)
    start = last = time.perf_counter()
    done, taken, tenth = 0, 0, 0
    try:
        for item in items:
            taken += 1
            yield item
            done += 1
            now = time.perf_counter()
            step = done * 10 // total if total else tenth
            if (step > tenth and (verbose or now - last >= MIN_GAP_S)) or now - last >= MAX_GAP_S:
                _plain(f"{description}: {progress_line(done, total, now - start, unit)}")
                last = now
            tenth = max(tenth, step)
    finally:  # also when the caller stops early (a `break` closes this generator)
        elapsed = time.perf_counter() - start
        rate = f" ({taken / elapsed:.1f}/s)" if elapsed > 0 else ""
        _plain(f"{description}: done, {taken} {unit} in {duration(elapsed)}{rate}")


def progress_line(done: int, total: int | None, elapsed: float, unit: str = "items") -> str:
    """`250/500 (50 %), 12.5/s, elapsed 20.0 s, ETA 20.0 s` (no total: `250 items`, no ETA)."""
    rate = done / elapsed if elapsed > 0 else 0.0
    parts = [f"{done}/{total} ({100 * done // total} %)" if total else f"{done} {unit}", f"{rate:.1f}/s",
             f"elapsed {duration(elapsed)}"]
    if total and rate > 0:
        parts.append(f"ETA {duration((total - done) / rate)}")
    return ", ".join(parts)


def _len(items: Iterable[object]) -> int | None:
    try:
        return len(items)  # type: ignore[arg-type]
    except TypeError:
        return None
