"""One traced message and its frame on the trace feed.

A frame is one JSON header line (``\\n``-terminated, no raw newline inside)
followed by ``len`` raw bytes: the message exactly as it crossed the socket.
Three frame types: ``hello`` (the process's nodes and their listening
addresses, sent first to each subscriber), ``rec`` (a :class:`TraceRecord`)
and ``drop`` (how many records a slow subscriber missed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Address", "FrameError", "Hello", "NodeInfo", "TraceRecord", "decode_header",
           "encode_frame"]

Address = tuple[str, int]
MAX_HEADER_LINE = 64 * 1024
MAX_FRAME_BODY = 16 * 1024 * 1024


class FrameError(ValueError):
    """A feed frame that cannot be read (the feed is not an imsbox trace feed)."""


@dataclass(slots=True, frozen=True)
class TraceRecord:
    """A SIP or MSRP message one node sent or received.

    ``t`` is ``time.monotonic()`` (one clock for every process on the host, so
    records of several ``serve --role`` processes sort together); ``wall`` is
    ``time.time()`` for display; ``conn`` names the connection for TCP/TLS.
    """

    seq: int
    t: float
    wall: float
    node: str
    direction: str          # "in" or "out", as seen by ``node``
    proto: str              # "sip" or "msrp"
    transport: str          # "udp", "tcp" or "tls"
    local: Address
    remote: Address
    data: bytes
    conn: int | None = None
    source: str = ""        # which feed it came from (filled in by the reader)

    @property
    def src(self) -> Address:
        return self.local if self.direction == "out" else self.remote

    @property
    def dst(self) -> Address:
        return self.remote if self.direction == "out" else self.local

    def header(self) -> dict[str, Any]:
        return {"type": "rec", "seq": self.seq, "t": self.t, "wall": self.wall,
                "node": self.node, "dir": self.direction, "proto": self.proto,
                "transport": self.transport, "local": list(self.local),
                "remote": list(self.remote), "conn": self.conn, "len": len(self.data)}

    def encode(self) -> bytes:
        return encode_frame(self.header(), self.data)

    @classmethod
    def from_frame(cls, head: dict[str, Any], data: bytes, source: str = "") -> TraceRecord:
        try:
            return cls(int(head["seq"]), float(head["t"]), float(head["wall"]),
                       str(head["node"]), str(head["dir"]), str(head["proto"]),
                       str(head["transport"]), _address(head["local"]),
                       _address(head["remote"]), data,
                       None if head.get("conn") is None else int(head["conn"]), source)
        except (KeyError, TypeError, ValueError) as exc:
            raise FrameError(f"bad trace record header: {exc}") from None


@dataclass(slots=True, frozen=True)
class NodeInfo:
    """One node of a serve process: its role and what it listens on
    (``(transport, host, port)``; MSRP endpoints as ``msrp``)."""

    role: str
    listen: tuple[tuple[str, str, int], ...]


@dataclass(slots=True, frozen=True)
class Hello:
    """The first frame a subscriber gets: which process, which nodes."""

    pid: int
    nodes: tuple[NodeInfo, ...] = field(default_factory=tuple)

    def encode(self) -> bytes:
        nodes = [{"role": n.role, "listen": [list(x) for x in n.listen]} for n in self.nodes]
        return encode_frame({"type": "hello", "pid": self.pid, "nodes": nodes, "len": 0}, b"")

    @classmethod
    def from_header(cls, head: dict[str, Any]) -> Hello:
        try:
            nodes = tuple(NodeInfo(str(n["role"]), tuple(
                (str(t), str(h), int(p)) for t, h, p in n["listen"])) for n in head["nodes"])
            return cls(int(head["pid"]), nodes)
        except (KeyError, TypeError, ValueError) as exc:
            raise FrameError(f"bad trace hello: {exc}") from None


def encode_frame(head: dict[str, Any], data: bytes) -> bytes:
    return json.dumps(head, separators=(",", ":")).encode() + b"\n" + data


def decode_header(line: bytes) -> dict[str, Any]:
    """The JSON header of a frame; FrameError when it is not one."""
    try:
        head = json.loads(line)
    except ValueError:
        raise FrameError("not a trace feed frame (expected a JSON header line)") from None
    if not isinstance(head, dict) or not isinstance(head.get("len", 0), int) \
            or not 0 <= head.get("len", 0) <= MAX_FRAME_BODY:
        raise FrameError("trace feed frame header without a valid len")
    return head


def _address(value: Any) -> Address:
    host, port = value
    return str(host), int(port)
