"""Shared fixtures for the interop tests (real third-party tools on loopback)."""

from __future__ import annotations

import itertools
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from imsbox.testing import worker_port

from .baresip import ImsboxNet
from .capture import Capture, tshark_binary
from .phone_kit import CAROL_TONE, IMSBOX_TONE, PASSWORDS, PHONE_TONE, PHONES
from .phones import ImsboxUe, Phone, tone_wav
from .pjsua import pjsua_missing

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
            try:
                t.bind((host, worker_port()))
            except OSError:
                continue
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


# -- the phone interop tests: the network, alice and carol (imsbox UEs), bob (a phone) ------

@pytest.fixture(params=list(PHONES))
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "pjsua2" and (why := pjsua_missing()):
        pytest.skip(why)
    return str(request.param)


@pytest.fixture
def net(tmp_path: Path) -> Iterator[ImsboxNet]:
    network = ImsboxNet.start(tmp_path / "net", PASSWORDS)
    try:
        yield network
    finally:
        status = network.stop()
        (tmp_path / "net" / "trace.txt").write_text(network.trace())   # for a failure
        assert status == 0, f"imsbox serve exit {status}: {network.stderr[-20:]}"


@pytest.fixture
def ue(net: ImsboxNet) -> Iterator[ImsboxUe]:
    alice = ImsboxUe("alice", PASSWORDS["alice"], net.pcscf_port, IMSBOX_TONE,
                     answer_calls=0.2)
    try:
        yield alice.start()
    finally:
        alice.close()


@pytest.fixture
def phone(kind: str, net: ImsboxNet, tmp_path: Path) -> Iterator[Phone]:
    play = tone_wav(tmp_path / "phone-tone.wav", PHONE_TONE)
    bob = PHONES[kind](tmp_path / kind, "bob", PASSWORDS["bob"], net.pcscf_port, play)
    try:
        yield bob.start()
    finally:
        bob.stop()


@pytest.fixture
def carol(net: ImsboxNet) -> Iterator[ImsboxUe]:
    ue = ImsboxUe("carol", PASSWORDS["carol"], net.pcscf_port, CAROL_TONE, answer_calls=0.2)
    try:
        yield ue.start()
    finally:
        ue.close()
