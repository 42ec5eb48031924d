"""The messaging AS relays a file with a bounded buffer: when the far leg stops
draining, the AS stops reading the near leg instead of holding the file.

Real MSRP endpoints on loopback, the AS's own relay (anchor._FileRelay).
"""

from __future__ import annotations

import asyncio
from typing import Any

from imsbox.apps.anchor import RELAY_HIGH, _FileRelay
from imsbox.msrp import MsrpEndpoint, MsrpUri

SIZE = 16 << 20  # 16 MiB: far more than loopback socket buffers plus RELAY_HIGH


class Counter:
    """The final receiver's sink: counts bytes, keeps none."""

    def __init__(self) -> None:
        self.bytes = 0

    def write_at(self, offset: int, data: bytes) -> None:
        self.bytes += len(data)


class Watched:
    """The AS's relay sink, recording the most it ever held."""

    def __init__(self, relay: _FileRelay) -> None:
        self.relay = relay
        self.peak = 0

    def write_at(self, offset: int, data: bytes) -> None:
        self.relay.write_at(offset, data)
        self.peak = max(self.peak, self.relay.buffered)


async def stalled(relay_box: list[Watched]) -> int:
    """Bytes the AS read on the near leg once that stopped growing (bounded polls)."""
    last, still = -1, 0
    for _ in range(600):
        await asyncio.sleep(0.05)
        now = relay_box[0].relay._next if relay_box else 0
        still = still + 1 if now == last and now > 0 else 0
        last = now
        if still >= 20:
            return now
    raise AssertionError("the near leg never stalled")


async def relay_with_a_stuck_receiver() -> dict[str, Any]:
    async with MsrpEndpoint("127.0.0.1", 0) as rx_ep, MsrpEndpoint("127.0.0.1", 0) as as_ep, \
            MsrpEndpoint("127.0.0.1", 0) as tx_ep:
        rx = rx_ep.create_session(session_id="relayrx01")
        counter = Counter()
        rx.sink_factory = lambda req: counter
        far = as_ep.create_session([MsrpUri("msrp", "127.0.0.1", rx_ep.port, "relayrx01")],
                                   setup="active")
        await far.start()
        await rx.wait_bound(5)
        near = as_ep.create_session(session_id="relaynear1")
        box: list[Watched] = []

        def sink(req: Any) -> Watched:
            box.append(Watched(_FileRelay(req, near, far)))
            return box[0]

        near.sink_factory = sink
        tx = tx_ep.create_session([MsrpUri("msrp", "127.0.0.1", as_ep.port, "relaynear1")],
                                  setup="active", chunk_size=65536)
        await tx.start()
        assert rx.connection is not None
        rx.connection.pause_reading()  # the far end stops draining
        send = asyncio.ensure_future(
            tx.send_message("application/octet-stream", bytes(SIZE), size=SIZE))
        read_when_stuck = await stalled(box)
        peak_when_stuck = box[0].peak
        rx.connection.resume_reading()
        await asyncio.wait_for(send, 120)
        await asyncio.wait_for(box[0].relay.task, 120)
        return {"read": read_when_stuck, "peak": peak_when_stuck, "got": counter.bytes,
                "peak_total": box[0].peak}


def test_as_file_relay_stops_reading_when_the_far_leg_stops() -> None:
    out = asyncio.run(relay_with_a_stuck_receiver())
    # Buffering the whole file would hold ~SIZE minus the socket buffers; the
    # bound is the high mark plus one read of the near connection.
    assert out["peak_total"] <= RELAY_HIGH + (256 << 10), out
    assert out["read"] < SIZE, out  # the sender was held back while the far end was stuck
    assert out["got"] == SIZE, out  # and everything arrived once it drained
