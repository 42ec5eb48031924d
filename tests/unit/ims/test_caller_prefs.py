"""Caller preferences (RFC 3841 7.2.4) over contact feature sets."""

from __future__ import annotations

import pytest

from imsbox.ims.caller_prefs import CallerPreferences, contact_features, rank_contacts
from imsbox.sip import HeaderError, Request
from imsbox.sip.grammar import split_params

SESSION = "urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.session"
MSG = "urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.msg"


def features(params: str):
    return contact_features(split_params(params.lstrip(";")) if params else [])


def prefs(*headers: tuple[str, str]) -> CallerPreferences:
    request = Request("MESSAGE", "sip:bob@ims.test", list(headers))
    return CallerPreferences.from_request(request)


def ranked(contacts: list[tuple[str, str, float]], p: CallerPreferences) -> list[str]:
    return [r.item for r in rank_contacts([(n, features(f), q) for n, f, q in contacts], p)]


CONTACTS = [
    ("plain", "", 1.0),
    ("cpm", f';+g.3gpp.icsi-ref="{SESSION},{MSG}";+sip.instance="<urn:uuid:1>"', 1.0),
    ("msg-only", f';+g.3gpp.icsi-ref="{MSG}"', 1.0),
]


def test_require_explicit_keeps_only_contacts_with_the_icsi() -> None:
    p = prefs(("Accept-Contact", f'*;+g.3gpp.icsi-ref="{SESSION}";require;explicit'))
    assert ranked(CONTACTS, p) == ["cpm"]


def test_require_without_explicit_keeps_contacts_that_do_not_say() -> None:
    p = prefs(("Accept-Contact", f'*;+g.3gpp.icsi-ref="{SESSION}";require'))
    # "plain" lists no ICSI at all, so it may still support it; "msg-only" may not.
    assert ranked(CONTACTS, p) == ["cpm", "plain"]


def test_preference_orders_without_dropping() -> None:
    p = prefs(("Accept-Contact", f'*;+g.3gpp.icsi-ref="{SESSION}"'))
    assert ranked(CONTACTS, p) == ["cpm", "plain", "msg-only"]
    p = prefs(("Accept-Contact", "*;audio"))
    assert ranked(CONTACTS, p) == ["plain", "cpm", "msg-only"]


def test_q_value_comes_before_the_caller_preference_score() -> None:
    contacts = [("low-q-match", ";audio", 0.5), ("high-q", "", 0.9)]
    assert ranked(contacts, prefs(("Accept-Contact", "*;audio"))) == ["high-q", "low-q-match"]


def test_reject_contact_drops_contacts_listing_the_feature() -> None:
    p = prefs(("Reject-Contact", f'*;+g.3gpp.icsi-ref="{MSG}"'))
    assert ranked(CONTACTS, p) == ["plain"]
    # A contact that does not list every rejected tag stays.
    p = prefs(("Reject-Contact", f'*;+g.3gpp.icsi-ref="{MSG}";video'))
    assert ranked(CONTACTS, p) == ["plain", "cpm", "msg-only"]


def test_no_preferences_keeps_everything_in_q_order() -> None:
    contacts = [("a", "", 0.1), ("b", "", 1.0), ("c", "", 0.5)]
    assert ranked(contacts, CallerPreferences()) == ["b", "c", "a"]


def test_values_negation_and_numbers() -> None:
    contacts = [("mobile", ';mobility="mobile"', 1.0), ("fixed", ';mobility="fixed"', 1.0)]
    assert ranked(contacts, prefs(("Accept-Contact", '*;mobility="!fixed";require'))) == ["mobile"]
    assert ranked(contacts, prefs(("Accept-Contact", '*;mobility="FIXED";require'))) == ["fixed"]
    numbers = [("two", ';+x.n="#2"', 1.0), ("nine", ';+x.n="#9"', 1.0)]
    assert ranked(numbers, prefs(("Accept-Contact", '*;+x.n="#>=5";require'))) == ["nine"]
    assert ranked(numbers, prefs(("Accept-Contact", '*;+x.n="#1:3";require'))) == ["two"]


def test_instance_id_is_not_a_feature() -> None:
    assert "+sip.instance" not in features(';+sip.instance="<urn:uuid:1>";audio').tags


def test_malformed_element_raises_header_error_naming_the_header() -> None:
    with pytest.raises(HeaderError) as info:
        prefs(("Reject-Contact", "sip:x@y;audio"))
    assert info.value.header == "Reject-Contact"
