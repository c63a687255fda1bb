"""Atomic writes (files and whole directories), checksums and the spacebind home directory.

Every writer here turns a failed write (disk full, permissions, an I/O error) into one
`StorageError` that names the file and the cause, and leaves no partial file behind.
"""
from __future__ import annotations

import ctypes
import errno
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Collection, Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from spacebind.errors import InputError, StorageError


def home_dir() -> Path:
    """`$SPACEBIND_HOME`, default `~/.cache/spacebind`; created on demand."""
    path = Path(os.environ.get("SPACEBIND_HOME", Path.home() / ".cache" / "spacebind")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def positive_int_env(name: str, default: int, unit: str = "") -> int:
    """`$name` as a positive integer, else `default`.

    Raises:
        InputError: the variable is set to anything but a positive integer.
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise InputError(f"${name} is {raw!r}; expected a positive integer{f' ({unit})' if unit else ''}")
    return int(raw)


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc/self/status)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:  # os.umask can only be read by setting it; keep the window short and serialised
        umask = os.umask(0o077)
        os.umask(umask)
    return umask


@contextmanager
def storage_errors(target: str | Path) -> Iterator[None]:
    """Turn an OSError or SafetensorError raised inside into a one-line `StorageError` naming `target`."""
    try:
        yield
    except StorageError:
        raise
    except (OSError, SafetensorError) as exc:
        code = getattr(exc, "errno", None)
        cause = f"{os.strerror(code)} (errno {code})" if code else str(exc) or type(exc).__name__
        error = StorageError(f"{target}: cannot write: {cause}")
        error.errno = code
        raise error from exc


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; rename it onto `target` on success.

    The final file gets mode `0o666 & ~umask`, like a file made with `open(..., "w")`: the mode is
    set after the writer ran (mkstemp makes 0600, and some writers, safetensors among them,
    replace the temporary file rather than write into it).
    """
    target = Path(target)
    tmp = ""
    try:
        with storage_errors(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            os.close(fd)
            yield Path(tmp)
            os.chmod(tmp, 0o666 & ~current_umask())
            os.replace(tmp, target)
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)


def check_output(target: str | Path, directory: bool = False, what: str = "--out") -> Path:
    """`target`, unless it cannot be written as a file (or, with `directory`, a directory): an
    existing path of the other kind, or a nearest existing parent that is not a writable directory.
    Checked before long work, so that the work is not lost at the end."""
    path = Path(target)
    if path.exists() and path.is_dir() != directory:
        raise InputError(f"{what} {path}: exists and is {'a file' if directory else 'a directory'}; "
                         f"give a {'directory' if directory else 'file'} path")
    mine = [path.absolute()] if directory else []
    parent = next((p for p in [*mine, *path.absolute().parents] if p.exists()), Path("/"))
    try:  # a probe file, not os.access: root passes access checks on read-only and virtual file systems
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise InputError(f"{what} {path}: cannot write under {parent} ({exc.strerror or exc})") from None
    return path


def write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: str | Path, data: Any) -> None:
    """Atomically write `data` as strict JSON: NaN and infinities (a metric with nothing to measure,
    an epoch without validation pairs) become null, which every JSON reader accepts."""
    write_text(target, json.dumps(_strict(data), indent=2, sort_keys=False, allow_nan=False) + "\n")


def _strict(data: Any) -> Any:
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {k: _strict(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_strict(v) for v in data]
    return data


def save_tensors(target: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Atomically write a safetensors file (tensors made contiguous)."""
    with atomic_path(target) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def save_torch(target: str | Path, obj: Any) -> None:
    """Atomically `torch.save` (for optimizer state in resumable training)."""
    buf = io.BytesIO()  # torch.save to a path reports a full disk as a RuntimeError; a plain write as OSError
    torch.save(obj, buf)
    with atomic_path(target) as tmp:
        tmp.write_bytes(buf.getbuffer())


def staging_dir(target: str | Path) -> Path:
    """A new empty hidden sibling directory of `target` to build its replacement in (see `replace_dir`)."""
    target = Path(target)
    with storage_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=target.parent))


_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where the OS or file system cannot."""
    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if fn is None:
        return False
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def replace_dir(staging: Path, target: str | Path) -> None:
    """Put the finished directory `staging` at `target` as a unit, then delete the old `target`.

    The old directory stays whole until the new one is in place. On Linux the two are swapped
    atomically (renameat2 RENAME_EXCHANGE); elsewhere the old one is first renamed to a hidden
    `.<name>.old-*` sibling, so a crash between the two renames leaves no `target` but both
    complete directories beside it. A failure removes `staging` and keeps the old `target`.
    """
    target = Path(target)
    old = None
    try:
        with storage_errors(target):
            os.chmod(staging, (target.stat().st_mode & 0o7777) if target.is_dir() else 0o777 & ~current_umask())
            if not (target.is_dir() and any(target.iterdir())):
                os.replace(staging, target)  # onto a missing or empty directory
            elif _exchange(staging, target):
                old = staging
            else:
                old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
                os.replace(target, old)
                try:
                    os.replace(staging, target)
                except BaseException:
                    os.replace(old, target)
                    raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def keep_other_files(old: Path, new: Path, own: Collection[str]) -> None:
    """Hard-link (or copy) into `new` what the directory `old` holds beyond its `own` files and the
    files `new` has: files a user put beside an export or index survive its replacement."""
    if not old.is_dir():
        return

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    for path in old.iterdir():
        if path.name not in own and not (new / path.name).exists():
            with storage_errors(new / path.name):
                if path.is_dir() and not path.is_symlink():
                    shutil.copytree(path, new / path.name, symlinks=True, copy_function=link)
                else:
                    link(str(path), str(new / path.name))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
