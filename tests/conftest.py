"""Shared fixtures and the test tiers. No test may reach the network: sockets to anything but
loopback fail.

Tiers, by folder: `unit/` (the fast default run, no world-expert training), `contract/` (official
checkpoint formats and reference implementations), `integration/` (recipes, world claims,
torchrun). `pytest` runs the unit tier; `pytest -m ""` runs all three."""
from __future__ import annotations

import ipaddress
import os
import socket
import sys
from pathlib import Path

import pytest

TIERS = ("unit", "contract", "integration")
sys.path.insert(0, str(Path(__file__).parent / "helpers"))  # toy experts and tiny official checkpoints

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("SPACEBIND_PROGRESS", "0")

_real_connect = socket.socket.connect


def _guarded_connect(self: socket.socket, address, *args, **kwargs):  # type: ignore[no-untyped-def]
    host = address[0] if isinstance(address, tuple) else None
    if host is not None:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise RuntimeError(f"test tried to open a network connection to {address!r}")
    return _real_connect(self, address, *args, **kwargs)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test with its tier, from the folder it lives in."""
    here = Path(__file__).parent
    for item in items:
        tier = Path(str(item.fspath)).relative_to(here).parts[0]
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: tests live under tests/{{{','.join(TIERS)}}}/")
        item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory):
    """A small procedural-world dataset (held-out instance seed 7), shared by the session."""
    from spacebind.io.datasets import Dataset
    from spacebind.world.generate import generate_world

    root = tmp_path_factory.mktemp("world") / "w7"
    generate_world(root, seed=7, sizes={"train": 800, "val": 150, "test": 300})
    return Dataset.load(root)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module's tiny models (far faster than cores shared with other
    jobs, and the thread count the module's measured numbers were taken with); restored after."""
    from spacebind.training.threads import cpu_threads

    with cpu_threads(1):
        yield
