"""Errors that name the file, field or input at fault."""
from __future__ import annotations


class SpacebindError(Exception):
    """Base class of every error spacebind raises on purpose."""


class InputError(SpacebindError, ValueError):
    """A bad input: corrupt file, wrong shape, NaN, empty text, unknown modality."""


class RecipeError(SpacebindError, ValueError):
    """A recipe that does not validate; the message lists every field at fault."""


class CheckpointError(SpacebindError):
    """A checkpoint that is missing, corrupt, of the wrong expert, or whose keys do not match."""


class ExpertError(SpacebindError):
    """An expert's encoder broke its contract (output of another shape than its inputs and dim): a
    bug to fix, which stops the job instead of marking every item bad."""


class CacheError(SpacebindError):
    """An embedding cache made by another expert or checkpoint, or damaged."""


class UnknownNameError(SpacebindError, KeyError):
    """An unknown registry name; the message suggests the nearest known ones."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class StorageError(SpacebindError, OSError):
    """A file that could not be written (disk full, permissions, I/O error); names the file and the cause."""


class LockError(SpacebindError):
    """A directory another job is working in (embedding cache, work directory); names the holder."""
