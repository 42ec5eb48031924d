"""Every SIP message of the seed documents parses (cleaned fixtures)."""

from pathlib import Path

import pytest

from imsbox.sip import Request, Response, parse

FIXTURES = sorted((Path(__file__).parents[2] / "fixtures" / "sip").glob("*.sip"))


def test_fixtures_cover_every_seed():
    seeds = {path.name[:3] for path in FIXTURES}
    assert {"000", "001", "002", "003", "004"} <= seeds


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_seed_message_parses(path):
    data = path.read_bytes()
    message = parse(data)
    assert isinstance(message, (Request, Response))
    # Every element-critical view is readable and survives a round trip.
    assert message.via and message.from_.uri and message.to.uri and message.call_id
    if isinstance(message, Request):
        assert message.cseq.method == message.method
    message.contact
    message.route
    message.record_route
    again = parse(bytes(message))
    assert again.headers.items_raw() == message.headers.items_raw()
    assert again.body == message.body
