"""Registries of experts and bonds, with wildcard listing (timm-style)."""
from __future__ import annotations

import difflib
import fnmatch
import inspect
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Mapping, TypeVar

from pydantic import PydanticSchemaGenerationError, TypeAdapter, ValidationError

from spacebind.errors import InputError, UnknownNameError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered factory and what it promises."""

    name: str
    factory: Callable[..., T]
    modalities: tuple[str, ...] = ()
    dim: int | None = None
    description: str = ""
    checkpoint: str = ""  # the file(s) a user must provide, described for error messages
    # the Hugging Face Hub licence id its publisher gives the weights ("" where none is stated, or it
    # depends on the file given); the model card lists it (docs/decisions.md, "Licences")
    licence: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """A name → factory map; registering a name twice warns and replaces."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, **info: Any) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: `@EXPERTS.register("world_unified", modalities=(...), dim=64)`."""

        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                warnings.warn(f"{self.kind} {name!r} registered twice; the later one wins", stacklevel=2)
            self._entries[name] = Entry(name=name, factory=factory, **info)
            return factory

        return decorate

    def list(self, pattern: str = "*") -> list[str]:
        """Sorted names matching a shell-style wildcard pattern."""
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def entry(self, name: str) -> Entry[T]:
        """The entry for `name`, or an UnknownNameError suggesting the nearest names."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def near(self, name: str) -> list[str]:
        """Up to three registered names close to `name`, closest first."""
        return difflib.get_close_matches(name, list(self._entries), n=3)

    def unknown_message(self, name: str) -> str:
        near = self.near(name)
        hint = f" Did you mean {' or '.join(repr(n) for n in near)}?" if near else ""
        return f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(self.list()) or '(none)'}"

    def argument_problem(self, name: str, kwargs: Mapping[str, Any]) -> str | None:
        """Why `name`'s factory cannot take `kwargs` (arguments it lacks, values not of its hinted type), or None."""
        try:
            params = inspect.signature(self.entry(name).factory).parameters
        except (TypeError, ValueError):  # no signature to check against
            return None
        keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        takes = [k for k, p in params.items() if p.kind in keyword]
        open_ended = any(p.kind is p.VAR_KEYWORD for p in params.values())
        unknown = [] if open_ended else [k for k in kwargs if k not in takes]
        if unknown:
            hints = {k: difflib.get_close_matches(k, takes, n=1) for k in unknown}
            return (f"{self.kind} {name!r} takes no argument " + ", ".join(
                f"{k!r}" + (f" (did you mean {hints[k][0]!r}?)" if hints[k] else "") for k in unknown)
                    + f"; it takes: {', '.join(takes) or '(none)'}")
        wrong = [f"{k}={v!r} ({why})" for k, v in kwargs.items() if (why := _type_problem(self.entry(name).factory, k, v))]
        return f"{self.kind} {name!r}: wrong type: " + "; ".join(wrong) if wrong else None

    def create(self, name: str, **kwargs: Any) -> T:
        """Build the registered object `name` with `kwargs` (arguments its factory lacks, or values
        of the wrong type, are an InputError)."""
        problem = self.argument_problem(name, kwargs)
        if problem:
            raise InputError(problem)
        return self.entry(name).factory(**kwargs)

    def __contains__(self, name: object) -> bool:
        return name in self._entries


def _type_problem(factory: Callable[..., Any], key: str, value: Any) -> str | None:
    """Why `value` does not fit the type hint of `factory`'s argument `key` (lax, as pydantic reads a config), or None."""
    try:
        hint = inspect.signature(factory, eval_str=True).parameters[key].annotation
    except (KeyError, AttributeError, NameError, SyntaxError, TypeError, ValueError):  # unresolvable hints: unchecked
        return None
    if hint is inspect.Parameter.empty:
        return None
    try:
        adapter = TypeAdapter(hint)
    except (PydanticSchemaGenerationError, TypeError):
        return None
    try:
        adapter.validate_python(value)
    except ValidationError as error:
        return f"expected {_hint_name(hint)}: {error.errors()[0]['msg'].lower()}"
    return None


def _hint_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


EXPERTS: "Registry[Any]" = Registry("expert")
"""Every expert factory, by name; families register on import of `spacebind.experts`."""
