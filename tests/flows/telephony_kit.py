"""What the telephony AS flow tests share: four provisioned users, service data
written as ``imsbox service set`` writes it, calls with tones and their checks."""

from __future__ import annotations

import asyncio
from pathlib import Path

from imsbox.apps.history_info import HISTORY_INFO
from imsbox.apps.telephony_services import validate
from imsbox.config import Config, load_config
from imsbox.ims.provisioning import add_user
from imsbox.media import Recorder, ToneSource, tone_present
from imsbox.serve import Network
from imsbox.sip.ua.dialog_event import DIALOG_PACKAGE
from imsbox.sip.ua.events import EventPackageRegistry
from imsbox.sip.ua.refer import EventAgent, SubscriptionWatch
from imsbox.sip.ua.useragent import Origin
from imsbox.store import open_store
from imsbox.testing import TestUe
from imsbox.ue.call import VoiceCall
from imsbox.ue.client import RcsClient
from imsbox.ue.events import CallEnded, CallRinging, RcsEvent

from helpers import DOMAIN, alice_and_bob

WAIT = 6.0
TONES = {"alice": 440.0, "bob": 1000.0, "carol": 700.0, "dave": 1300.0}


def four_users(tmp_path: Path, extra: str = "") -> Config:
    """alice, bob (as in helpers) plus carol (+15550003) and dave (+15550004);
    ``extra`` is appended to imsbox.toml."""
    config = alice_and_bob(tmp_path)
    if extra:
        path = tmp_path / "imsbox.toml"
        path.write_text(path.read_text() + "\n" + extra + "\n")
        config = load_config(path)

    async def more() -> None:
        async with open_store(config.store_location) as store:
            await add_user(store, DOMAIN, "carol", "carol-secret", "+15550003")
            await add_user(store, DOMAIN, "dave", "dave-secret", "+15550004")
    asyncio.run(more())
    return config


async def set_service(net: Network, name: str, key: str, *values: str,
                      after: float | None = None) -> None:
    """What ``imsbox service set NAME KEY VALUE... [--after S]`` stores."""
    assert net.store is not None
    await net.store.service_data.put(f"sip:{name}@{DOMAIN}", key,
                                     validate(key, values, DOMAIN, after))


def plays(ue: RcsClient, name: str) -> Recorder:
    """``ue`` answers with its own tone and records what it hears."""
    recorder = Recorder()
    ue.call_service.source = lambda: ToneSource(TONES[name])
    ue.call_service.sink = lambda: recorder
    return recorder


async def place(caller: RcsClient, name: str, target: str) -> tuple[VoiceCall, Recorder]:
    call = await caller.call(target, tone=TONES[name])
    recorder = Recorder()
    call.rtp.sink = recorder
    return call, recorder


async def hear_each_other(a: Recorder, a_name: str, b: Recorder, b_name: str) -> None:
    """Both directions carry the other's tone and not one's own (1.5 s of audio)."""
    await asyncio.sleep(0.3)
    a.clear()
    b.clear()
    await asyncio.sleep(1.5)
    assert tone_present(a.pcm, TONES[b_name], min_windows=3), f"{a_name} does not hear {b_name}"
    assert not tone_present(a.pcm, TONES[a_name], min_windows=3)
    assert tone_present(b.pcm, TONES[a_name], min_windows=3), f"{b_name} does not hear {a_name}"
    assert not tone_present(b.pcm, TONES[b_name], min_windows=3)


def history(call: VoiceCall) -> list[str]:
    """The History-Info entries of the INVITE as this party got it."""
    values = call.call.request.headers.values(HISTORY_INFO)
    return [v.strip() for v in values]


def rang(events: list[RcsEvent], call_id: str) -> bool:
    return any(isinstance(e, CallRinging) and e.call_id == call_id for e in events)


async def ended(ue: RcsClient, call_id: str) -> str:
    """The reason of this call's end at ``ue``."""
    while True:
        event = await ue.wait_event(CallEnded, WAIT)
        if event.call_id == call_id:  # type: ignore[attr-defined]
            return event.reason  # type: ignore[attr-defined,no-any-return]


async def watch_dialogs(watcher: TestUe, target: str) -> tuple[EventAgent, SubscriptionWatch]:
    """A SUBSCRIBE to ``target``'s dialog events (RFC 4235) from ``watcher``, through its
    registration's route."""
    assert watcher.ua is not None and watcher.registration is not None
    agent = EventAgent(watcher.ua, EventPackageRegistry([DIALOG_PACKAGE]))
    origin = Origin(watcher.ua.local, watcher.ua.contact, tuple(watcher.registration.route()))
    return agent, agent.subscribe(target, "dialog", origin=origin, expires=600)
