"""Capture loopback traffic with tshark for the duration of a ``with`` block.

    with Capture(ports=[5060, 8888], tcp=True, udp=True) as cap:
        ...                                   # generate traffic on 127.0.0.1
    frames = cap.decode(decode_as=["tcp.port==8888,msrp"],
                        display_filter="msrp", fields=["msrp.method"])
    assert cap.malformed(decode_as=["tcp.port==8888,msrp"]) == []

``Capture`` starts ``tshark -i lo -w FILE -f "<bpf>"`` and only returns from
``__enter__`` once tshark reports "Capturing on" (and "Capture started") and is
still alive a moment later; ``__exit__`` waits ``settle`` seconds for the last
packets to be written, then stops tshark with SIGINT (falling back to
terminate/kill) and reads "N packets captured" into ``cap.packets``.  The
pcapng file lives in a temporary directory (removed when the Capture is
garbage collected or at interpreter exit) unless ``directory`` is given, e.g.
pytest's ``tmp_path`` to keep it for debugging.

Decoding reads the file back with ``tshark -r FILE -T json``.  tshark only
recognises SIP on 5060 and MSRP by heuristics, so pass ``decode_as`` entries
(``"udp.port==5070,sip"``, ``"tcp.port==8888,msrp"``), either to the
constructor (the default for every read) or per call.

tshark is a hard requirement (``scripts/setup.sh`` installs it): a missing
binary raises ``TsharkMissing`` rather than skipping.

Caveats of tshark 4.0's MSRP dissector (Debian 12), found while writing the
MSRP interop test:

* it decodes only the first MSRP message of each TCP segment and does not
  reassemble messages across segments.  ``Pcap.resegment(split_msrp)`` writes
  a copy of the capture with one message per TCP segment, so that every
  message gets dissected;
* a segment that ends inside the end-line of its first message is flagged
  "Malformed Packet (Exception occurred)";
* it searches for a ';' in Content-Type from the start of the value for the
  length of the whole line, so with Content-Type as the last header (as RFC 4975
  requires) a ';' among the first 10 body bytes reads as a parameter and throws
  (Malformed).  Keep ';' out of the first 10 bytes of test chunk bodies.
"""

from __future__ import annotations

import bisect
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["Capture", "CaptureError", "MALFORMED_FILTER", "Pcap", "TcpFlow", "TsharkMissing",
           "bpf_filter", "split_msrp", "tshark_binary"]

#: Frames tshark could not dissect, or where a dissector flagged an error.
MALFORMED_FILTER = "_ws.malformed || _ws.expert.severity == error"


class CaptureError(RuntimeError):
    """tshark failed to start, stop or read a capture."""


class TsharkMissing(CaptureError):
    """tshark is not installed (run scripts/setup.sh or apt-get install tshark)."""


def tshark_binary() -> str:
    path = shutil.which("tshark")
    if path is None:
        raise TsharkMissing("tshark not found on PATH; install it with scripts/setup.sh "
                            "(Debian: apt-get install tshark)")
    return path


def bpf_filter(ports: Iterable[int], *, tcp: bool = True, udp: bool = True) -> str:
    """``(tcp or udp) and (port 5060 or port 8888)``; no ports: every TCP/UDP packet."""
    protos = [p for p, on in (("tcp", tcp), ("udp", udp)) if on]
    if not protos:
        raise ValueError("capture neither tcp nor udp?")
    proto = protos[0] if len(protos) == 1 else "(" + " or ".join(protos) + ")"
    ports = sorted({int(p) for p in ports})
    if not ports:
        return proto
    return f"{proto} and (" + " or ".join(f"port {p}" for p in ports) + ")"


class Pcap:
    """A capture file read back with tshark (``decode_as`` applies to every read)."""

    def __init__(self, path: str | os.PathLike[str], decode_as: Sequence[str] = ()) -> None:
        self.tshark = tshark_binary()
        self.path = Path(path)
        self.decode_as = list(decode_as)

    # -- reading back -------------------------------------------------------------------
    def _read(self, args: list[str], decode_as: Sequence[str] | None) -> str:
        if not self.path.exists():
            raise CaptureError("nothing captured yet (use the Capture as a with block first)")
        cmd = [self.tshark, "-r", str(self.path), "-n"]
        for d in self.decode_as if decode_as is None else decode_as:
            cmd += ["-d", d]
        cmd += args
        res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        if res.returncode != 0:
            raise CaptureError(f"{' '.join(cmd)} failed ({res.returncode}):\n"
                               f"{res.stderr.decode(errors='replace').strip()}")
        return res.stdout.decode(errors="replace")

    def decode(self, decode_as: Sequence[str] | None = None, display_filter: str | None = None,
               fields: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """One dict per frame matching ``display_filter``.

        With ``fields`` each dict maps field name -> list of every occurrence in the
        frame (a TCP segment may carry several PDUs), missing fields left out.
        Without, it is tshark's full ``layers`` tree, duplicate keys merged into
        lists (``--no-duplicate-keys``).
        """
        args = ["-T", "json", "--no-duplicate-keys"]
        if display_filter:
            args += ["-Y", display_filter]
        for f in fields or ():
            args += ["-e", f]
        out = self._read(args, decode_as).strip()
        packets = json.loads(out) if out else []
        return [p["_source"]["layers"] for p in packets]

    def count(self, field: str, decode_as: Sequence[str] | None = None,
              display_filter: str | None = None) -> list[str]:
        """Every value of ``field`` over all frames, in order (``len()`` to count)."""
        frames = self.decode(decode_as, display_filter or field, fields=[field])
        return [v for fr in frames for v in fr.get(field, [])]

    def malformed(self, decode_as: Sequence[str] | None = None,
                  display_filter: str = MALFORMED_FILTER) -> list[str]:
        """``"frame N: PROTO: expert messages | info column"`` for each bad frame."""
        out = self._read(["-Y", display_filter, "-T", "fields", "-E", "occurrence=a",
                          "-E", "aggregator=;", "-e", "frame.number",
                          "-e", "_ws.col.Protocol", "-e", "_ws.expert.message",
                          "-e", "_ws.col.Info"], decode_as)
        bad = []
        for line in out.splitlines():
            if not line.strip():
                continue
            num, proto, expert, info = ([*line.split("\t"), "", "", "", ""])[:4]
            bad.append(f"frame {num}: {proto}: {expert} | {info}")
        return bad

    def tcp_payload(self, frame: int) -> bytes:
        """The TCP payload of frame number ``frame`` (b"" if it has none)."""
        out = self._read(["-Y", f"frame.number == {int(frame)}", "-T", "fields",
                          "-e", "tcp.payload"], decode_as=()).strip()
        return bytes.fromhex(out.replace(":", ""))

    def summary(self, decode_as: Sequence[str] | None = None,
                display_filter: str | None = None) -> str:
        """tshark's one-line-per-frame text, for assertion messages."""
        return self._read(["-Y", display_filter] if display_filter else [], decode_as)

    # -- one application message per TCP segment -------------------------------------
    def tcp_flows(self) -> list[TcpFlow]:
        """Each direction of each TCP connection (IPv4) with its reassembled bytes."""
        out = self._read(["-Y", "tcp.len > 0", "-T", "fields", "-e", "tcp.stream",
                          "-e", "frame.time_epoch", "-e", "ip.src", "-e", "tcp.srcport",
                          "-e", "ip.dst", "-e", "tcp.dstport", "-e", "tcp.seq", "-e", "tcp.ack",
                          "-e", "tcp.payload"], decode_as=())
        flows: dict[tuple[str, str, int, str, int], TcpFlow] = {}
        for line in out.splitlines():
            stream, ts, src, sport, dst, dport, seq, ack, payload = line.split("\t")
            key = (stream, src, int(sport), dst, int(dport))
            flow = flows.setdefault(key, TcpFlow(src, int(sport), dst, int(dport)))
            flow.segments.append((int(seq), float(ts), int(ack), bytes.fromhex(payload)))
        for flow in flows.values():
            flow.assemble()
        return list(flows.values())

    def resegment(self, split: Callable[[bytes], list[bytes]], name: str | None = None) -> Pcap:
        """A copy of the TCP traffic where every message ``split`` finds in a byte
        stream starts its own TCP segment (same addresses, ports, seq/ack, times).

        tshark 4.0's MSRP dissector only decodes the first MSRP message of a
        segment and does not reassemble across segments; after this, every message
        is dissected.  ``split(data)`` returns the stream cut into messages (their
        concatenation must be ``data``; a trailing partial message is fine).
        """
        packets: list[tuple[float, bytes]] = []
        for flow in self.tcp_flows():
            pieces = split(flow.data)
            if b"".join(pieces) != flow.data:
                raise CaptureError(f"split() lost bytes of {flow}")
            offset = 0
            for piece in pieces:
                ts, ack = flow.at(offset)
                for i in range(0, len(piece), _MAX_SEGMENT):  # only for huge messages
                    seg = piece[i : i + _MAX_SEGMENT]
                    packets.append((ts, _ipv4_tcp(flow, flow.seq0 + offset + i, ack, seg)))
                offset += len(piece)
        packets.sort(key=lambda p: p[0])
        path = self.path.with_name(name or self.path.stem + "-resegmented.pcap")
        _write_pcap(path, packets)
        pcap = Pcap(path, self.decode_as)
        pcap._owner = self  # keeps a temporary directory alive
        return pcap


class TcpFlow:
    """One direction of a TCP connection: ``data`` and where each segment started."""

    def __init__(self, src: str, sport: int, dst: str, dport: int) -> None:
        self.src, self.sport, self.dst, self.dport = src, sport, dst, dport
        self.segments: list[tuple[int, float, int, bytes]] = []  # seq, time, ack, payload
        self.data = b""
        self.seq0 = 0
        self._starts: list[int] = []
        self._meta: list[tuple[float, int]] = []

    def assemble(self) -> None:
        self.segments.sort(key=lambda s: (s[0], s[1]))
        self.seq0 = self.segments[0][0]
        buf = bytearray()
        for seq, ts, ack, payload in self.segments:
            off = seq - self.seq0
            if off + len(payload) <= len(buf):
                continue  # retransmission
            if off > len(buf):
                raise CaptureError(f"{self}: {off - len(buf)} bytes missing from the capture")
            self._starts.append(len(buf))
            self._meta.append((ts, ack))
            buf += payload[len(buf) - off :]
        self.data = bytes(buf)

    def at(self, offset: int) -> tuple[float, int]:
        """(time, ack) of the segment carrying byte ``offset``."""
        return self._meta[bisect.bisect_right(self._starts, offset) - 1]

    def __repr__(self) -> str:
        return f"TcpFlow({self.src}:{self.sport} -> {self.dst}:{self.dport}, {len(self.data)} B)"


_MSRP_START = re.compile(rb"MSRP ([A-Za-z0-9][A-Za-z0-9.+%=-]{3,31}) ")


def split_msrp(data: bytes) -> list[bytes]:
    """Cut an MSRP byte stream into messages at each end-line (RFC 4975 section 7.1):
    ``-------<transaction-id><+|$|#>CRLF``; independent of imsbox's parser."""
    out, pos = [], 0
    while pos < len(data):
        m = _MSRP_START.match(data, pos)
        if m is None:
            raise CaptureError(f"no MSRP start line at offset {pos}: {data[pos:pos + 40]!r}")
        end = re.compile(rb"\r\n-------" + re.escape(m.group(1)) + rb"[+$#]\r\n")
        e = end.search(data, m.end())
        stop = len(data) if e is None else e.end()
        out.append(data[pos:stop])
        pos = stop
    return out


_MAX_SEGMENT = 65000


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ipv4_tcp(flow: TcpFlow, seq: int, ack: int, payload: bytes) -> bytes:
    src, dst = socket.inet_aton(flow.src), socket.inet_aton(flow.dst)
    tcp = struct.pack("!HHIIBBHHH", flow.sport, flow.dport, seq & 0xFFFFFFFF,
                      ack & 0xFFFFFFFF, 5 << 4, 0x18, 65535, 0, 0) + payload  # PSH|ACK
    csum = _checksum(src + dst + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)
    tcp = tcp[:16] + struct.pack("!H", csum) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return ip + tcp


def _write_pcap(path: Path, packets: list[tuple[float, bytes]]) -> None:
    """Classic pcap, LINKTYPE_RAW (101): each packet an IPv4 datagram."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 101))
        for ts, pkt in packets:
            sec = int(ts)
            usec = min(round((ts - sec) * 1e6), 999_999)
            f.write(struct.pack("<IIII", sec, usec, len(pkt), len(pkt)) + pkt)


class Capture(Pcap):
    """A tshark capture on one interface (loopback by default), as a context manager."""

    def __init__(self, ports: Iterable[int] = (), *, tcp: bool = True, udp: bool = True,
                 interface: str = "lo", bpf: str | None = None,
                 decode_as: Sequence[str] = (), directory: str | os.PathLike[str] | None = None,
                 name: str = "capture.pcapng", start_timeout: float = 10.0,
                 settle: float = 0.5, stop_timeout: float = 5.0) -> None:
        self.ports = sorted({int(p) for p in ports})
        self.interface = interface
        self.bpf = bpf if bpf is not None else bpf_filter(self.ports, tcp=tcp, udp=udp)
        self.start_timeout = start_timeout
        self.settle = settle
        self.stop_timeout = stop_timeout
        if directory is None:
            tmp = tempfile.mkdtemp(prefix="imsbox-capture-")
            self._cleanup = weakref.finalize(self, shutil.rmtree, tmp, True)
            directory = tmp
        super().__init__(Path(directory) / name, decode_as)
        self.packets: int | None = None  # from tshark's "N packets captured" at exit
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: list[str] = []
        self._started = threading.Event()
        self._running = threading.Event()
        self._reader: threading.Thread | None = None
        self._stopped = False

    # -- capturing --------------------------------------------------------------------
    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def start(self) -> Capture:
        if self._proc is not None:
            raise CaptureError("capture already started")
        cmd = [self.tshark, "-i", self.interface, "-w", str(self.path), "-f", self.bpf]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE)
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.start_timeout
        while not self._started.wait(0.05):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self._fail_start(cmd)
        # "Capturing on" is printed even for an interface that then fails to open;
        # tshark 4.0 also logs "Capture started." once dumpcap really runs
        self._running.wait(1.0)
        time.sleep(0.2)  # let dumpcap reach its first read
        if self._proc.poll() is not None:
            self._fail_start(cmd)
        return self

    def _fail_start(self, cmd: list[str]) -> None:
        self._kill()
        if self._reader is not None:
            self._reader.join(2)
        raise CaptureError(f"tshark did not start capturing ({' '.join(cmd)}):\n"
                           f"{self.stderr.strip()}")

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for raw in self._proc.stderr:
            line = raw.decode(errors="replace")
            self._stderr.append(line)
            if "Capturing on" in line:
                self._started.set()
            elif "Capture started" in line:
                self._running.set()

    def stop(self) -> None:
        proc = self._proc
        if proc is None or self._stopped:
            return
        self._stopped = True
        if proc.poll() is not None:
            raise CaptureError(f"tshark died during the capture (exit {proc.returncode}):\n"
                               f"{self.stderr.strip()}")
        time.sleep(self.settle)  # let the kernel hand the last packets to dumpcap
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            self._kill()
            raise CaptureError(f"tshark ignored SIGINT:\n{self.stderr.strip()}") from None
        if self._reader is not None:
            self._reader.join(self.stop_timeout)
        m = re.search(r"(\d+) packets? captured", self.stderr)
        self.packets = int(m.group(1)) if m else None
        if not self.path.exists():
            raise CaptureError(f"tshark wrote no capture file (exit {proc.returncode}):\n"
                               f"{self.stderr.strip()}")

    def _kill(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            self.stop()
        else:  # do not mask the real error with a capture problem
            try:
                self.stop()
            except CaptureError:
                self._kill()
