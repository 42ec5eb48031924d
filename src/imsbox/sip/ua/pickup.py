"""Call pickup (RFC 5359 2.16) from a dialog-info document, sans-I/O.

The picker learns the ringing call from the callee's dialog events (RFC 4235)
and sends an INVITE with Replaces to the *caller*: RFC 3891 3 lets only the
UAC of an early dialog accept a Replaces for it, and the caller is that UAC
(the callee's phone, the UAS, would have to refuse it). So the Replaces names
the dialog as the caller sees it, which is the callee's document turned round::

    <dialog call-id="C" local-tag="B" remote-tag="A" direction="recipient">
        <state>early</state>                  (the callee's view: B is its To tag)

    INVITE sip:caller  Replaces: C;to-tag=A;from-tag=B;early-only

``to-tag`` is the recipient's (the caller's) own tag, the callee's
``remote-tag``; ``from-tag`` is the callee's ``local-tag``. ``early-only``
(RFC 3891 6.1, as RFC 5359 F7) makes the caller refuse it once the callee
has answered, so a pickup never takes over an answered call.
"""

from __future__ import annotations

from ...content import dialog_info as di
from ..headers import Replaces

__all__ = ["pickup_replaces", "ringing_dialogs"]


def ringing_dialogs(info: di.DialogInfo) -> list[di.Dialog]:
    """The document's calls that ring at its entity: incoming (``recipient``)
    and early, with both tags (a ``trying`` one has no early dialog to replace)."""
    return [d for d in info.dialogs
            if d.state is di.DialogState.EARLY and d.direction is di.Direction.RECIPIENT
            and d.call_id and d.local_tag and d.remote_tag]


def pickup_replaces(dialog: di.Dialog) -> Replaces:
    """The Replaces an INVITE to the caller carries to take over ``dialog`` (an
    entry of the callee's document): tags turned round, early-only."""
    if not (dialog.call_id and dialog.local_tag and dialog.remote_tag):
        raise ValueError("a dialog to pick up needs its call-id and both tags")
    return Replaces(dialog.call_id, to_tag=dialog.remote_tag, from_tag=dialog.local_tag,
                    early_only=True)
