"""The UE as a dialog event notifier (RFC 4235) for its own voice calls.

A SUBSCRIBE with ``Event: dialog`` to the UE's AOR is accepted (local policy:
anyone the core lets reach us may watch whether we are on the phone, which
is what automatic redial, RFC 5359 2.17, needs) and answered with full-state
``application/dialog-info+xml`` documents: one ``<dialog>`` per voice call
with its call-id, local-tag, remote-tag, direction (initiator / recipient)
and state (trying, early, confirmed), both identities and targets.  A call
that ended is listed once more as ``terminated`` (with the event: local-bye,
remote-bye, rejected, cancelled) in the next NOTIFY to each subscription
of the moment, so a watcher learns it is gone; later documents leave it out.

Every call_ringing, call_early_media, call_answered and call_ended sends each
dialog subscription a NOTIFY (versions per subscription, RFC 4235 4.1).
Other event packages to the UE are not served (489 / 405 as before).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..content import dialog_info as di
from ..sip.endpoint import Priority, ServerContext
from ..sip.headers import Event
from ..sip.ua.dialog import Dialog
from ..sip.ua.dialog_event import DIALOG_PACKAGE, dialog_entry
from ..sip.ua.events import NotifierSubscription, StateSource
from ..sip.ua.refer import EventAgent
from .call import CallService, VoiceCall
from .core import UeCore
from .events import CallAnswered, CallEarlyMedia, CallEnded, CallRinging, RcsEvent

__all__ = ["DialogNotifier", "call_entry"]

_CHANGES = (CallRinging, CallEarlyMedia, CallAnswered, CallEnded)
_END_EVENTS = {"local hangup": di.DialogEvent.LOCAL_BYE, "remote hangup": di.DialogEvent.REMOTE_BYE,
               "cancelled": di.DialogEvent.CANCELLED, "no answer": di.DialogEvent.TIMEOUT}


def _dialog_of(voice: VoiceCall) -> Dialog | None:
    session = voice.call.session
    return session.dialog or next(iter(session.early.values()), None)


def call_entry(voice: VoiceCall, ended: bool = False) -> di.Dialog:
    """The ``<dialog>`` of one voice call as it stands."""
    dialog = _dialog_of(voice)
    if dialog is None:   # our INVITE, no answer with a tag yet (RFC 4235 3.7.1 trying)
        request = voice.call.request
        local_tag = request.from_.tag or ""
        entry = di.Dialog(id=f"{voice.id};{local_tag}", state=di.DialogState.TRYING,
                          call_id=voice.id, local_tag=local_tag,
                          direction=di.Direction.INITIATOR)
    else:
        entry = dialog_entry(dialog)
    if ended:
        entry.state = di.DialogState.TERMINATED
        entry.event = _END_EVENTS.get(voice.end_reason, di.DialogEvent.REJECTED
                                      if not voice.answered.is_set() else None)
    elif voice.answered.is_set():
        entry.state = di.DialogState.CONFIRMED
    elif dialog is not None:
        entry.state = di.DialogState.EARLY
    return entry


class _SubscribeModule:
    """Lets the UE's EventAgent take SUBSCRIBEs for the dialog package only."""

    name = "ue-dialog-events"
    priority = Priority.EVENT
    methods = ("SUBSCRIBE",)

    def __init__(self, agent: EventAgent) -> None:
        self.agent = agent

    def on_request(self, ctx: ServerContext) -> bool:
        request = ctx.request
        if request.method != "SUBSCRIBE":
            return False
        try:
            event = Event.parse(request.header("Event") or "")
        except ValueError:
            return False
        return event.package.lower() == "dialog" and self.agent.on_request(ctx)


class DialogNotifier:
    """Serves ``Event: dialog`` for the UE's voice calls (see the module text)."""

    def __init__(self, core: UeCore, calls: CallService,
                 agent: Callable[[], EventAgent]) -> None:
        self.core = core
        self.calls = calls
        self._agent_of = agent
        self._known: dict[str, VoiceCall] = {}
        self._owed: dict[int, list[di.Dialog]] = {}   # id(subscription) -> ended calls to tell
        self._versions: dict[int, int] = {}
        self._previous: StateSource | None = None
        self._module: _SubscribeModule | None = None
        self._pending = False

    def install(self) -> None:
        """After the UA is up: the package, the state source, the module, the listener."""
        agent = self._agent_of()
        agent.packages.register(DIALOG_PACKAGE)
        self._previous = agent.notifier.state_of
        agent.notifier.state_of = self._state
        self._module = _SubscribeModule(agent)
        self.core.endpoint.add_module(self._module)
        self.core.listeners.append(self._on_event)

    def close(self) -> None:
        if self._module is not None and self._module in self.core.endpoint.modules:
            self.core.endpoint.remove_module(self._module)
        self._module = None

    # -- the document ------------------------------------------------------------------
    def document(self, version: int = 0, entity: str | None = None,
                 ended: list[di.Dialog] | None = None) -> di.DialogInfo:
        """Full state: the calls in progress, and ``ended`` ones as terminated."""
        entries = [call_entry(v) for v in self.calls.calls.values() if not v.ended.is_set()]
        entries += ended or []
        return di.DialogInfo(entity or self.core.aor, version, di.DocumentState.FULL, entries)

    def _state(self, sub: NotifierSubscription) -> object:
        if sub.event.package.lower() != "dialog":
            return self._previous(sub) if self._previous is not None else None
        # the core routed it here: the To is one of our identities (a sip: AOR, a tel: number)
        version = self._versions.get(id(sub), -1) + 1
        ended = self._owed.pop(id(sub), [])   # told once, then left out
        if sub.terminated:
            self._versions.pop(id(sub), None)
        else:
            self._versions[id(sub)] = version
        return self.document(version, str(sub.dialog.local_addr.uri), ended)

    def _subscriptions(self) -> list[NotifierSubscription]:
        return [sub for sub in self._agent_of().notifier.subscriptions
                if sub.event.package.lower() == "dialog" and not sub.terminated]

    # -- changes -------------------------------------------------------------------------
    def _on_event(self, event: RcsEvent) -> None:
        if not isinstance(event, _CHANGES):
            return
        self._known.update(self.calls.calls)
        if isinstance(event, CallEnded):
            voice = self._known.pop(event.call_id, None)
            if voice is not None:   # each watcher of the moment hears it ended, once
                entry = call_entry(voice, ended=True)
                for sub in self._subscriptions():
                    self._owed.setdefault(id(sub), []).append(entry)
        if not self._pending:   # one NOTIFY per subscription for a burst of changes
            self._pending = True
            asyncio.get_running_loop().call_soon(self._notify_all)

    def _notify_all(self) -> None:
        self._pending = False
        agent = self._agent_of()
        for sub in self._subscriptions():
            agent.notify(sub)
