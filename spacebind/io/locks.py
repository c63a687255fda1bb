"""Directory locks: one job at a time per embedding cache, fuse work directory, export, index or world
target; `replacing_dir` builds such a target's replacement beside it and swaps it in.

A lock is a file (`<dir>/.spacebind.lock`) held with `flock` and holding its owner as JSON
(pid, host, since). The kernel releases a flock when its process dies, even by kill -9, so a
lock file left behind by a dead owner is stale and simply taken over: that is the stale-lock
rule (the owner pid is gone), applied by the kernel instead of by guessing from pids, which
also holds across hosts on file systems whose locks work over the network (NFS). A second job
waits `wait` seconds (default `$SPACEBIND_LOCK_WAIT`, else 0) and then refuses with a
`LockError` naming the holder. The owner deletes the file when it lets go.

Locks are re-entrant within one thread (a job may lock a directory it already holds); another
thread of the same process is refused like another process (flocks belong to open files).
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import threading
import time
import warnings
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from spacebind.errors import LockError
from spacebind.io.files import replace_dir, staging_dir, storage_errors

try:
    import fcntl
except ImportError:  # Windows: no flock; jobs are not kept apart there
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".spacebind.lock"
_POLL_S = 0.2
_HELD: dict[str, tuple[int, int]] = {}  # lock path → (owning thread, depth)
_HELD_GUARD = threading.Lock()


def _owner(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return f"pid {info['pid']} on {info['host']} since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that is just starting"


def _try_lock(path: Path) -> int | None:
    """The fd of `path` locked by us, or None if another holds it. The file we lock must still be
    the one at `path`: a releasing owner deletes it, and a lock on the deleted file means nothing."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError:
            os.close(fd)
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


@contextmanager
def dir_lock(directory: str | Path, what: str = "directory", wait: float | None = None) -> Iterator[None]:
    """Hold the lock of `directory` (created if missing) for the duration of the block.

    Raises:
        LockError: another job holds it after `wait` seconds.
    """
    with file_lock(Path(directory) / LOCK_NAME, what, wait):
        yield


@contextmanager
def file_lock(path: str | Path, what: str, wait: float | None = None) -> Iterator[None]:
    """Hold the lock file `path` (its directory created if missing); see `dir_lock`."""
    path = Path(path)
    with storage_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    path = path.parent.resolve() / path.name
    me = threading.get_ident()
    with _HELD_GUARD:
        thread, depth = _HELD.get(str(path), (me, 0))
        if depth and thread == me:
            _HELD[str(path)] = (me, depth + 1)
    if depth and thread == me:
        try:
            yield
        finally:
            with _HELD_GUARD:
                _HELD[str(path)] = (me, _HELD[str(path)][1] - 1)
        return
    fd = _acquire(path, what, wait)
    with _HELD_GUARD:
        _HELD[str(path)] = (me, 1)
    try:
        yield
    finally:
        with _HELD_GUARD:
            del _HELD[str(path)]
        if fd is not None:
            try:
                os.unlink(path)  # while still holding it, so no waiter locks a file about to vanish
            except FileNotFoundError:
                pass
            os.close(fd)


@contextmanager
def replacing_dir(target: str | Path, what: str) -> Iterator[Path]:
    """Build `target`'s replacement in a new staging directory, yielded to the block: when the block
    ends, it takes `target`'s place as a unit (`replace_dir`); when the block fails, it is removed and
    `target` stays as it was. One job at a time per target (a lock beside it, `what` naming the job
    to a second one), and what killed jobs left beside it (`.<name>.new-*` staging directories,
    `.<name>.old-*` copies once `target` is in place) is removed first."""
    target = Path(target)
    with file_lock(target.parent / f".{target.name}.lock", what):
        for leftover in target.parent.glob(f".{target.name}.new-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        if target.is_dir():
            for leftover in target.parent.glob(f".{target.name}.old-*"):
                shutil.rmtree(leftover, ignore_errors=True)
        stage = staging_dir(target)
        try:
            yield stage
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        replace_dir(stage, target)


def _acquire(path: Path, what: str, wait: float | None) -> int | None:
    """Lock `path` (None where the file system has no locks); refuse after `wait` seconds."""
    if wait is None:
        wait = float(os.environ.get("SPACEBIND_LOCK_WAIT", "0") or 0)
    if fcntl is None:
        return None
    deadline = time.monotonic() + wait
    while True:
        try:
            with storage_errors(path):
                fd = _try_lock(path)
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            warnings.warn(f"{path}: the file system has no file locks ({os.strerror(exc.errno)}); "
                          "two jobs on this directory are not kept apart", stacklevel=4)
            return None
        if fd is not None:
            info = {"pid": os.getpid(), "host": socket.gethostname(),
                    "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            try:
                with storage_errors(path):
                    os.ftruncate(fd, 0)
                    os.write(fd, (json.dumps(info) + "\n").encode())
            except BaseException:
                os.close(fd)  # releases the lock: a failed owner record must not keep it held
                raise
            return fd
        if time.monotonic() >= deadline:
            raise LockError(f"{path}: another job is using this {what} ({_owner(path)}); wait for it to "
                            "finish, or set SPACEBIND_LOCK_WAIT=<seconds> to wait. If no such job runs, delete "
                            f"{path}")
        time.sleep(_POLL_S)


@contextmanager
def job_lock(directory: str | Path, what: str) -> Iterator[None]:
    """`dir_lock` for a job that may run under torchrun: rank 0 holds the lock for its job, and every
    rank stops (with a `LockError`) when rank 0 could not take it. Every rank must call this."""
    from spacebind.training import distributed

    with ExitStack() as stack:
        refusal: LockError | None = None
        if distributed.is_main():
            try:
                stack.enter_context(dir_lock(directory, what))
            except LockError as exc:
                refusal = exc
        refused = distributed.mean_over_ranks(float(refusal is not None)) > 0
        if refusal is not None:
            raise refusal
        if refused:
            raise LockError(f"{directory}: another job is using this {what} (rank 0 names it)")
        yield
