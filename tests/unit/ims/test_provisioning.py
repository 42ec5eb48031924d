"""imsbox user / group commands against a data dir."""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import sqlite3
from pathlib import Path

import pytest

from imsbox.cli import main as cli_main
from imsbox.ims.hss import Hss, ResultCode
from imsbox.ims.provisioning import (
    ProvisioningError, add_subcommands, add_user, group_add, group_list, group_remove,
    member_uri, user_add, user_list, user_remove, validate_msisdn, validate_name,
)
from imsbox.sip.auth import Algorithm, compute_ha1
from imsbox.store import DB_FILENAME, SqliteStore


def run(fn, *args, **kw) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = fn(*args, out=out, err=err, **kw)
    return status, out.getvalue(), err.getvalue()


def test_user_add_with_password_and_msisdn(tmp_path: Path) -> None:
    status, out, err = run(user_add, "alice", password="secret", msisdn="+15550001",
                           data=str(tmp_path))
    assert status == 0 and err == ""
    assert "alice@ims.test" in out and "tel:+15550001" in out
    assert "sip:+15550001@ims.test;user=phone" in out
    assert "password" not in out  # given by the user: not echoed
    async def in_store() -> None:
        async with SqliteStore.in_data_dir(tmp_path) as store:
            hss = Hss(store.subscribers, "ims.test")
            answer = await hss.multimedia_auth("alice", "tel:+15550001", Algorithm.SHA_256)
            assert answer.ha1 == compute_ha1("alice", "ims.test", "secret", Algorithm.SHA_256)
            irs = [p.uri for p in await store.subscribers.implicit_set("sip:alice@ims.test")]
            assert irs == ["sip:alice@ims.test", "tel:+15550001",
                           "sip:+15550001@ims.test;user=phone"]
    asyncio.run(in_store())


def test_generated_password_is_printed_once_and_never_stored(tmp_path: Path) -> None:
    status, out, _ = run(user_add, "bob", data=str(tmp_path))
    assert status == 0
    password = out.split("password: ")[1].split()[0]
    assert len(password) >= 12
    async def in_store() -> None:
        async with SqliteStore.in_data_dir(tmp_path) as store:
            hss = Hss(store.subscribers, "ims.test")
            ha1 = (await hss.multimedia_auth("bob@ims.test", "sip:bob@ims.test")).ha1
            assert ha1 == compute_ha1("bob@ims.test", "ims.test", password)
    asyncio.run(in_store())
    raw = (tmp_path / DB_FILENAME).read_bytes()
    for extra in tmp_path.glob(DB_FILENAME + "-wal"):
        raw += extra.read_bytes()
    assert password.encode() not in raw
    _, listing, _ = run(user_list, data=str(tmp_path))
    assert password not in listing


def test_user_list_and_remove(tmp_path: Path) -> None:
    data = str(tmp_path)
    run(user_add, "alice", password="p", data=data)
    run(user_add, "bob", password="p", msisdn="+4412345", data=data)
    status, out, _ = run(user_list, data=data)
    lines = out.splitlines()
    assert status == 0 and len(lines) == 2
    assert lines[0].startswith("alice@ims.test") and "tel:+4412345" in lines[1]
    assert run(user_remove, "alice", data=data)[0] == 0
    assert run(user_remove, "bob@ims.test", data=data)[0] == 0
    status, _, err = run(user_remove, "carol", data=data)
    assert status == 1 and "no subscriber 'carol'" in err
    assert run(user_list, data=data)[1] == ""


def test_domain_option(tmp_path: Path) -> None:
    run(user_add, "dave", password="p", domain="example.org", data=str(tmp_path))
    async def in_store() -> None:
        async with SqliteStore.in_data_dir(tmp_path) as store:
            assert await store.subscribers.get_public_identity("sip:dave@example.org") is not None
            dave = await store.subscribers.get_subscriber("dave@example.org")
            assert dave is not None and dave.credentials[0].realm == "example.org"
    asyncio.run(in_store())


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "al ice"}, "user name 'al ice'"),
    ({"name": "alice@ims.test"}, "bare NAME"),
    ({"name": "-x"}, "starting with a letter or digit"),
    ({"name": ""}, "user name"),
    ({"name": "a", "msisdn": "15550001"}, "E.164"),
    ({"name": "a", "msisdn": "+1234567890123456"}, "E.164"),
    ({"name": "a", "msisdn": "+1-555"}, "E.164"),
    ({"name": "a", "password": ""}, "must not be empty"),
    ({"name": "conf-1"}, "public service identity"),
    ({"name": "a", "domain": "not a domain"}, "--domain"),
])
def test_bad_input_gives_clear_error_and_status_1(tmp_path: Path, kwargs: dict,
                                                  message: str) -> None:
    name = kwargs.pop("name")
    status, out, err = run(user_add, name, data=str(tmp_path), **kwargs)
    assert status == 1 and out == ""
    assert err.startswith("imsbox: ") and message in err


def test_duplicates_are_refused(tmp_path: Path) -> None:
    data = str(tmp_path)
    assert run(user_add, "alice", password="p", msisdn="+1555", data=data)[0] == 0
    status, _, err = run(user_add, "alice", password="p", data=data)
    assert status == 1 and "already exists" in err
    status, _, err = run(user_add, "bob", password="p", msisdn="+1555", data=data)
    assert status == 1 and "+1555" in err and "already in use" in err


def test_validators() -> None:
    assert validate_name("a.b_c~d-1") == "a.b_c~d-1"
    assert validate_msisdn("+1") == "+1"
    with pytest.raises(ProvisioningError):
        validate_name("x" * 65)
    assert member_uri("alice", "ims.test") == "sip:alice@ims.test"
    assert member_uri("+15550001", "ims.test") == "tel:+15550001"
    assert member_uri("<sip:Bob@Other.Net>", "ims.test") == "sip:Bob@other.net"
    with pytest.raises(ProvisioningError):
        member_uri("sip:", "ims.test")


def test_group_add_list_remove(tmp_path: Path) -> None:
    data = str(tmp_path)
    status, out, _ = run(group_add, "sip:group-team@ims.test",
                         ["alice", "+15550002", "sip:carol@other.net", "alice"], data=data)
    assert status == 0
    assert out.strip() == ("group sip:group-team@ims.test: sip:alice@ims.test "
                           "tel:+15550002 sip:carol@other.net")
    async def in_store() -> None:
        async with SqliteStore.in_data_dir(tmp_path) as store:
            group = await store.subscribers.get_group("sip:group-team@ims.test")
            assert group is not None and group.members[0] == "sip:alice@ims.test"
            lia = await Hss(store.subscribers, "ims.test").location_info("sip:group-team@ims.test")
            assert lia.result is ResultCode.DIAMETER_SUCCESS and lia.psi
    asyncio.run(in_store())
    assert "sip:group-team@ims.test" in run(group_list, data=data)[1]
    assert run(group_remove, "sip:group-team@ims.test", data=data)[0] == 0
    status, _, err = run(group_remove, "sip:group-team@ims.test", data=data)
    assert status == 1 and "no group" in err


@pytest.mark.parametrize("uri, members, message", [
    ("team", ["alice"], "expected a SIP URI"),
    ("sip:team@ims.test", [], "at least one MEMBER"),
    ("sip:team@ims.test", ["bad name"], "user name"),
    ("sip:alice@ims.test", ["bob"], "subscriber's identity"),
])
def test_group_add_bad_input(tmp_path: Path, uri: str, members: list[str],
                             message: str) -> None:
    run(user_add, "alice", password="p", data=str(tmp_path))
    status, _, err = run(group_add, uri, members, data=str(tmp_path))
    assert status == 1 and message in err


def test_add_user_store_level_refuses_group_psi(tmp_path: Path) -> None:
    async def in_store() -> None:
        async with SqliteStore.in_data_dir(tmp_path) as store:
            from imsbox.config import load_config
            from imsbox.ims.provisioning import add_group, apply_config
            await apply_config(store, load_config())
            await add_group(store, load_config(), "sip:team@ims.test", ["x"])
            with pytest.raises(ProvisioningError, match="public service identity"):
                await add_user(store, "ims.test", "team", "p")
    asyncio.run(in_store())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imsbox")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    return parser


def test_argparse_wiring(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    data = str(tmp_path / "d")
    args = parser.parse_args(["user", "add", "erin", "--msisdn", "+15550009",
                              "--password", "pw", "--data", data])
    assert args.handler(args) == 0
    assert "erin@ims.test" in capsys.readouterr().out
    args = parser.parse_args(["user", "list", "--data", data])
    assert asyncio.run(args.run(args)) == 0  # cli.main runs asyncio.run(args.run(args))
    assert "tel:+15550009" in capsys.readouterr().out
    args = parser.parse_args(["group", "add", "sip:group-x@ims.test", "erin", "--data", data])
    assert args.handler(args) == 0
    args = parser.parse_args(["user", "remove", "erin", "--data", data, "--domain", "ims.test"])
    assert args.handler(args) == 0
    args = parser.parse_args(["user", "add", "bad name", "--data", data])
    assert args.handler(args) == 1
    assert "user name" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["group", "add", "sip:g@ims.test", "--data", data])  # no members
    with pytest.raises(SystemExit):
        parser.parse_args(["user"])


def test_provisioning_prints_no_schema_migration_lines(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    data = str(tmp_path / "new")  # a fresh store: every migration runs
    assert cli_main(["user", "add", "gina", "--password", "pw", "--data", data]) == 0
    assert cli_main(["user", "list", "--data", data]) == 0
    assert (tmp_path / "new" / DB_FILENAME).exists()
    assert not [r for r in caplog.records
                if r.levelno >= logging.INFO and "migration" in r.getMessage()]


def test_default_data_dir_is_dot_imsbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["user", "add", "frank", "--password", "x"])
    assert args.handler(args) == 0
    assert (tmp_path / ".imsbox" / DB_FILENAME).exists()
    db = sqlite3.connect(tmp_path / ".imsbox" / DB_FILENAME)
    assert db.execute("SELECT private_id FROM subscribers").fetchall() == [("frank@ims.test",)]
    db.close()


def test_config_file_option(tmp_path: Path) -> None:
    config = tmp_path / "imsbox.toml"
    config.write_text('domain = "corp.test"\n[conference_as]\nport = 7777\n')
    status, out, _ = run(group_add, "sip:g@corp.test", ["a"], data=str(tmp_path),
                         config=str(config))
    assert status == 0 and "sip:a@corp.test" in out
    async def in_store() -> None:
        async with SqliteStore.in_data_dir(tmp_path) as store:
            psi = await store.subscribers.get_psi("sip:g@corp.test")
            assert psi is not None and psi.as_uri == "sip:127.0.0.1:7777"
    asyncio.run(in_store())
    status, _, err = run(user_list, data=str(tmp_path), config=str(tmp_path / "none.toml"))
    assert status == 1 and "file not found" in err


def test_commands_do_not_overwrite_served_configuration(tmp_path: Path) -> None:
    from imsbox.config import load_config
    from imsbox.ims.provisioning import apply_config
    from imsbox.store import ServiceProfile
    custom = tmp_path / "imsbox.toml"
    custom.write_text('[[ifc]]\npriority = 1\napplication_server = "sip:x@127.0.0.1"\n')
    async def in_store() -> None:
        async with SqliteStore.in_data_dir(tmp_path) as store:
            await apply_config(store, load_config(custom))  # what serve --config does
    asyncio.run(in_store())
    assert run(user_list, data=str(tmp_path))[0] == 0  # no --config: defaults
    async def in_store() -> None:
        async with SqliteStore.in_data_dir(tmp_path) as store:
            profile = await store.subscribers.get_service_profile("default")
            assert profile is not None and len(profile.ifcs) == 1 and "sip:x@" in profile.ifcs[0]
            assert isinstance(profile, ServiceProfile)
    asyncio.run(in_store())
