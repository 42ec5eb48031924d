"""Automatic redial's reading of a dialog-info document (RFC 4235): idle means no
dialog trying, proceeding, early or confirmed."""

from __future__ import annotations

from imsbox.content import dialog_info as di
from imsbox.ue.redial import is_idle


def document(*states: di.DialogState) -> bytes:
    dialogs = [di.Dialog(id=f"c{i};a;b", state=s, call_id=f"c{i}", local_tag="a",
                         remote_tag="b") for i, s in enumerate(states)]
    return di.DialogInfo("sip:bob@ims.test", 3, di.DocumentState.FULL, dialogs).to_xml()


def test_no_dialog_or_only_terminated_is_idle() -> None:
    assert is_idle(document()) is True
    assert is_idle(document(di.DialogState.TERMINATED, di.DialogState.TERMINATED)) is True


def test_any_dialog_in_progress_is_busy() -> None:
    for state in (di.DialogState.TRYING, di.DialogState.PROCEEDING, di.DialogState.EARLY,
                  di.DialogState.CONFIRMED):
        assert is_idle(document(di.DialogState.TERMINATED, state)) is False, state


def test_an_unreadable_body_is_neither() -> None:
    assert is_idle(b"<dialog-info") is None
    assert is_idle(b"<other xmlns='urn:x'/>") is None
