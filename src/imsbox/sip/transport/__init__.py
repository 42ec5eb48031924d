"""SIP transport layer (RFC 3261 section 18): UDP, TCP and TLS over asyncio.

``TransportLayer(on_message, on_error=None, limits=Limits(), trace=None)``
listens, sends and routes responses (18.2.2); ``StreamFramer`` is the
sans-I/O Content-Length framer used on stream connections.
"""

from .base import TRANSPORTS, Destination, Flow
from .layer import (
    DEFAULT_PORTS, Limits, OnError, OnMessage, Trace, TransportLayer, add_received,
    reason_phrase, response_destination,
)
from .stream import FramingError, StreamConnection, StreamFramer
from .tls import client_context, ensure_self_signed, server_context
from .udp import UDP_MTU_LIMIT, should_use_tcp

__all__ = [
    "TRANSPORTS", "Destination", "Flow", "DEFAULT_PORTS", "Limits", "OnError", "OnMessage",
    "Trace", "TransportLayer", "add_received", "reason_phrase", "response_destination",
    "FramingError", "StreamConnection", "StreamFramer", "client_context",
    "ensure_self_signed", "server_context", "UDP_MTU_LIMIT", "should_use_tcp",
]
