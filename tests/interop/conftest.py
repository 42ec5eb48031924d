"""Shared fixtures for the interop tests (real third-party tools on loopback)."""

from __future__ import annotations

import itertools
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .capture import Capture, tshark_binary

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/interop carries the ``interop`` marker (-m "not interop")."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.interop)


def pick_free_port(host: str = "127.0.0.1") -> int:
    """A port free for both TCP and UDP on ``host`` right now (tiny race, fine on lo)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind((host, 0))
            port = t.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                    u.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found")


@pytest.fixture
def free_port() -> Callable[[], int]:
    """``free_port()`` -> a distinct free TCP+UDP port on 127.0.0.1 per call."""
    seen: set[int] = set()

    def pick() -> int:
        while (port := pick_free_port()) in seen:
            pass
        seen.add(port)
        return port
    return pick


@pytest.fixture(scope="session")
def tshark() -> str:
    """Path of tshark; fails (TsharkMissing), never skips, when it is not installed."""
    return tshark_binary()


@pytest.fixture
def capture(tshark: str, tmp_path: Path) -> Iterator[Callable[..., Capture]]:
    """``capture(ports=[...], **kw)`` -> a Capture writing under pytest's tmp_path
    (kept for the last few runs, for opening in Wireshark after a failure)."""
    made: list[Capture] = []
    counter = itertools.count(1)

    def make(ports: Any = (), **kw: Any) -> Capture:
        kw.setdefault("directory", tmp_path)
        kw.setdefault("name", f"capture{next(counter)}.pcapng")
        cap = Capture(ports, **kw)
        made.append(cap)
        return cap
    yield make
    for cap in made:  # a test that failed inside its with block
        cap._kill()
