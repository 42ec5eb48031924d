"""``imsbox service`` and ``imsbox call-control`` as a user runs them (subprocesses),
and ``imsbox serve --role telephony``; one call shows a setting made with the CLI
code path on a running network taking effect on the next call."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from imsbox.apps.telephony_cli import service_command
from imsbox.config import Config
from imsbox.testing import write_loopback_config

from helpers import client, network_with, run_within
from telephony_kit import WAIT, four_users, history
from test_serve_cli import Serve, imsbox

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def data(tmp_path: Path) -> list[str]:
    """``--data DIR`` with alice and carol provisioned."""
    base = ["--data", str(tmp_path / "data")]
    for name in ("alice", "carol"):
        assert imsbox("user", "add", name, "--password", "pw", *base).returncode == 0
    return base


def test_set_show_unset(data: list[str]) -> None:
    done = imsbox("service", "set", "alice", "forward-busy", "sip:carol@ims.test", *data)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "sip:alice@ims.test: forward-busy  sip:carol@ims.test"
    done = imsbox("service", "set", "alice", "forward-no-answer", "carol", "--after", "5", *data)
    assert done.stdout.strip() == ("sip:alice@ims.test: forward-no-answer  sip:carol@ims.test"
                                   "  (after 5 s)")
    assert imsbox("service", "set", "alice", "find-me", "carol", "+15550009", *data).returncode == 0
    assert imsbox("service", "set", "alice", "screen-incoming", "+1900*", "sip:*@spam.test",
                  *data).returncode == 0
    shown = imsbox("service", "show", "alice", *data)
    assert shown.returncode == 0
    assert shown.stdout.splitlines() == [
        "sip:alice@ims.test",
        "  find-me  sip:carol@ims.test tel:+15550009",
        "  forward-busy  sip:carol@ims.test",
        "  forward-no-answer  sip:carol@ims.test  (after 5 s)",
        "  screen-incoming  +1900* sip:*@spam.test"]
    gone = imsbox("service", "unset", "alice", "forward-busy", *data)
    assert gone.returncode == 0 and "forward-busy removed" in gone.stdout
    again = imsbox("service", "unset", "alice", "forward-busy", *data)
    assert again.returncode == 1 and "has no forward-busy" in again.stderr
    assert "forward-busy" not in imsbox("service", "show", "alice", *data).stdout
    assert imsbox("service", "show", "carol", *data).stdout.strip() == \
        "sip:carol@ims.test: no services set"


@pytest.mark.parametrize(("args", "message"), [
    (("forward-busy", "sip:"), "forward-busy: malformed URI 'sip:'"),
    (("forward-busy", "carol@"), "'carol@' is not a URI"),
    (("forward-busy", "sip:ims.test"), "names no user"),
    (("forward-unconditional", "a", "b"), "expected 1 value(s), got 2"),
    (("screen-outgoing", "http://x/*"), "pattern 'http://x/*'"),
    (("forward-busy", "carol", "--after", "3"), "--after applies only to"),
    (("call-waiting", "on"), "unknown setting 'call-waiting'; expected one of"),
])
def test_bad_values_are_refused(data: list[str], args: tuple[str, ...], message: str) -> None:
    done = imsbox("service", "set", "alice", *args, *data)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert done.stderr.startswith("imsbox service: ")
    assert imsbox("service", "show", "alice", *data).stdout.strip().endswith("no services set")


def test_unknown_subscriber(data: list[str]) -> None:
    done = imsbox("service", "set", "zed", "forward-busy", "carol", *data)
    assert done.returncode == 1 and "no subscriber sip:zed@ims.test" in done.stderr


def test_call_control_without_a_running_as(data: list[str]) -> None:
    done = imsbox("call-control", "dial", "alice", "carol", *data)
    assert done.returncode == 3 and "no telephony AS running" in done.stderr


def test_serve_role_telephony_and_set_while_serving(tmp_path: Path) -> None:
    path, config = write_loopback_config(tmp_path)
    base = ["--config", str(path)]
    assert imsbox("user", "add", "alice", "--password", "pw", *base).returncode == 0
    serve = Serve("--role", "telephony", *base)
    try:
        node = config.telephony_as
        assert set(serve.lines(2)) == {f"telephony_as listening on {t} {node.host}:{node.port}"
                                       for t in ("udp", "tcp")}
        done = imsbox("service", "set", "alice", "forward-unconditional", "+15550100", *base)
        assert done.returncode == 0 and "tel:+15550100" in done.stdout
        dial = imsbox("call-control", "dial", "--json", "alice", "nobody", *base)
        assert dial.returncode == 1
        assert json.loads(dial.stdout.splitlines()[-1]) == {
            "event": "failed", "status": 404, "reason": "no subscriber sip:nobody@ims.test"}
    finally:
        status, _, err = serve.stop()
    assert status == 0, err


def test_cli_setting_takes_effect_on_the_next_call(tmp_path: Path) -> None:
    config: Config = four_users(tmp_path)

    async def scenario() -> None:
        alice = client(config, "alice")
        bob, carol = client(config, "bob", answer_calls=0), client(config, "carol", answer_calls=0)
        async with network_with(config, alice, bob, carol):
            first = await alice.call("bob")
            assert await first.wait_answered(WAIT) and first.id in bob.calls
            await first.hangup()
            out, err = io.StringIO(), io.StringIO()
            args = argparse.Namespace(config=str(tmp_path / "imsbox.toml"), data=None,
                                      domain=None, store=None, service_command="set",
                                      name="bob", key="forward-unconditional",
                                      values=["carol"], after=None)
            assert await service_command(args, out, err) == 0, err.getvalue()
            second = await alice.call("bob")
            assert await second.wait_answered(WAIT) and second.id in carol.calls
            assert history(carol.calls[second.id])[-1].startswith("<sip:carol@ims.test;cause=302>")
            await second.hangup()
    run_within(scenario, 60)
