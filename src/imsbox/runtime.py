"""Process settings for the long-running servers (`serve`, `sip-proxy`)."""

from __future__ import annotations

import gc

__all__ = ["tune_garbage_collector"]


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
