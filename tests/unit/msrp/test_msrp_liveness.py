"""msrp.liveness on a virtual clock: the deadlines and what each one does."""

from __future__ import annotations

from imsbox.msrp.liveness import ConnectionTimers, Liveness, LivenessAction


def test_nothing_configured_has_no_deadline() -> None:
    timers = ConnectionTimers(Liveness(), now=0.0)
    assert not Liveness().active
    assert timers.next_deadline() is None
    assert timers.on_timer(1e9) is LivenessAction.NONE


def test_keepalive_is_due_an_interval_after_the_last_byte_sent() -> None:
    timers = ConnectionTimers(Liveness(keepalive_interval=10.0), now=0.0)
    assert timers.next_deadline() == 10.0
    timers.received(5.0, in_message=False, new_message=False)  # reads do not count
    assert timers.on_timer(10.0) is LivenessAction.KEEPALIVE
    timers.sent(10.0)
    assert timers.next_deadline() == 20.0
    assert timers.on_timer(15.0) is LivenessAction.NONE  # early call: nothing due


def test_idle_counts_both_directions_and_wins_over_keepalive() -> None:
    timers = ConnectionTimers(Liveness(keepalive_interval=10.0, idle_timeout=30.0), now=0.0)
    timers.received(25.0, in_message=False, new_message=False)
    assert timers.on_timer(30.0) is LivenessAction.KEEPALIVE    # in 25 s ago, out 30 s ago
    assert timers.next_deadline() == 10.0   # the keep-alive deadline stays until sent
    timers.sent(30.0)
    assert timers.next_deadline() == 40.0
    assert timers.on_timer(55.0) is LivenessAction.KEEPALIVE
    assert timers.on_timer(60.0) is LivenessAction.CLOSE_IDLE   # 30 s with nothing either way


def test_message_deadline_runs_from_the_first_byte_of_each_message() -> None:
    timers = ConnectionTimers(Liveness(message_timeout=5.0), now=0.0)
    assert timers.next_deadline() is None            # no message under way
    timers.received(1.0, in_message=True, new_message=False)
    assert timers.next_deadline() == 6.0
    timers.received(4.0, in_message=True, new_message=False)   # the same message trickles on
    assert timers.next_deadline() == 6.0
    assert timers.on_timer(6.0) is LivenessAction.CLOSE_INCOMPLETE
    timers.received(5.5, in_message=True, new_message=True)    # one ended, another began
    assert timers.next_deadline() == 10.5
    timers.received(7.0, in_message=False, new_message=True)   # complete: no deadline
    assert timers.next_deadline() is None
    assert timers.on_timer(100.0) is LivenessAction.NONE


def test_a_skipped_keepalive_does_not_keep_the_connection_alive() -> None:
    """No session to send an empty SEND for: asked again an interval later,
    and the idle close still comes."""
    timers = ConnectionTimers(Liveness(keepalive_interval=10.0, idle_timeout=25.0), now=0.0)
    assert timers.on_timer(10.0) is LivenessAction.KEEPALIVE
    timers.keepalive_skipped(10.0)
    assert timers.next_deadline() == 20.0
    timers.keepalive_skipped(20.0)
    assert timers.next_deadline() == 25.0
    assert timers.on_timer(25.0) is LivenessAction.CLOSE_IDLE
