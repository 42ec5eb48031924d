"""RFC 5626 flow tokens (imsbox.ims.flow_token): what one key signs, only it opens."""

from __future__ import annotations

import re

from imsbox.ims.flow_token import FlowToken, FlowTokenSigner
from imsbox.sip.transport.base import Flow

KEY = b"k" * 32
FLOW = Flow("tcp", ("127.0.0.1", 5060), ("192.0.2.7", 40123), conn_id=9)


def test_a_token_opens_to_the_flow_it_names() -> None:
    token = FlowTokenSigner(KEY).issue(FLOW, outbound=True)
    # user-part safe: base64url payload "." base64url MAC
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{22}", token), token
    opened = FlowTokenSigner(KEY).open(token)  # another instance, the same key
    assert opened == FlowToken("tcp", ("192.0.2.7", 40123), ("127.0.0.1", 5060), True)
    assert opened.flow == Flow("tcp", ("127.0.0.1", 5060), ("192.0.2.7", 40123))
    assert opened.reliable
    udp = FlowTokenSigner(KEY).open(FlowTokenSigner(KEY).issue(
        Flow("udp", ("::1", 5060), ("::1", 5062)), outbound=False))
    assert udp is not None and not udp.outbound and not udp.reliable


def test_anything_else_opens_to_none() -> None:
    signer = FlowTokenSigner(KEY)
    token = signer.issue(FLOW, outbound=False)
    head, _, mac = token.partition(".")
    other = signer.issue(Flow("tcp", ("127.0.0.1", 5060), ("192.0.2.7", 1)), outbound=True)
    for bad in (FlowTokenSigner(b"x" * 32).issue(FLOW, False),   # another key
                f"{head}.{other.partition('.')[2]}",               # another flow's MAC
                ("B" if head[0] == "A" else "A") + f"{head[1:]}.{mac}",  # payload changed
                head, "", ".", "junk.junk", f"{head}.{mac}é", "é.é"):
        assert signer.open(bad) is None, bad
