"""Several worker processes behind one SIP port, on one machine (Linux).

A supervisor (the parent process, no event loop) binds every socket, forks N
workers and watches them:

* each worker gets its own UDP and TCP socket on each public address, all
  with SO_REUSEPORT: the kernel gives a datagram (a connection) to one socket
  of the group by a hash of its source and destination, so a client's
  retransmissions and its CANCEL (same 4-tuple as the INVITE) reach the
  worker that holds the server transaction, and a connection lives in one
  worker, which sends the responses on it;
* which UDP socket: with N workers, the one of index (source port mod N),
  by a classic BPF program on the group (SO_ATTACH_REUSEPORT_CBPF): the same
  sender still always reaches the same worker, and clients on consecutive
  ports (two SIPp instances) are known to reach different ones; where the
  kernel refuses the program its own 4-tuple hash is used;
* each worker also gets a UDP socket of its own on a private port of the
  same address: its Via sent-by and the source of what it sends, so the
  responses to its client transactions come back to it, not to a sibling;
* the parent keeps every socket open: while a dead worker is restarted its
  share of the traffic waits in its sockets' kernel queues, and the hash
  keeps sending each client to the same socket (closing one would re-spread
  every client over the others, moving live transactions).

What this does not do: share state.  A worker knows only its own
transactions, which is enough for a transaction-stateful proxy keeping no
dialog state (``imsbox sip-proxy``): an in-dialog request may reach any
worker.  A node with registrations or sessions in memory (``imsbox serve``)
cannot run this way.  Traffic from one peer socket (one 4-tuple) all lands
on one worker: the spread comes from many clients or many source ports.

SIGTERM/SIGINT to the parent stops every worker (SIGTERM, then SIGKILL after
``stop_timeout``); a worker that dies otherwise is restarted and logged.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from .sip.transport.udp import udp_socket

__all__ = ["WorkerSockets", "bind_worker_sockets", "Supervisor"]

log = logging.getLogger(__name__)

_SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT}
QUICK_DEATH = 1.0       # a worker dead sooner than this after its start crashed at start-up
MAX_QUICK_DEATHS = 5    # in a row: give up instead of restarting it for ever


@dataclass
class WorkerSockets:
    """What one worker serves."""

    index: int
    shared: list[tuple[str, socket.socket]] = field(default_factory=list)  # public ports
    own: list[socket.socket] = field(default_factory=list)  # its private UDP port(s)
    siblings: list[tuple[str, int]] = field(default_factory=list)  # all workers' own ports

    @property
    def own_addresses(self) -> list[tuple[str, int]]:
        return [_name(sock) for sock in self.own]

    def close(self) -> None:
        for _, sock in self.shared:
            sock.close()
        for sock in self.own:
            sock.close()


def bind_worker_sockets(listen: list[tuple[str, int]], workers: int,
                        tcp: bool = True, backlog: int = 1024) -> list[WorkerSockets]:
    """UDP (and TCP) sockets on each ``listen`` address for ``workers`` workers,
    plus a private UDP port each.  Port 0 picks one port for the whole group."""
    if workers < 1:
        raise ValueError("at least one worker")
    result = [WorkerSockets(i) for i in range(workers)]
    try:
        for host, port in listen:
            for ws in result:
                udp = udp_socket(host, port, reuse_port=True)
                port = _name(udp)[1]
                ws.shared.append(("udp", udp))
                if tcp:
                    ws.shared.append(("tcp", _tcp_listener(host, port, backlog)))
                ws.own.append(udp_socket(host, 0))
    except OSError:
        for ws in result:
            ws.close()
        raise
    if workers > 1:
        for group in range(len(listen)):
            _spread_by_source_port(result[0].shared[group * (2 if tcp else 1)][1], workers)
    siblings = [addr for ws in result for addr in ws.own_addresses]
    for ws in result:
        ws.siblings = siblings
    return result


# Linux: attach a classic BPF program choosing the socket of a SO_REUSEPORT
# group (include/uapi/asm-generic/socket.h, linux/filter.h).
SO_ATTACH_REUSEPORT_CBPF = 51
_SKF_NET_OFF = -0x100000          # offsets from the IP header
_LD_H_ABS, _LD_H_IND, _LDX_B_MSH = 0x28, 0x48, 0xB1
_ALU_MOD_K, _RET_A = 0x94, 0x16


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


def _spread_by_source_port(sock: socket.socket, workers: int) -> None:
    """The group's datagrams to socket (UDP source port mod ``workers``): the
    port is the first half-word after the IP header (IPv4: 4 * IHL, options
    included; IPv6: 40 bytes)."""
    if sock.family == socket.AF_INET6:
        load = [(_LD_H_ABS, _SKF_NET_OFF + 40)]
    else:
        load = [(_LDX_B_MSH, _SKF_NET_OFF), (_LD_H_IND, _SKF_NET_OFF)]
    program = [*load, (_ALU_MOD_K, workers), (_RET_A, 0)]
    filters = (_SockFilter * len(program))(
        *(_SockFilter(code, 0, 0, k & 0xFFFFFFFF) for code, k in program))
    fprog = struct.pack("HL", len(program), ctypes.addressof(filters))  # struct sock_fprog
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
    except OSError as exc:
        log.warning("cannot spread UDP by source port (%s): the kernel's hash spreads it", exc)


def _tcp_listener(host: str, port: int, backlog: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                         socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)  # now: connections wait in the queue until a worker accepts
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _name(sock: socket.socket) -> tuple[str, int]:
    name = sock.getsockname()
    return str(name[0]), int(name[1])


@dataclass
class _Worker:
    sockets: WorkerSockets
    pid: int = 0
    started: float = 0.0
    quick_deaths: int = 0
    restart_at: float | None = None   # dead, to be started again then


class Supervisor:
    """Forks one worker per ``WorkerSockets`` running ``work(sockets)`` (its
    exit status), restarts the ones that die, stops them all on SIGTERM/SIGINT.

    ``run()`` must be called with no event loop running (it forks)."""

    def __init__(self, sockets: list[WorkerSockets], work: Callable[[WorkerSockets], int],
                 *, name: str = "worker", stop_timeout: float = 10.0) -> None:
        self.workers = [_Worker(ws) for ws in sockets]
        self.work = work
        self.name = name
        self.stop_timeout = stop_timeout
        self.restarts = 0
        self._mask: set[int | signal.Signals] = set()

    def run(self) -> int:
        """Until a stop signal: 0, or 1 when a worker keeps dying at start-up."""
        self._mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            for worker in self.workers:
                self._start(worker)
            status = self._watch()
            self._stop()
            return status
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)

    def _watch(self) -> int:
        while True:
            due = [w.restart_at for w in self.workers if w.restart_at is not None]
            timeout = max(0.0, min(due) - time.monotonic()) if due else 3600.0
            info = signal.sigtimedwait(_SIGNALS, timeout)
            if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT):
                log.info("%s supervisor: signal %d, stopping the workers",
                         self.name, info.si_signo)
                return 0
            for worker, status in self._reap():
                if not self._died(worker, status):
                    return 1
            now = time.monotonic()
            for worker in self.workers:
                if worker.restart_at is not None and worker.restart_at <= now:
                    self._start(worker)
                    self.restarts += 1

    def _died(self, worker: _Worker, status: int) -> bool:
        """Log the death, plan the restart; False: give up (it keeps crashing)."""
        lived = time.monotonic() - worker.started
        worker.quick_deaths = worker.quick_deaths + 1 if lived < QUICK_DEATH else 0
        log.warning("%s %d (pid %d) %s after %.1f s; restarting it", self.name,
                    worker.sockets.index, worker.pid, _how(status), lived)
        worker.pid = 0
        if worker.quick_deaths >= MAX_QUICK_DEATHS:
            log.error("%s %d died %d times at start-up: giving up", self.name,
                      worker.sockets.index, worker.quick_deaths)
            return False
        worker.restart_at = time.monotonic() + (QUICK_DEATH if worker.quick_deaths else 0.0)
        return True

    def _start(self, worker: _Worker) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self._child(worker.sockets)
        worker.pid, worker.started, worker.restart_at = pid, time.monotonic(), None
        log.info("%s %d started (pid %d)", self.name, worker.sockets.index, pid)

    def _child(self, sockets: WorkerSockets) -> None:
        """In the forked worker: never returns into the supervisor's code."""
        status = 1
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)
            for other in self.workers:
                if other.sockets is not sockets:
                    other.sockets.close()  # this process's copies only
            status = self.work(sockets)
        except KeyboardInterrupt:
            status = 130
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)

    def _reap(self) -> list[tuple[_Worker, int]]:
        dead = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            dead += [(w, status) for w in self.workers if w.pid == pid]
        return dead

    def _stop(self) -> None:
        live = {w.pid: w for w in self.workers if w.pid}
        for pid in live:
            _kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        while live and time.monotonic() < deadline:
            signal.sigtimedwait({signal.SIGCHLD}, max(0.0, deadline - time.monotonic()))
            for worker, status in self._reap():
                live.pop(worker.pid, None)
                log.info("%s %d (pid %d) %s", self.name, worker.sockets.index,
                         worker.pid, _how(status))
                worker.pid = 0
        for pid in live:
            log.warning("%s (pid %d) still running after %.0f s: SIGKILL",
                        self.name, pid, self.stop_timeout)
            _kill(pid, signal.SIGKILL)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def _kill(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _how(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"
