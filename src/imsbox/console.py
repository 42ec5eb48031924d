"""The web console of ``imsbox serve --web HOST:PORT``: read-only, live.

One page (``/``) with the registrations, the sessions (INVITE dialogs seen on
the trace feed), the conferences with their participants and the deferred
queue, refreshed every second from ``/api/state``; ``/session?call_id=X``
shows one session's ladder (SVG) and messages, refreshed while it runs from
``/api/ladder``. Nothing on the page changes the network.

It reads the store (registrations, conferences, deferred messages) and
attaches like ``imsbox trace`` does to every trace feed of the data directory
(looking for new ones every few seconds: ``serve --role`` processes started
later), so with ``--web`` each feed has one subscriber (see docs/trace.md for
the cost).
Bound to a loopback address it needs no login; bound elsewhere it asks for
HTTP Basic credentials (user ``imsbox``, the password given), and refuses to
start without a password.

A small HTTP/1.1 server on asyncio streams: GET only, one request per
connection, bounded request heads; no external files or URLs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import html
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .store import Store
from .trace.feed import attach
from .trace.html import render_group_fragment
from .trace.ladder import Filter, Group, Ladder

__all__ = ["ConsoleError", "WebConsole", "is_loopback"]

log = logging.getLogger(__name__)

MAX_HEAD = 8192
USER = "imsbox"
RESCAN = 3.0  # seconds between looks for new trace feeds


class ConsoleError(Exception):
    """The console cannot start as asked; the message says what to fix."""


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


class WebConsole:
    """Serves the console of one serve process on ``host:port``."""

    def __init__(self, store: Store, feeds: Callable[[], list[Path]] | None,
                 host: str = "127.0.0.1", port: int = 8080,
                 password: str | None = None) -> None:
        """``feeds`` lists the trace feed sockets to attach to (called again
        every ``RESCAN`` seconds); None: no sessions, no ladders."""
        if not is_loopback(host) and not password:
            raise ConsoleError(f"--web {host}: a console bound beyond loopback needs a login; "
                               "set IMSBOX_WEB_PASSWORD (user 'imsbox') or bind 127.0.0.1")
        self.store = store
        self.feeds = feeds
        self.host, self.port = host, port
        self.password = password
        self.ladder = Ladder()
        self.attached: set[Path] = set()
        self._server: asyncio.base_events.Server | None = None
        self._pump: asyncio.Task[None] | None = None
        self._readers: set[asyncio.Task[None]] = set()

    async def start(self) -> WebConsole:
        if self.feeds is not None:
            await self._attach_new()
            self._pump = asyncio.create_task(self._rescan())
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in [self._pump, *self._readers]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._server.wait_closed()

    async def _rescan(self) -> None:
        while True:
            await asyncio.sleep(RESCAN)
            await self._attach_new()

    async def _attach_new(self) -> None:
        assert self.feeds is not None
        for path in self.feeds():
            if path in self.attached:
                continue
            attached, events = await attach([path])
            if attached:
                self.attached.add(path)
                task = asyncio.create_task(self._read(path, events))
                self._readers.add(task)
                task.add_done_callback(self._readers.discard)

    async def _read(self, path: Path, events: Any) -> None:
        try:
            async for event in events:
                self.ladder.feed(event)
        finally:
            self.attached.discard(path)  # that process stopped (or restarts)
            await events.aclose()

    # -- HTTP -------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
            status, ctype, body, extra = await self._respond(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ConnectionError):
            writer.close()
            return
        except Exception:  # one bad request must not take the console down
            log.exception("web console request failed")
            status, ctype, body, extra = 500, "text/plain", b"internal error\n", {}
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
                 f"Content-Type: {ctype}", f"Content-Length: {len(body)}",
                 "Connection: close", "Cache-Control: no-store",
                 "X-Content-Type-Options: nosniff",
                 "Content-Security-Policy: default-src 'self'; style-src 'self' 'unsafe-inline';"
                 " script-src 'self' 'unsafe-inline'; img-src 'self' data:",
                 *(f"{k}: {v}" for k, v in extra.items())]
        with contextlib.suppress(ConnectionError):
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
            await writer.drain()
        writer.close()

    async def _respond(self, head: bytes) -> tuple[int, str, bytes, dict[str, str]]:
        if len(head) > MAX_HEAD:
            return 431, "text/plain", b"request head too large\n", {}
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return 400, "text/plain", b"bad request line\n", {}
        method, target, _ = parts
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (h.partition(":") for h in header_lines if h)}
        if not self._authorised(headers.get("authorization", "")):
            return 401, "text/plain", b"login required\n", {
                "WWW-Authenticate": 'Basic realm="imsbox console", charset="UTF-8"'}
        if method != "GET":
            return 405, "text/plain", b"the console is read-only: GET only\n", {"Allow": "GET"}
        url = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        route = _ROUTES.get(url.path)
        if route is None:
            return 404, "text/plain", b"not found\n", {}
        ctype, body = await route(self, query)
        return 200, ctype, body, {}

    def _authorised(self, value: str) -> bool:
        if not self.password:
            return True
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, given = base64.b64decode(token, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return user == USER and hmac.compare_digest(given.encode(), self.password.encode())

    # -- pages and data -------------------------------------------------------------------
    async def _index(self, _: dict[str, str]) -> tuple[str, bytes]:
        return "text/html; charset=utf-8", _INDEX.encode()

    async def _session_page(self, query: dict[str, str]) -> tuple[str, bytes]:
        call_id = html.escape(query.get("call_id", ""))
        page = _SESSION.replace("{call_id}", call_id)
        return "text/html; charset=utf-8", page.encode()

    async def _favicon(self, _: dict[str, str]) -> tuple[str, bytes]:
        return "image/svg+xml", b'<svg xmlns="http://www.w3.org/2000/svg"/>'

    async def _state(self, _: dict[str, str]) -> tuple[str, bytes]:
        state = {"registrations": await self._registrations(),
                 "sessions": self._sessions(), "conferences": await self._conferences(),
                 "deferred": await self._deferred(),
                 "trace": {"messages": len(self.ladder.arrows),
                           "dropped": self.ladder.dropped}}
        return "application/json", json.dumps(state).encode()

    async def _ladder(self, query: dict[str, str]) -> tuple[str, bytes]:
        call_id = query.get("call_id", "")
        groups = self.ladder.groups(Filter(call_ids=(call_id,))) if call_id else []
        group = next((g for g in groups if g.key == call_id), None)
        body = render_group_fragment(self.ladder, group) if group is not None else \
            "<p>No message of this session on the trace feed (yet).</p>"
        return "text/html; charset=utf-8", body.encode()

    async def _registrations(self) -> list[dict[str, Any]]:
        now = time.time()
        out = []
        for aor in sorted(await self.store.registrations.registered_aors()):
            for binding in await self.store.registrations.bindings(aor):
                out.append({"aor": aor, "contact": binding.contact,
                            "expires_in": max(0, round(binding.expires_at - now))})
        return out

    def _sessions(self) -> list[dict[str, Any]]:
        out = []
        for group in self.ladder.groups():
            first = next((a for a in group.arrows if a.proto == "sip"), None)
            if first is None or first.summary.method != "INVITE" or not first.summary.is_request:
                continue
            out.append({"call_id": group.key, "from": first.summary.from_user,
                        "to": first.summary.to_user, "state": _session_state(group),
                        "messages": len(group.arrows),
                        "msrp": sum(1 for a in group.arrows if a.proto == "msrp")})
        return out[-100:]

    async def _conferences(self) -> list[dict[str, Any]]:
        return [{"uri": c.uri, "subject": c.subject, "kind": c.kind.value,
                 "participants": [{"uri": p.uri, "state": p.state.value}
                                  for p in c.participants]}
                for c in await self.store.conferences.conferences()]

    async def _deferred(self) -> list[dict[str, Any]]:
        out = []
        for recipient in await self.store.messages.deferred_recipients():
            items = await self.store.messages.deferred(recipient)
            out.append({"recipient": recipient, "count": len(items),
                        "oldest": min((i.created_at for i in items), default=0.0)})
        return out


def _session_state(group: Group) -> str:
    labels = [a.label for a in group.arrows if a.proto == "sip"]
    if any(label.startswith("200 OK (BYE") for label in labels):
        return "ended"
    if any(label.startswith("200 OK (INVITE") for label in labels):
        return "confirmed"
    if any(label[:1] in "3456" and "(INVITE" in label for label in labels):
        return "failed"
    return "early"


Route = Callable[[WebConsole, dict[str, str]], Awaitable[tuple[str, bytes]]]
_ROUTES: dict[str, Route] = {
    "/": WebConsole._index, "/session": WebConsole._session_page,
    "/api/state": WebConsole._state, "/api/ladder": WebConsole._ladder,
    "/favicon.ico": WebConsole._favicon,
}
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 431: "Request Header Fields Too Large",
            500: "Internal Server Error"}

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.2em;color:#222}
table{border-collapse:collapse;margin-bottom:1.5em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;font-size:.92em}
th{background:#f0f0f0} h2{font-size:1.05em;margin:1.2em 0 .4em}
.meta{color:#666;font-size:.9em}
svg text{font-family:ui-monospace,monospace;font-size:12px}
section.msg pre{white-space:pre-wrap;background:#f6f6f6;padding:.5em;max-height:24em;overflow:auto}
"""

_INDEX = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>imsbox console</title><link rel="icon" href="/favicon.ico"><style>""" + _STYLE + """</style>
</head><body><h1>imsbox console</h1><p class="meta" id="status">loading...</p>
<h2>Registrations</h2><table id="registrations"><thead><tr><th>AOR</th><th>Contact</th>
<th>expires in (s)</th></tr></thead><tbody></tbody></table>
<h2>Sessions</h2><table id="sessions"><thead><tr><th>Call-ID</th><th>from</th><th>to</th>
<th>state</th><th>messages</th><th>MSRP</th></tr></thead><tbody></tbody></table>
<h2>Conferences</h2><table id="conferences"><thead><tr><th>URI</th><th>subject</th>
<th>kind</th><th>participants</th></tr></thead><tbody></tbody></table>
<h2>Deferred messages</h2><table id="deferred"><thead><tr><th>recipient</th><th>messages</th>
</tr></thead><tbody></tbody></table>
<script>
"use strict";
function cell(text, href) {
  const td = document.createElement("td");
  if (href) { const a = document.createElement("a"); a.href = href; a.textContent = text;
              td.appendChild(a); } else { td.textContent = text; }
  return td;
}
function fill(id, rows) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren(...rows.map(cells => {
    const tr = document.createElement("tr"); cells.forEach(c => tr.appendChild(c)); return tr;
  }));
}
async function refresh() {
  try {
    const r = await fetch("/api/state", {cache: "no-store"});
    const s = await r.json();
    fill("registrations", s.registrations.map(x => [cell(x.aor), cell(x.contact),
                                                     cell(String(x.expires_in))]));
    fill("sessions", s.sessions.map(x => [
      cell(x.call_id, "/session?call_id=" + encodeURIComponent(x.call_id)), cell(x.from),
      cell(x.to), cell(x.state), cell(String(x.messages)), cell(String(x.msrp))]));
    fill("conferences", s.conferences.map(x => [cell(x.uri), cell(x.subject), cell(x.kind),
      cell(x.participants.map(p => p.uri + " (" + p.state + ")").join(", "))]));
    fill("deferred", s.deferred.map(x => [cell(x.recipient), cell(String(x.count))]));
    document.getElementById("status").textContent = s.trace.messages +
      " messages on the trace feed" + (s.trace.dropped ? ", " + s.trace.dropped + " dropped" : "") +
      "; updated " + new Date().toLocaleTimeString();
  } catch (e) {
    document.getElementById("status").textContent = "network not reachable: " + e;
  }
}
refresh(); setInterval(refresh, 1000);
</script></body></html>
"""

_SESSION = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>imsbox session {call_id}</title><link rel="icon" href="/favicon.ico">
<style>""" + _STYLE + """</style></head><body>
<p><a href="/">console</a></p><h1>Session <code id="call-id">{call_id}</code></h1>
<div id="ladder"><p>loading...</p></div>
<script>
"use strict";
async function refresh() {
  const id = document.getElementById("call-id").textContent;
  const r = await fetch("/api/ladder?call_id=" + encodeURIComponent(id), {cache: "no-store"});
  document.getElementById("ladder").innerHTML = await r.text();
}
refresh(); setInterval(refresh, 1000);
</script></body></html>
"""
