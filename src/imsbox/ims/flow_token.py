"""RFC 5626 5.2 flow tokens: the P-CSCF's Path names the UE's flow itself, signed.

The P-CSCF puts a token in the user part of the Path URI it adds to a
REGISTER (``sip:term.TOKEN@PCSCF:PORT;lr;ob``). The registrar hands the Path
back as the Route of every request for that contact, so the request names
the exact flow to use (transport, the UE's address and port, our local
socket) and the P-CSCF needs no lookup, in memory or in the store, to find
it: the Path's host already brings the request to the instance that holds
the UE's connection. The key is the store's shared secret ``flow-token``,
the same for every P-CSCF of the network, so a token survives a restart and
any instance can tell a forged one.

A token is ``base64url(JSON [transport, remote host, remote port, local
host, local port, outbound]) "." MAC`` (HMAC-SHA-256, 128 bits), both parts
SIP user-part characters. ``outbound``: the UE asked for RFC 5626 outbound
(a ``reg-id`` on its Contact, or ``outbound`` in Supported / Require).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..sip.transport.base import TRANSPORTS, Flow
from .signed import Sealer

__all__ = ["FlowToken", "FlowTokenSigner", "TOKEN_PREFIX"]

TOKEN_PREFIX = "term."   # user part: our terminating role, then the token


@dataclass(slots=True, frozen=True)
class FlowToken:
    """What a token says: the UE's flow as the P-CSCF saw its REGISTER."""

    transport: str
    remote: tuple[str, int]
    local: tuple[str, int]
    outbound: bool

    @property
    def flow(self) -> Flow:
        return Flow(self.transport, self.local, self.remote)

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"


class FlowTokenSigner:
    """Issues and opens flow tokens under one key."""

    def __init__(self, secret: bytes) -> None:
        self._sealer = Sealer(secret, b"imsbox flow")

    def issue(self, flow: Flow, outbound: bool) -> str:
        return self._sealer.seal([flow.transport, flow.remote[0], flow.remote[1],
                                  flow.local[0], flow.local[1], int(outbound)])

    def open(self, token: str) -> FlowToken | None:
        """The flow of a token this key signed; None for anything else."""
        fields = self._sealer.open(token)
        if fields is None:
            return None
        try:
            transport, rhost, rport, lhost, lport, outbound = fields
            found = FlowToken(str(transport), (str(rhost), int(rport)),
                              (str(lhost), int(lport)), bool(outbound))
        except (ValueError, TypeError):
            return None
        return found if found.transport in TRANSPORTS else None
