"""Optional parts of spacebind: packages that only some inputs or commands need, installed as
extras (`pip install 'spacebind[video]'`). `require` imports one where it is used, and names the
extra to install when it is missing."""
from __future__ import annotations

import importlib
from types import ModuleType

from spacebind.errors import SpacebindError


class MissingExtraError(SpacebindError, ImportError):
    """An optional package that is not installed; the message names the extra that installs it."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import `module` (dotted names allowed); if its package is not installed, raise
    MissingExtraError naming `extra`. `purpose` says what needs it (e.g. "reading .mp4 video").
    A package that is installed but fails to import raises its own error unchanged."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != module.split(".")[0]:
            raise  # the package is there; one of its own dependencies is not
        raise MissingExtraError(f"{purpose} needs {module.split('.')[0]}, which is not installed: "
                                f"pip install 'spacebind[{extra}]'") from None
