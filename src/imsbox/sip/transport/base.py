"""Addresses shared by the transport, transaction and endpoint layers."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Destination", "Flow", "TRANSPORTS"]

TRANSPORTS = ("udp", "tcp", "tls")


@dataclass(slots=True, frozen=True)
class Destination:
    """Where to send a message: transport, IP literal (IPv6 unbracketed), port."""

    transport: str
    host: str
    port: int

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


@dataclass(slots=True, frozen=True)
class Flow:
    """Where a message came from (and the connection it came on, if any)."""

    transport: str
    local: tuple[str, int]
    remote: tuple[str, int]
    conn_id: int | None = None

    @property
    def destination(self) -> Destination:
        return Destination(self.transport, self.remote[0], self.remote[1])

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"
