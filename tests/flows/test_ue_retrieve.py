"""RcsClient deferred-message retrieval (seed 003) through the real core on loopback.

Bob registers the cpm.deferred ICSI (``deferred_retrieval=True``): the messaging
AS keeps what alice sent while he was offline instead of pushing it, until bob's
``retrieve_deferred()`` INVITEs the CPMDeferredMsgMgmtURI and takes them over MSRP.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from helpers import client, network_with
from test_ue_client import WAIT, run, ue_config

from imsbox.rcs.cpm import ICSI_DEFERRED, escape_icsi
from imsbox.ue.client import MessageReceived, MessageStatus

pytestmark = pytest.mark.timeout(40)


def test_offline_messages_are_retrieved_not_pushed(tmp_path: Path) -> None:
    config = ue_config(tmp_path, via_as=True)
    alice, bob = client(config, "alice"), client(config, "bob", deferred_retrieval=True)
    texts = [f"while you were out {n}" for n in range(3)]

    async def scenario() -> None:
        async with network_with(config, alice) as net:
            mids = [await alice.send_message("bob", text) for text in texts]
            assert all(alice.deferred(mid) for mid in mids)
            await bob.start()
            try:
                assert net.store is not None
                (binding,) = await net.store.registrations.bindings(bob.aor)
                assert escape_icsi(ICSI_DEFERRED) in binding.params
                (theirs,) = await net.store.registrations.bindings(alice.aor)
                assert escape_icsi(ICSI_DEFERRED) not in theirs.params
                with pytest.raises(asyncio.TimeoutError):  # nothing pushed
                    await bob.wait_event(MessageReceived, 1.0)

                got = await bob.retrieve_deferred()
                assert [m.text for m in got] == texts  # oldest first
                assert [m.message_id for m in got] == mids
                assert all(m.sender == alice.aor and m.mode == "deferred" for m in got)
                events = [e for e in bob.pending_events() if isinstance(e, MessageReceived)]
                assert events == got
                for mid in mids:  # bob's delivery IMDNs reach alice
                    assert await alice.wait_status(mid, timeout=WAIT) is \
                        MessageStatus.DELIVERED

                assert await bob.retrieve_deferred() == []  # taken: the store is empty
            finally:
                await bob.close()
    run(scenario)
