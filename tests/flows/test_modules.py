"""Request dispatch by module on a SipEndpoint, over real loopback UDP."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection

import pytest
from helpers import settle

from imsbox.sip import Request, Response, new_tag, parse
from imsbox.sip.endpoint import HandlerModule, Priority, ServerContext, SipEndpoint
from imsbox.sip.transaction import TimerValues
from imsbox.sip.transport import Destination

pytestmark = pytest.mark.timeout(30)
HOST = "127.0.0.1"
FAST = TimerValues(t1=0.02, t2=0.1, t4=0.1)


class Recorder:
    """A module that notes each offer and takes the methods in ``takes``."""

    def __init__(self, name: str, priority: int, offers: list[str],
                 takes: Collection[str] = (), methods: Collection[str] = (),
                 status: int = 200) -> None:
        self.name, self.priority, self.methods = name, priority, tuple(methods)
        self.offers, self.takes, self.status = offers, set(takes), status

    def on_request(self, ctx: ServerContext) -> bool:
        self.offers.append(self.name)
        if ctx.request.method not in self.takes:
            return False
        if ctx.txn is not None:
            response = Response.for_request(ctx.request, self.status, to_tag=new_tag())
            response.add_header("X-Module", self.name)
            ctx.respond(response)
        return True


class Failing:
    name, priority, methods = "failing", Priority.SERVICE, ("MESSAGE",)

    def on_request(self, ctx: ServerContext) -> bool:
        raise RuntimeError("a bug in a module")


def request(method: str, uri: str) -> Request:
    return Request(method, uri, [
        ("From", f"<sip:alice@example.com>;tag={new_tag()}"), ("To", "<sip:bob@example.com>"),
        ("Call-ID", new_tag()), ("CSeq", f"1 {method}")])


Scenario = Callable[[SipEndpoint, SipEndpoint, str, list[bytes]], Awaitable[None]]


def run(scenario: Scenario) -> None:
    """``scenario(client, server, server_uri, what the server sent)``."""
    async def main() -> None:
        client, server = SipEndpoint(FAST), SipEndpoint(FAST)
        sent: list[bytes] = []
        try:
            await client.listen("udp", HOST, 0)
            _, port = await server.listen("udp", HOST, 0)
            server.transport.trace = lambda d, data, flow: sent.append(data) if d == "out" else None
            await asyncio.wait_for(scenario(client, server, f"sip:bob@{HOST}:{port}", sent), 10)
        finally:
            await client.close()
            await server.close()
    asyncio.run(main())


def test_modules_are_offered_by_priority_and_the_first_taker_wins() -> None:
    async def scenario(client: SipEndpoint, server: SipEndpoint, uri: str,
                       sent: list[bytes]) -> None:
        offers: list[str] = []
        # registered out of order: the priority decides, ties by registration
        server.add_module(Recorder("proxy", Priority.PROXY, offers, takes={"MESSAGE"}))
        server.add_module(Recorder("service-1", Priority.SERVICE, offers, takes={"MESSAGE"}))
        server.add_module(Recorder("dialogs", Priority.DIALOG, offers))
        server.add_module(Recorder("service-2", Priority.SERVICE, offers, takes={"MESSAGE"}))
        server.add_module(Recorder("events", Priority.EVENT, offers, takes={"SUBSCRIBE"}))
        assert [m.name for m in server.modules] == [
            "dialogs", "events", "service-1", "service-2", "proxy"]
        response = await client.request(request("MESSAGE", uri)).final()
        assert response.status == 200 and response.header("X-Module") == "service-1"
        assert offers == ["dialogs", "events", "service-1"]
        offers.clear()
        response = await client.request(request("SUBSCRIBE", uri)).final()
        assert response.header("X-Module") == "events" and offers == ["dialogs", "events"]
    run(scenario)


def test_removing_a_module_hands_its_requests_to_the_next() -> None:
    async def scenario(client: SipEndpoint, server: SipEndpoint, uri: str,
                       sent: list[bytes]) -> None:
        offers: list[str] = []
        first = Recorder("first", Priority.SERVICE, offers, takes={"OPTIONS"})
        last = Recorder("last", Priority.PROXY, offers, takes={"OPTIONS"})
        server.add_module(first)
        server.add_module(last)
        with pytest.raises(ValueError):
            server.add_module(first)
        assert (await client.request(request("OPTIONS", uri)).final()).header(
            "X-Module") == "first"
        server.remove_module(first)
        with pytest.raises(ValueError):
            server.remove_module(first)
        assert (await client.request(request("OPTIONS", uri)).final()).header(
            "X-Module") == "last"
        server.remove_module(last)
        assert server.modules == ()
    run(scenario)


def test_nobody_takes_it_405_with_allow_for_known_methods_501_for_the_rest() -> None:
    async def scenario(client: SipEndpoint, server: SipEndpoint, uri: str,
                       sent: list[bytes]) -> None:
        offers: list[str] = []
        server.add_module(Recorder("ua", Priority.APPLICATION, offers,
                                   methods=("INVITE", "ACK", "BYE")))
        server.add_module(Recorder("events", Priority.EVENT, offers,
                                   methods=("SUBSCRIBE", "NOTIFY", "bye")))
        message = await client.request(request("MESSAGE", uri)).final()
        assert message.status == 405 and message.to.tag
        assert message.tokens("Allow") == ["SUBSCRIBE", "NOTIFY", "BYE", "INVITE", "ACK"]
        unknown = await client.request(request("FOO", uri)).final()
        assert unknown.status == 501 and unknown.headers.get("Allow") is None
        server.add_module(Recorder("foo", Priority.SERVICE, offers, methods=("FOO",)))
        known = await client.request(request("FOO", uri)).final()
        assert known.status == 405 and "FOO" in known.tokens("Allow")
    run(scenario)


def test_an_ack_nobody_takes_is_never_answered() -> None:
    async def scenario(client: SipEndpoint, server: SipEndpoint, uri: str,
                       sent: list[bytes]) -> None:
        offers: list[str] = []
        server.add_module(Recorder("ua", Priority.APPLICATION, offers, methods=("INVITE",)))
        ack = request("ACK", uri)
        ack.push_header("Via", f"SIP/2.0/UDP {HOST}:{client.listening['udp'][1]};branch=z9hG4bKack1")
        host, port = server.listening["udp"]
        await client.send_stateless(ack, Destination("udp", host, port))
        await settle(lambda: offers == ["ua"])
        response = await client.request(request("MESSAGE", uri)).final()  # the next one is
        assert response.status == 405
        assert [parse(data).status for data in sent] == [405]  # type: ignore[union-attr]
    run(scenario)


def test_an_exception_in_a_module_becomes_500_sync_or_async() -> None:
    async def scenario(client: SipEndpoint, server: SipEndpoint, uri: str,
                       sent: list[bytes]) -> None:
        offers: list[str] = []
        server.add_module(Failing())
        server.add_module(Recorder("later", Priority.PROXY, offers, takes={"MESSAGE", "INFO"}))

        async def broken(ctx: ServerContext) -> None:
            await asyncio.sleep(0)
            raise ValueError("async work failed")
        server.add_module(HandlerModule(broken, "async", Priority.APPLICATION))
        response = await client.request(request("MESSAGE", uri)).final()
        assert response.status == 500 and offers == []   # nobody after a failing module
        server.remove_module(server.modules[0])
        response = await client.request(request("INFO", uri)).final()
        assert response.status == 500 and offers == []   # the async module took it
    run(scenario)
