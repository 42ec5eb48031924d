"""The dialog event package (RFC 4235) served from a UA's DialogTable, sans-I/O.

``DialogEventSource`` is a Notifier state source: for a ``dialog``
subscription it yields a full dialog-info document listing the INVITE
dialogs of the subscribed AOR (call-id, local and remote tag, direction,
state, both identities and the remote target), which is what call pickup
needs to build its Replaces.  Each subscription gets its own version
counter (RFC 4235 4.1).

    source = DialogEventSource(ua.dialogs)
    agent = EventAgent(ua, EventPackageRegistry([DIALOG_PACKAGE]), state_of=source)
    ...
    agent.notify(sub)   # after a call changed: a NOTIFY with the table as it is now
"""

from __future__ import annotations

from ...content import dialog_info as di
from ..uri import SipUri, Uri
from .dialog import Dialog, DialogRole, DialogState, DialogTable
from .events import EventPackage, NotifierSubscription

__all__ = ["DIALOG_INFO_TYPE", "DIALOG_PACKAGE", "DialogEventSource", "aor_key", "dialog_entry"]

DIALOG_INFO_TYPE = "application/dialog-info+xml"


def _render(state: object) -> bytes:
    if isinstance(state, di.DialogInfo):
        return state.to_xml()
    return state if isinstance(state, bytes) else b""


DIALOG_PACKAGE = EventPackage("dialog", DIALOG_INFO_TYPE, render=_render)


def aor_key(uri: Uri) -> str:
    """scheme:user@host, lower case: how dialogs and subscriptions name an AOR."""
    if isinstance(uri, SipUri):
        user = f"{uri.user}@" if uri.user else ""
        return f"{uri.scheme}:{user}{uri.host}".lower()
    return str(uri).lower()


_STATES = {DialogState.EARLY: di.DialogState.EARLY,
           DialogState.CONFIRMED: di.DialogState.CONFIRMED,
           DialogState.TERMINATED: di.DialogState.TERMINATED}


def dialog_entry(dialog: Dialog) -> di.Dialog:
    """One <dialog> element for a dialog of ours (RFC 4235 4.1.1)."""
    did = dialog.id
    local, remote = dialog.local_addr, dialog.remote_addr
    return di.Dialog(
        id=f"{did.call_id};{did.local_tag};{did.remote_tag}", state=_STATES[dialog.state],
        call_id=did.call_id, local_tag=did.local_tag, remote_tag=did.remote_tag,
        direction=di.Direction.INITIATOR if dialog.role is DialogRole.UAC
        else di.Direction.RECIPIENT,
        local=di.Participant(identity=di.Identity(str(local.uri), local.display_name),
                             target=di.Target(str(dialog.local_target))
                             if dialog.local_target is not None else None),
        remote=di.Participant(identity=di.Identity(str(remote.uri), remote.display_name),
                              target=di.Target(str(dialog.remote_target))))


class DialogEventSource:
    """A Notifier ``state_of``: the dialog-info of a ``dialog`` subscription."""

    def __init__(self, dialogs: DialogTable) -> None:
        self.dialogs = dialogs
        self._versions: dict[int, int] = {}   # id(subscription) -> last version sent

    def dialog_info(self, aor: Uri, version: int = 0) -> di.DialogInfo:
        """A full document with the INVITE dialogs (RFC 4235 covers those) whose
        local identity is ``aor``."""
        key = aor_key(aor)
        entries = [dialog_entry(d) for d in self.dialogs
                   if d.invite_usage is not None and not d.terminated
                   and aor_key(d.local_addr.uri) == key]
        return di.DialogInfo(str(aor), version, di.DocumentState.FULL, entries)

    def __call__(self, sub: NotifierSubscription) -> object:
        if sub.event.package.lower() != "dialog":
            return None
        aor = sub.dialog.local_addr.uri  # the SUBSCRIBE's To: the AOR watched
        version = self._versions.get(id(sub), -1) + 1
        if sub.terminated:
            self._versions.pop(id(sub), None)
        else:
            self._versions[id(sub)] = version
        return self.dialog_info(aor, version)
