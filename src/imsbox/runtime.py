"""Process settings for the long-running servers (`serve`, `sip-proxy`, `ue`): signals,
the garbage collector, and the HOST:PORT syntax of their command lines."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
from collections.abc import Iterator

__all__ = ["parse_hostport", "positive_number", "stop_on_signals", "tune_garbage_collector"]

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[asyncio.Event]:
    """An event set by SIGINT/SIGTERM while the block runs."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in _STOP_SIGNALS:
            loop.remove_signal_handler(sig)


def positive_number(text: str) -> float:
    """argparse type for seconds, Hz...: a number above 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:   # also refuses nan
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number above 0")
    return value


def tune_garbage_collector() -> None:
    """Call once start-up is done.

    Transaction timers keep each call's objects alive for 32 s (64*T1), so a
    busy server holds hundreds of thousands of objects; with the default
    thresholds the cyclic collector walks them often enough to stall the
    event loop for hundreds of milliseconds, long enough to trigger
    retransmissions.  Start-up objects are frozen out of its sight and it
    runs less often; reference counting still frees almost everything.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def parse_hostport(text: str, default_port: int = 5060) -> tuple[str, int]:
    """'127.0.0.1:5070', '[::1]:5070', 'host' -> (host, port); SystemExit on junk."""
    host, port = text, default_port
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise argparse.ArgumentTypeError(f"{text!r}: missing ']' in IPv6 address")
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise argparse.ArgumentTypeError(f"{text!r}: expected [ADDR]:PORT")
            port = _port(text, rest[1:])
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = _port(text, port_text)
    if not host:
        raise argparse.ArgumentTypeError(f"{text!r}: missing host")
    return host, port


def _port(text: str, port_text: str) -> int:
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r}: port must be 1-65535")
    return int(port_text)
