"""Bound spaces (combination and displacement): now in `spacebind.bonds.bind`."""
from spacebind.bonds.bind import BoundSpace  # noqa: F401
