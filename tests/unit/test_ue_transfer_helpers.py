"""The pure parts of ue/transfer.py: the Refer-To / IM URI with Replaces, what a
message must look like to be an IM transfer, and the Refer-To values refused."""

from __future__ import annotations

import pytest

from imsbox.sip.headers import Replaces, refer_to_target
from imsbox.sip.message import Request
from imsbox.sip.ua.dialog import build_request
from imsbox.ue.events import SendError
from imsbox.ue.transfer import offered_call, refer_refusal, transfer_uri

REPLACES = Replaces("abc@host", "to1", "from2")


def test_transfer_uri_escapes_replaces_and_requires_it() -> None:
    uri = transfer_uri("sip:carol@ims.test", REPLACES)
    assert uri.startswith("sip:carol@ims.test?")
    assert "Replaces=abc%40host%3Bto-tag%3Dto1%3Bfrom-tag%3Dfrom2" in uri
    target, embedded = refer_to_target(f"<{uri}>")
    assert Replaces.parse(embedded["Replaces"]) == REPLACES
    assert embedded["Require"] == "replaces"


def test_transfer_uri_needs_a_sip_uri() -> None:
    with pytest.raises(SendError):
        transfer_uri("tel:+15550003", REPLACES)


def test_offered_call() -> None:
    uri = transfer_uri("sip:alice@ims.test", REPLACES)
    assert offered_call(uri) == uri
    assert offered_call(f"  <{uri}>\n") == uri
    assert offered_call("sip:alice@ims.test") is None                  # no Replaces
    assert offered_call(f"take this: {uri}") is None                    # not only a URI
    assert offered_call("sip:alice@ims.test?Replaces=broken") is None   # no tags
    assert offered_call("hello") is None


def refer(*refer_to: str) -> Request:
    headers = [("Refer-To", value) for value in refer_to]
    return build_request("REFER", "sip:bob@ims.test", "<sip:alice@ims.test>;tag=a",
                         "<sip:bob@ims.test>;tag=b", contact="sip:alice@127.0.0.1:5070",
                         headers=headers)


@pytest.mark.parametrize("value, status, reason", [
    ("<http://example.com/>", 403, "sip, sips or tel URI"),
    ("<mailto:carol@ims.test>", 403, "not mailto"),
    ("<sip:carol@ims.test;method=BYE>", 403, "only INVITE"),
])
def test_refused_refer_to(value: str, status: int, reason: str) -> None:
    response = refer_refusal(refer(value))
    assert response is not None and response.status == status and reason in response.reason


@pytest.mark.parametrize("values", [
    ("<sip:carol@ims.test>",), ("<tel:+15550003>",), ("<sips:carol@ims.test>",),
    ("<sip:carol@ims.test;method=INVITE>",),
    (), ("<sip:a@x>", "<sip:b@x>"),     # left to the ReferRecipient (400 Missing / Multiple)
])
def test_refer_to_acted_on_or_left_to_the_recipient(values: tuple[str, ...]) -> None:
    assert refer_refusal(refer(*values)) is None
