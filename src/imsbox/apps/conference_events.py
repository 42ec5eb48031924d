"""The conference event package (RFC 4575) as the focus serves it.

A subscription's first NOTIFY carries the full ``conference-info`` (version 1);
every later one a partial document with the changed user only (``state="partial"``,
or ``"deleted"`` for someone removed) and the next version of *that*
subscription (RFC 4575 4.6: versions count per subscription).
"""

from __future__ import annotations

from ..content.conference_info import (
    ConferenceDescription, ConferenceInfo, ConferenceState, DisconnectionMethod, ElementState,
    Endpoint, EndpointStatus, User, Users,
)
from ..sip.ua.events import EventPackage
from ..store import Conference, Participant

__all__ = ["CONFERENCE_INFO", "CONFERENCE_PACKAGE", "full_info", "partial_info"]

CONFERENCE_INFO = "application/conference-info+xml"
CONFERENCE_PACKAGE = EventPackage("conference", CONFERENCE_INFO, default_expires=3600,
                                  min_expires=60, max_expires=7200)


def _user(participant: Participant, state: ElementState = ElementState.FULL,
          how: DisconnectionMethod | None = None) -> User:
    status = participant.state
    endpoint = Endpoint(participant.uri, state, participant.display_name or None,
                        status=EndpointStatus(status.value), disconnection_method=how)
    return User(participant.uri, state, participant.display_name or None,
                endpoints=[endpoint])


def _connected(conference: Conference) -> int:
    return sum(1 for p in conference.participants if p.state.value == "connected")


def full_info(conference: Conference, version: int) -> bytes:
    """The whole conference: subject, user count and every participant."""
    return ConferenceInfo(
        conference.uri, ElementState.FULL, version,
        description=ConferenceDescription(subject=conference.subject or None),
        conference_state=ConferenceState(user_count=_connected(conference), active=True),
        users=Users([_user(p) for p in conference.participants])).to_xml()


def partial_info(conference: Conference, version: int, changed: Participant | None = None,
                 removed: bool = False, how: DisconnectionMethod | None = None) -> bytes:
    """What changed: one participant (``removed``: deleted; ``how`` it left,
    RFC 4575 5.7.3), else the subject."""
    users = None
    if changed is not None:
        state = ElementState.DELETED if removed else ElementState.FULL
        users = Users([_user(changed, state, how)], ElementState.PARTIAL)
    return ConferenceInfo(
        conference.uri, ElementState.PARTIAL, version,
        description=None if changed is not None else ConferenceDescription(
            subject=conference.subject or None),
        conference_state=ConferenceState(user_count=_connected(conference)),
        users=users).to_xml()
