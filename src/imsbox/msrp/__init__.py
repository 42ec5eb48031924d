"""MSRP: Message Session Relay Protocol (RFC 4975) with CEMA (RFC 6714).

Layers, bottom up:

* ``parser`` - sans-I/O incremental parser.  ``MsrpParser().feed(data)``
  returns events: ``MessageStart(message)``, ``BodyData(tid, data)``,
  ``MessageEnd(tid, flag)`` and ``BadMessage(tid, ...)`` (a framed message
  with a fault; answer 400).  Bodies stream; a ``ParseError`` means framing is
  lost and the connection must be closed.  ``parse(data)`` parses one
  complete message; ``bytes(msg)`` serializes.
* ``message`` / ``uri`` - ``MsrpRequest``, ``MsrpResponse``, ``ByteRange``,
  ``Status``, ``Flag``, ``MsrpUri`` (comparison per RFC 4975 section 6.1).
* ``session`` - sans-I/O cores.  ``SessionCore`` chunks outgoing messages,
  tracks transactions (``next_deadline()`` / ``on_timer(now)`` -> 408),
  reassembles incoming ones by Byte-Range into a ``Sink`` (``BufferSink``,
  ``FileSink``) and builds REPORTs.  ``ConnectionCore`` routes one byte stream
  to the sessions sharing it and answers 200/400/413/415/481/501/506.
* ``liveness`` - sans-I/O ``ConnectionTimers``: keep-alive empty SENDs, idle
  close and the incomplete-message deadline of a connection.
* ``endpoint`` - asyncio adapter.

Typical use::

    async with MsrpEndpoint("127.0.0.1", 0) as ep:        # ssl=ctx for msrps
        s = ep.create_session(remote_path=[peer_uri], setup="active")
        await s.start()            # active: connect + binding empty SEND
        await s.send_message("text/plain", b"hi", success_report=True)
        await s.send_message("image/jpeg", open(path, "rb"))   # streamed
        msg = await s.receive()    # or: async for msg in s; or s.on_message = cb
        s.sink_factory = lambda req: FileSink(open(dest, "w+b"))  # stream to file

``create_session(remote_path=(), *, setup, session_id, accept_types,
max_size, chunk_size=2048, transaction_timeout=30.0, cema_address)``;
``session.local_uri`` goes into the SDP ``a=path``; ``cema_address`` is the
(host, port) from the peer's SDP c/m-line when both sides offered
``a=msrp-cema``.  Sessions to the same remote authority share one connection.
``send_message`` raises ``MsrpStatusError`` (``.status``: 413, 415, 481 ...)
or ``TransactionTimeout`` (408).

``session.defer_success_reports = True``: complete messages are not confirmed
automatically; the application answers with ``session.send_report(message_id,
status, comment, byte_range)`` (a file receiver after its hash check, a relay
after the next hop's outcome). ``await session.wait_idle(timeout)`` before
closing a connection the peer still answers on (a reset would drop unread data).
"""

from .endpoint import MsrpConnection, MsrpEndpoint, MsrpSession, ReceivedMessage, SendResult, Setup
from .errors import (MsrpError, MsrpProtocolError, MsrpStatusError, MsrpUsageError, ParseError,
                     SessionClosed, TransactionTimeout, UriError)
from .message import REASON_PHRASES, ByteRange, Flag, MsrpRequest, MsrpResponse, Status
from .parser import BadMessage, BodyData, MessageEnd, MessageStart, MsrpParser, parse
from .session import (BufferSink, ByteRanges, ConnectionCore, FileSink, SessionCore,
                      SessionMatching, Sink)
from .uri import MsrpUri, parse_path

__all__ = [
    "BadMessage", "BodyData", "BufferSink", "ByteRange", "ByteRanges", "ConnectionCore",
    "FileSink", "Flag", "MessageEnd", "MessageStart", "MsrpConnection", "MsrpEndpoint",
    "MsrpError", "MsrpProtocolError", "MsrpParser", "MsrpRequest", "MsrpResponse", "MsrpSession",
    "MsrpStatusError", "MsrpUsageError", "MsrpUri", "ParseError", "REASON_PHRASES", "ReceivedMessage",
    "SendResult", "SessionClosed", "SessionCore", "SessionMatching", "Setup", "Sink",
    "Status", "TransactionTimeout", "UriError", "parse", "parse_path",
]
