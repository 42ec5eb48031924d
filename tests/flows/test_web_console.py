"""The web console (``Network(web=...)`` as ``imsbox serve --web`` runs it) in real
headless Chromium (Debian ``chromium``, driven from its command line: ``--dump-dom``
after the page's scripts ran, ``--screenshot``, console messages on stderr).

alice and bob register and chat through the network; the console's page shows
both registrations and the live chat session (confirmed, with a link), the
session page shows its ladder while it runs; after bob leaves, a message for him
is in the deferred table. A conference the store holds is listed with its
participants. No console errors. Beyond the browser: the login (HTTP Basic) and
the read-only rule over plain HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import re
import shutil
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest

from imsbox.console import ConsoleError, WebConsole
from imsbox.serve import Network
from imsbox.store import Conference, ConferenceKind, Participant, ParticipantState
from imsbox.testing import FAST_TIMERS
from imsbox.ue.client import ChatStarted

from helpers import alice_and_bob, client

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(shutil.which("chromium") is None,
                                 reason="needs Debian's chromium (apt-get install chromium)")]
WAIT = 5.0


async def chromium(tmp_path: Path, url: str, *, screenshot: Path | None = None
                   ) -> tuple[str, list[str]]:
    """The DOM after 2 s of the page's (virtual) time, and its console messages."""
    args = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            f"--user-data-dir={tmp_path / 'chromium'}", "--enable-logging=stderr", "--v=0",
            "--virtual-time-budget=2500", "--window-size=1280,900"]
    args += [f"--screenshot={screenshot}"] if screenshot is not None else ["--dump-dom"]
    proc = await asyncio.create_subprocess_exec(*args, url, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    console = [line for line in err.decode("utf-8", "replace").splitlines()
               if ":CONSOLE(" in line or "Uncaught" in line]
    return out.decode("utf-8", "replace"), console


class Tables(HTMLParser):
    """The rows of each table by id, and every link."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.links: list[str] = []
        self._table = ""
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "table":
            self._table = values.get("id") or ""
            self.tables[self._table] = []
        elif tag == "tr":
            self._row = []
        elif tag == "td":
            self._cell = []
        elif tag == "a" and values.get("href"):
            self.links.append(str(values["href"]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row:
            self.tables[self._table].append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def tables(dom: str) -> Tables:
    parsed = Tables()
    parsed.feed(dom)
    return parsed


def test_console_in_headless_chromium(tmp_path: Path) -> None:
    config = alice_and_bob(tmp_path)
    shots = tmp_path / "console.png"

    async def main() -> None:
        async with Network(config, timers=FAST_TIMERS, feed=True,
                           web=("127.0.0.1", 0)) as net:
            assert net.console is not None and net.store is not None
            url = net.console.url
            assert f"web console on {url}" in net.listening_lines()
            await net.store.conferences.create(Conference(
                "sip:conf-7@ims.test", "sip:alice@ims.test", ConferenceKind.AD_HOC, "Lunch",
                participants=(Participant("sip:alice@ims.test", ParticipantState.CONNECTED),
                              Participant("sip:bob@ims.test", ParticipantState.PENDING))))
            alice, bob = client(config, "alice"), client(config, "bob")
            await alice.start()
            await bob.start()
            chat = await alice.open_chat("bob")
            assert isinstance(await bob.wait_event(ChatStarted, WAIT), ChatStarted)
            await chat.send("Hello")

            dom, console = await chromium(tmp_path, url)
            assert console == []
            page = tables(dom)
            aors = {row[0] for row in page.tables["registrations"]}
            assert aors == {"sip:alice@ims.test", "sip:bob@ims.test"}
            sessions = page.tables["sessions"]
            assert sessions and {row[3] for row in sessions} == {"confirmed"}
            assert all(row[1:3] == ["alice", "bob"] for row in sessions)
            (conference,) = page.tables["conferences"]
            assert conference[:3] == ["sip:conf-7@ims.test", "Lunch", "ad-hoc"]
            assert "sip:bob@ims.test (pending)" in conference[3]
            assert re.search(r"\d+ messages on the trace feed", dom)
            link = next(h for h in page.links if h.startswith("/session?call_id="))

            session, console = await chromium(tmp_path, url + link.lstrip("/"))
            assert console == []
            assert "<svg" in session and "INVITE sdp message" in session
            assert re.search(r"SEND 1-\d+/\d+ cpim (&#x27;|')Hello", session), session[-2000:]
            await chromium(tmp_path, url, screenshot=shots)

            await chat.close()
            await bob.close()  # offline: the next message is deferred for him
            await alice.send_message("bob", "while you were out")
            dom, console = await chromium(tmp_path, url)
            assert console == []
            page = tables(dom)
            assert {row[0] for row in page.tables["registrations"]} == {"sip:alice@ims.test"}
            assert page.tables["deferred"] == [["sip:bob@ims.test", "1"]]
            assert {row[3] for row in page.tables["sessions"]} == {"ended"}
            await alice.close()

    asyncio.run(asyncio.wait_for(main(), 100))
    assert shots.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def get(url: str, auth: str | None = None, method: str = "GET") -> tuple[int, str]:
    request = urllib.request.Request(url, method=method)
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_console_login_and_read_only(tmp_path: Path) -> None:
    config = alice_and_bob(tmp_path)
    with pytest.raises(ConsoleError, match="needs a login"):
        WebConsole(None, None, "192.0.2.1", 8080)  # type: ignore[arg-type]

    async def main() -> None:
        async with Network(config, timers=FAST_TIMERS, feed=True, web=("127.0.0.1", 0),
                           web_password="s3cret") as net:
            assert net.console is not None
            url = net.console.url
            loop = asyncio.get_running_loop()
            status, _ = await loop.run_in_executor(None, get, url)
            assert status == 401
            status, _ = await loop.run_in_executor(None, get, url, "imsbox:wrong")
            assert status == 401
            status, body = await loop.run_in_executor(None, get, url + "api/state",
                                                      "imsbox:s3cret")
            assert status == 200 and '"registrations"' in body
            status, body = await loop.run_in_executor(
                None, lambda: get(url + "api/state", "imsbox:s3cret", "POST"))
            assert status == 405 and "read-only" in body
            status, _ = await loop.run_in_executor(None, get, url + "nothing", "imsbox:s3cret")
            assert status == 404

    asyncio.run(asyncio.wait_for(main(), 60))


def test_console_sees_every_feed_of_the_data_dir(tmp_path: Path) -> None:
    """The console in the core's process (no P-CSCF) also reads the feed of the
    P-CSCF's process (started after it: found on a rescan)."""
    config = alice_and_bob(tmp_path)
    rest = ("icscf", "scscf", "as", "conference")

    async def main() -> None:
        async with Network(config, timers=FAST_TIMERS, feed=True, roles=rest,
                           web=("127.0.0.1", 0)) as core:
            assert core.console is not None and core.trace_feed is not None
            assert core.console.attached == {core.trace_feed.path}
            async with Network(config, timers=FAST_TIMERS, feed=True,
                               roles=("pcscf",)) as edge:
                assert edge.trace_feed is not None
                async with asyncio.timeout(10):
                    while edge.trace_feed.path not in core.console.attached:
                        await asyncio.sleep(0.1)
                alice = client(config, "alice")
                await alice.start()
                await alice.close()
                await asyncio.sleep(0.3)
            ladder = core.console.ladder
            nodes = {node for arrow in ladder.arrows for node in arrow.nodes}
            assert {"pcscf", "icscf", "scscf"} <= nodes
            ladder.resolve()
            assert ("alice's UE", "P-CSCF") in {(a.src_name, a.dst_name) for a in ladder.arrows}

    asyncio.run(asyncio.wait_for(main(), 60))
