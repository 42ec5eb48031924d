"""``imsbox serve``'s registry of node factories: a new AS plugs in with one factory.

The AS here is a small real node (a SipEndpoint answering OPTIONS on the
``[conference_as]`` address); the Network starts it beside the core, lists it
in the listening lines, and runs it alone by its role, all on loopback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from imsbox.config import Config
from imsbox.serve import (
    HSS_ROLE,
    Network,
    NodeContext,
    NodeFactory,
    NodeRegistry,
    ServeError,
    default_registry,
)
from imsbox.sip.endpoint import HandlerModule, ServerContext, SipEndpoint
from imsbox.sip.message import Request, Response, new_tag
from imsbox.testing import FAST_TIMERS, write_loopback_config

pytestmark = pytest.mark.timeout(30)


class OptionsAs:
    """An AS that answers OPTIONS 200 on its configured address (UDP)."""

    def __init__(self, ctx: NodeContext) -> None:
        self.node = ctx.config.conference_as
        self.hss = ctx.hss
        self.endpoint = SipEndpoint(ctx.timers, modules=[HandlerModule(self._on_request, "options")])

    def _on_request(self, ctx: ServerContext) -> None:
        ctx.respond(Response.for_request(ctx.request, 200, to_tag=new_tag()))

    async def start(self) -> None:
        await self.endpoint.listen("udp", self.node.host, self.node.port)

    async def close(self) -> None:
        await self.endpoint.close()


def with_conference() -> NodeRegistry:
    """The default registry with a stand-in in place of the real conference AS."""
    return NodeRegistry(NodeFactory("conference", "conference_as", OptionsAs)
                        if f.role == "conference" else f for f in default_registry())


def options(config: Config) -> Request:
    node = config.conference_as
    target = f"sip:focus@{node.host}:{node.port}"
    return Request("OPTIONS", target, [
        ("From", f"<sip:alice@{config.domain}>;tag={new_tag()}"), ("To", f"<{target}>"),
        ("Call-ID", new_tag()), ("CSeq", "1 OPTIONS")])


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 20))


def test_registered_as_runs_beside_the_core(tmp_path: Path) -> None:
    _, config = write_loopback_config(tmp_path)

    async def scenario() -> None:
        async with Network(config, timers=FAST_TIMERS, registry=with_conference()) as net:
            lines = net.listening_lines()
            node = config.conference_as
            assert f"conference_as listening on udp {node.host}:{node.port}" in lines
            assert any(line.startswith("telephony_as listening on ") for line in lines)
            assert lines[-1].startswith("media_server listening on ")
            assert [line.split()[0] for line in lines[:2]] == ["pcscf", "pcscf"]
            assert set(net.nodes) == {"pcscf", "icscf", "scscf", "as", "conference", "telephony",
                                      "media"}
            assert isinstance(net.nodes["conference"], OptionsAs)
            assert net.nodes["conference"].hss is None      # it did not ask for the HSS
            client = SipEndpoint(FAST_TIMERS)
            await client.listen("udp", node.host, 0)
            try:
                assert (await client.request(options(config)).final()).status == 200
            finally:
                await client.close()
        assert net.nodes == {}

    run(scenario)


def test_registered_as_runs_alone_by_its_role(tmp_path: Path) -> None:
    _, config = write_loopback_config(tmp_path)

    async def scenario() -> None:
        async with Network(config, roles=("conference",), timers=FAST_TIMERS,
                           registry=with_conference()) as net:
            assert list(net.nodes) == ["conference"] and net.hss is None
            assert [line.split()[0] for line in net.listening_lines()] == ["conference_as"]

    run(scenario)


def test_role_names_and_refusals() -> None:
    registry = with_conference()
    assert default_registry().role_choices() == ("pcscf", "icscf", "scscf", HSS_ROLE, "as",
                                                 "conference", "telephony", "media")
    assert registry.role_choices() == ("pcscf", "icscf", "scscf", HSS_ROLE, "as", "conference",
                                       "telephony", "media")
    with pytest.raises(ValueError, match="taken"):
        registry.register(NodeFactory("as", "messaging_as", OptionsAs))
    with pytest.raises(ValueError, match="taken"):
        registry.register(NodeFactory(HSS_ROLE, "hss", OptionsAs))
    # one name for the messaging AS: its section (listening lines, traces) works as a role
    assert default_registry().role_of("messaging_as") == "as"
    assert default_registry().role_of("as") == "as" and registry.role_of("bgcf") is None
    assert "messaging_as" in default_registry().names()
    assert "conference_as" in default_registry().names()


def test_unknown_role_lists_the_registered_ones(tmp_path: Path) -> None:
    _, config = write_loopback_config(tmp_path)

    async def scenario() -> None:
        with pytest.raises(ServeError,
                           match="use one of pcscf, icscf, scscf, hss, as, conference, telephony, media"):
            await Network(config, roles=("mgcf",), registry=with_conference()).start()
        with pytest.raises(ServeError, match="--role icscf and --role scscf"):
            await Network(config, roles=(HSS_ROLE,), registry=with_conference()).start()

    run(scenario)
