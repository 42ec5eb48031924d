"""Process settings for the long-running servers (`serve`, `sip-proxy`, `ue`)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Iterator

__all__ = ["stop_on_signals", "tune_garbage_collector"]

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
