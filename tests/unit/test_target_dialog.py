"""Target-Dialog (RFC 4538 7): parsed and built; both tags are required."""

from __future__ import annotations

import pytest

from imsbox.sip.headers import HeaderError, TargetDialog


def test_parse_and_build() -> None:
    header = TargetDialog.parse("abc@host ; remote-tag=r1;local-tag=l1")
    assert (header.call_id, header.local_tag, header.remote_tag) == ("abc@host", "l1", "r1")
    assert str(header) == "abc@host;local-tag=l1;remote-tag=r1"
    assert TargetDialog.parse(str(header)) == header


@pytest.mark.parametrize("value", ["", "abc", "abc;local-tag=l1", ";local-tag=l;remote-tag=r"])
def test_incomplete_is_an_error(value: str) -> None:
    with pytest.raises(HeaderError):
        TargetDialog.parse(value)
