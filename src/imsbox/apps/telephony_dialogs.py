"""The calls the telephony AS sees, as RFC 4235 dialog state of its subscribers.

Sans-I/O: the AS reports what passes through it (an INVITE it serves, the
responses going upstream, a BYE), :class:`CallDialogs` keeps one
:class:`WatchedDialog` per served user, Call-ID and remote tag, and builds the
full ``dialog-info`` document of a user (RFC 4235 4.1: call-id, local-tag,
remote-tag, direction, state, both identities). A phone need not serve
dialog events itself: the network does, from the calls it routes.

Tags are as the served user sees them: for a caller (originating) the local
tag is the From tag and the remote tag the To tag of the answer; for a
callee (terminating) the other way round. ``trying`` dialogs have no remote
tag yet (RFC 4235 allows that); terminated ones are reported once and then
forgotten.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..content import dialog_info as di
from ..sip.message import Request, Response

__all__ = ["CallDialogs", "MAX_DIALOGS", "WatchedDialog"]

MAX_DIALOGS = 32   # per served user: the newest are kept


@dataclass(slots=True)
class WatchedDialog:
    """One dialog of a served user."""

    aor: str
    call_id: str
    originating: bool
    local_identity: str
    remote_identity: str
    local_tag: str | None = None
    remote_tag: str | None = None
    state: di.DialogState = di.DialogState.TRYING
    event: di.DialogEvent | None = None
    code: int | None = None

    @property
    def dialog_id(self) -> str:
        return f"{self.call_id};{self.local_tag or ''};{self.remote_tag or ''}"

    def entry(self) -> di.Dialog:
        return di.Dialog(
            id=self.dialog_id, state=self.state, call_id=self.call_id,
            local_tag=self.local_tag, remote_tag=self.remote_tag,
            direction=di.Direction.INITIATOR if self.originating else di.Direction.RECIPIENT,
            event=self.event, code=self.code,
            local=di.Participant(identity=di.Identity(self.local_identity)),
            remote=di.Participant(identity=di.Identity(self.remote_identity)))


@dataclass(slots=True)
class CallDialogs:
    """Every served user's dialogs, by AOR; ``changed`` names the AORs to notify."""

    by_aor: dict[str, list[WatchedDialog]] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)

    def invite(self, aor: str, request: Request, originating: bool,
               caller: str, callee: str) -> WatchedDialog:
        """A new call of ``aor`` (the INVITE as it reached the AS)."""
        own_tag = request.from_.tag if originating else None
        watched = WatchedDialog(aor, request.call_id, originating,
                                caller if originating else callee,
                                callee if originating else caller,
                                local_tag=own_tag,
                                remote_tag=None if originating else request.from_.tag)
        dialogs = self.by_aor.setdefault(aor, [])
        dialogs.append(watched)
        del dialogs[:-MAX_DIALOGS]   # one whose end we never saw must not stay forever
        self.changed.add(aor)
        return watched

    def response(self, watched: WatchedDialog, response: Response) -> None:
        """A response to the INVITE on its way upstream moves the dialog on."""
        tag = response.to.tag
        if response.status < 200:
            if tag is None or watched.state is di.DialogState.CONFIRMED:
                return
            watched.state = di.DialogState.EARLY
        elif response.status < 300:
            watched.state = di.DialogState.CONFIRMED
        else:
            watched.state = di.DialogState.TERMINATED
            watched.event = di.DialogEvent.CANCELLED if response.status == 487 \
                else di.DialogEvent.REJECTED
            watched.code = response.status
        if tag is not None:
            if watched.originating:
                watched.remote_tag = tag
            else:
                watched.local_tag = tag
        self.changed.add(watched.aor)

    def left(self, watched: WatchedDialog) -> None:
        """The call left this user (forwarded elsewhere): terminated for them."""
        if watched.state is not di.DialogState.TERMINATED:
            watched.state = di.DialogState.TERMINATED
            watched.event = di.DialogEvent.REJECTED
            self.changed.add(watched.aor)

    def bye(self, request: Request) -> None:
        """A BYE in a call we route ends its dialogs, for whoever they belong to."""
        for dialogs in self.by_aor.values():
            for watched in dialogs:
                if watched.call_id == request.call_id and \
                        watched.state is not di.DialogState.TERMINATED:
                    watched.state = di.DialogState.TERMINATED
                    ours = request.from_.tag == watched.local_tag
                    watched.event = di.DialogEvent.LOCAL_BYE if ours \
                        else di.DialogEvent.REMOTE_BYE
                    self.changed.add(watched.aor)

    def document(self, aor: str, version: int) -> di.DialogInfo:
        """The full dialog-info of ``aor`` now (terminated dialogs included)."""
        entries = [w.entry() for w in self.by_aor.get(aor, [])]
        return di.DialogInfo(aor, version, di.DocumentState.FULL, entries)

    def take_changed(self) -> set[str]:
        """The AORs whose state changed since the last call; forgets ended dialogs
        after this report (each terminated dialog is in exactly one document)."""
        changed, self.changed = self.changed, set()
        return changed

    def forget_ended(self, aor: str) -> None:
        dialogs = [w for w in self.by_aor.get(aor, []) if w.state is not di.DialogState.TERMINATED]
        if dialogs:
            self.by_aor[aor] = dialogs
        else:
            self.by_aor.pop(aor, None)
