"""Shared fixtures. No test may reach the network: sockets to anything but loopback fail."""
from __future__ import annotations

import ipaddress
import os
import socket

import pytest

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


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory):
    """A small procedural-world dataset (held-out instance seed 7), shared by the session."""
    from spacebind.data import Dataset
    from spacebind.world.generate import generate_world

    root = tmp_path_factory.mktemp("world") / "w7"
    generate_world(root, seed=7, sizes={"train": 800, "val": 150, "test": 300})
    return Dataset.load(root)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module's tiny models (far faster than cores shared with other
    jobs, and the thread count the module's measured numbers were taken with); restored after."""
    from spacebind.threads import cpu_threads

    with cpu_threads(1):
        yield
