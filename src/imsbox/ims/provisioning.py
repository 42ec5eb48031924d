"""Provisioning: the functions behind ``imsbox user ...`` and ``imsbox group ...``.

They work on the store of a data dir (or ``--store`` URL) whether or not
``imsbox serve`` is running: SQLite in WAL mode lets both use the file.

``add_subcommands(subparsers)`` registers the ``user`` and ``group`` commands;
each parsed namespace carries ``handler`` (sync, returns the exit status) and
``run`` (the same as a coroutine, for ``cli.main``'s ``asyncio.run(args.run(args))``).
The operations on a store (``add_user``, ``add_group`` ...) are coroutines like
the store itself; the command functions (``user_add`` ...) run them with ``asyncio.run``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TextIO

from ..config import Config, ConfigError, load_config
from ..sip.auth import Algorithm, compute_ha1
from ..sip.identity import canonical_public_id
from ..store import (
    AlreadyExists, Credential, Group, Psi, PsiKind, PublicIdentity, ServiceProfile, Store,
    StoreError, Subscriber, open_store,
)
from .hss import psi_matches

__all__ = [
    "DEFAULT_PROFILE",
    "ProvisioningError",
    "add_group",
    "add_subcommands",
    "add_user",
    "apply_config",
    "generate_password",
    "group_add",
    "group_list",
    "group_remove",
    "member_uri",
    "remove_user",
    "run_command",
    "user_add",
    "user_list",
    "user_remove",
    "validate_msisdn",
    "validate_name",
]

log = logging.getLogger(__name__)

DEFAULT_PROFILE = "default"
HA1_ALGORITHMS = (Algorithm.MD5, Algorithm.SHA_256)
# RFC 3261 user-part "unreserved" characters, starting with a letter or digit;
# a leading '+' is kept for E.164 identities.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,63}")
_MSISDN = re.compile(r"\+[0-9]{1,15}")


class ProvisioningError(ValueError):
    """Bad provisioning input; the message says what to fix."""


# -- validation ---------------------------------------------------------------------------

def validate_name(name: str) -> str:
    if "@" in name:
        raise ProvisioningError(f"user name {name!r}: give the bare NAME; the domain "
                                "comes from --domain")
    if not _NAME.fullmatch(name):
        raise ProvisioningError(
            f"user name {name!r}: use 1-64 letters, digits, '.', '_', '~' or '-', "
            "starting with a letter or digit")
    return name


def validate_msisdn(msisdn: str) -> str:
    if not _MSISDN.fullmatch(msisdn):
        raise ProvisioningError(f"MSISDN {msisdn!r}: expected E.164, '+' followed by "
                                "1-15 digits, e.g. +15551230001")
    return msisdn


def generate_password() -> str:
    return secrets.token_urlsafe(12)


def member_uri(text: str, domain: str) -> str:
    """A group member as a URI: SIP/tel URIs as given, +E164 -> tel:, NAME -> sip:NAME@DOMAIN."""
    if text.startswith("+"):
        return f"tel:{validate_msisdn(text)}"
    if ":" in text:
        try:
            return canonical_public_id(text)
        except ValueError as exc:
            raise ProvisioningError(f"member {text!r}: {exc}") from None
    return f"sip:{validate_name(text)}@{domain}"


# -- operations on a store ---------------------------------------------------------------

async def apply_config(store: Store, config: Config, replace: bool = True) -> None:
    """Write the configured default service profile (iFCs) and PSIs into the store.

    ``serve`` replaces them at start-up; provisioning commands pass
    ``replace=False`` and only fill in what is missing, so running ``imsbox user
    ...`` without ``--config`` never overwrites what a running server configured.
    """
    data = store.subscribers
    if replace or await data.get_service_profile(DEFAULT_PROFILE) is None:
        await data.put_service_profile(ServiceProfile(DEFAULT_PROFILE,
                                                      tuple(i.to_json() for i in config.ifcs)))
    for psi in (*config.psis, config.deferred_messages_psi):
        if replace or await data.get_psi(psi.pattern) is None:
            await data.put_psi(psi)


def _credentials(name: str, domain: str, password: str) -> tuple[Credential, ...]:
    """H(A1) for both usernames clients send: NAME@DOMAIN (IMS) and NAME (generic SIP)."""
    return tuple(Credential(user, domain, alg.value, compute_ha1(user, domain, password, alg))
                 for user in (f"{name}@{domain}", name) for alg in HA1_ALGORITHMS)


def _identities(name: str, domain: str, msisdn: str | None) -> list[PublicIdentity]:
    private_id = f"{name}@{domain}"
    uris = [f"sip:{name}@{domain}"]
    if msisdn:
        uris += [f"tel:{msisdn}", f"sip:{msisdn}@{domain};user=phone"]
    # One implicit registration set, named after its default identity.
    return [PublicIdentity(uri, private_id, irs_id=uris[0], service_profile=DEFAULT_PROFILE,
                           default=(i == 0)) for i, uri in enumerate(uris)]


async def _check_not_psi(store: Store, uris: Sequence[str]) -> None:
    psis = await store.subscribers.list_psis()
    for uri in uris:
        for psi in psis:
            if psi_matches(psi, uri):
                raise ProvisioningError(f"{uri} is a public service identity "
                                        f"({psi.pattern}, hosted by {psi.as_uri}); "
                                        "choose another name")


async def add_user(store: Store, domain: str, name: str, password: str | None = None,
                   msisdn: str | None = None) -> tuple[Subscriber, str]:
    """Create a subscriber; returns it and the password (generated when None)."""
    validate_name(name)
    if msisdn is not None:
        validate_msisdn(msisdn)
    if password is not None and not password:
        raise ProvisioningError("password: must not be empty (leave --password out "
                                "to have one generated)")
    password = password if password is not None else generate_password()
    identities = _identities(name, domain, msisdn)
    await _check_not_psi(store, [i.uri for i in identities])
    subscriber = Subscriber(f"{name}@{domain}", _credentials(name, domain, password),
                            msisdn, time.time())
    try:
        await store.subscribers.add_subscriber(subscriber, identities)
    except AlreadyExists as exc:
        raise ProvisioningError(str(exc)) from None
    log.info("added subscriber %s", subscriber.private_id)
    return subscriber, password


async def remove_user(store: Store, domain: str, name: str) -> bool:
    """Remove by bare NAME or NAME@DOMAIN; False when there is no such subscriber."""
    private_id = name if "@" in name else f"{name}@{domain}"
    return await store.subscribers.remove_subscriber(private_id)


async def add_group(store: Store, config: Config, uri: str, members: Sequence[str]) -> Group:
    """Define a pre-defined group and make its URI a PSI of the conference AS."""
    if not uri.lower().startswith(("sip:", "sips:")):
        raise ProvisioningError(f"group URI {uri!r}: expected a SIP URI such as "
                                f"sip:group-friends@{config.domain}")
    try:
        group_uri = canonical_public_id(uri)
    except ValueError as exc:
        raise ProvisioningError(f"group URI {uri!r}: {exc}") from None
    if not members:
        raise ProvisioningError("group: give at least one MEMBER")
    if await store.subscribers.get_public_identity(group_uri) is not None:
        raise ProvisioningError(f"group URI {group_uri} is a subscriber's identity")
    uris = tuple(dict.fromkeys(member_uri(m, config.domain) for m in members))
    group = Group(group_uri, uris)
    await store.subscribers.put_group(group)
    await store.subscribers.put_psi(Psi(group_uri, config.conference_as.uri, PsiKind.EXACT))
    return group


# -- command-line front end ---------------------------------------------------------------

def add_subcommands(subparsers: Any) -> None:
    """Register ``user`` and ``group`` on an argparse subparsers object."""
    user = subparsers.add_parser("user", help="manage subscribers")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    add = _command(user_sub, "add", "create a subscriber", _cmd_user_add)
    add.add_argument("name", metavar="NAME")
    add.add_argument("--password", help="password (generated and printed once if omitted)")
    add.add_argument("--msisdn", metavar="+E164", help="phone number, e.g. +15551230001")
    _command(user_sub, "list", "list subscribers", _cmd_user_list)
    remove = _command(user_sub, "remove", "remove a subscriber", _cmd_user_remove)
    remove.add_argument("name", metavar="NAME")

    group = subparsers.add_parser("group", help="manage pre-defined groups")
    group_sub = group.add_subparsers(dest="group_command", required=True)
    gadd = _command(group_sub, "add", "define a pre-defined group (a PSI)", _cmd_group_add)
    gadd.add_argument("uri", metavar="GROUP-URI")
    gadd.add_argument("members", metavar="MEMBER", nargs="+",
                      help="SIP/tel URI, +E164 number or bare NAME")
    _command(group_sub, "list", "list pre-defined groups", _cmd_group_list)
    gremove = _command(group_sub, "remove", "remove a pre-defined group", _cmd_group_remove)
    gremove.add_argument("uri", metavar="GROUP-URI")


Handler = Callable[[argparse.Namespace, Store, Config, TextIO], Awaitable[int]]


def _command(sub: Any, name: str, help: str, handler: Handler) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help)
    parser.add_argument("--data", metavar="DIR", default=None,
                        help="data directory (default ./.imsbox)")
    parser.add_argument("--domain", default=None, help="home domain (default ims.test)")
    parser.add_argument("--config", metavar="FILE", default=None, help="imsbox.toml")
    parser.add_argument("--store", metavar="URL", default=None,
                        help="store URL instead of the data dir's SQLite file")

    def sync(args: argparse.Namespace) -> int:
        return asyncio.run(run(args))

    async def run(args: argparse.Namespace) -> int:
        return await run_command(args, handler)

    parser.set_defaults(handler=sync, run=run)
    return parser


async def run_command(args: argparse.Namespace, handler: Handler,
                      out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Open config and store, run ``handler``; errors become a message and status 1."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        config = load_config(args.config, domain=args.domain, data_dir=args.data)
        async with open_store(args.store or config.store_location) as store:
            await apply_config(store, config, replace=False)
            return await handler(args, store, config, out)
    except (ProvisioningError, ConfigError, StoreError) as exc:
        print(f"imsbox: {exc}", file=err)
        return 1


# Command functions: what the CLI runs, callable directly. Common keyword
# arguments: data (dir, default ./.imsbox), domain, config (imsbox.toml path),
# store (URL), out/err (streams, default stdout/stderr). They return the exit status.

def _namespace(data: str | None, domain: str | None, config: str | None,
               store: str | None, **fields: Any) -> argparse.Namespace:
    return argparse.Namespace(data=data, domain=domain, config=config, store=store, **fields)


def user_add(name: str, *, password: str | None = None, msisdn: str | None = None,
             data: str | None = None, domain: str | None = None, config: str | None = None,
             store: str | None = None, out: TextIO | None = None,
             err: TextIO | None = None) -> int:
    """``imsbox user add NAME [--password P] [--msisdn +E164]``."""
    args = _namespace(data, domain, config, store, name=name, password=password,
                      msisdn=msisdn)
    return asyncio.run(run_command(args, _cmd_user_add, out, err))


def user_list(*, data: str | None = None, domain: str | None = None,
              config: str | None = None, store: str | None = None,
              out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``imsbox user list``."""
    args = _namespace(data, domain, config, store)
    return asyncio.run(run_command(args, _cmd_user_list, out, err))


def user_remove(name: str, *, data: str | None = None, domain: str | None = None,
                config: str | None = None, store: str | None = None,
                out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``imsbox user remove NAME``."""
    args = _namespace(data, domain, config, store, name=name)
    return asyncio.run(run_command(args, _cmd_user_remove, out, err))


def group_add(uri: str, members: Sequence[str], *, data: str | None = None,
              domain: str | None = None, config: str | None = None,
              store: str | None = None, out: TextIO | None = None,
              err: TextIO | None = None) -> int:
    """``imsbox group add GROUP-URI MEMBER...``."""
    args = _namespace(data, domain, config, store, uri=uri, members=list(members))
    return asyncio.run(run_command(args, _cmd_group_add, out, err))


def group_list(*, data: str | None = None, domain: str | None = None,
               config: str | None = None, store: str | None = None,
               out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``imsbox group list``."""
    args = _namespace(data, domain, config, store)
    return asyncio.run(run_command(args, _cmd_group_list, out, err))


def group_remove(uri: str, *, data: str | None = None, domain: str | None = None,
                 config: str | None = None, store: str | None = None,
                 out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``imsbox group remove GROUP-URI``."""
    args = _namespace(data, domain, config, store, uri=uri)
    return asyncio.run(run_command(args, _cmd_group_remove, out, err))


async def _cmd_user_add(args: argparse.Namespace, store: Store, config: Config, out: TextIO) -> int:
    subscriber, password = await add_user(store, config.domain, args.name, args.password,
                                          args.msisdn)
    print(f"added {subscriber.private_id}", file=out)
    for identity in await store.subscribers.public_identities(subscriber.private_id):
        print(f"  {identity.uri}", file=out)
    if args.password is None:
        print(f"password: {password}  (shown once; it is not stored)", file=out)
    return 0


async def _cmd_user_list(args: argparse.Namespace, store: Store, config: Config, out: TextIO) -> int:
    for subscriber in await store.subscribers.list_subscribers():
        identities = await store.subscribers.public_identities(subscriber.private_id)
        uris = " ".join(i.uri for i in identities)
        print(f"{subscriber.private_id}  {uris}", file=out)
    return 0


async def _cmd_user_remove(args: argparse.Namespace, store: Store, config: Config,
                     out: TextIO) -> int:
    if not await remove_user(store, config.domain, args.name):
        raise ProvisioningError(f"no subscriber {args.name!r} in {config.domain}")
    print(f"removed {args.name}", file=out)
    return 0


async def _cmd_group_add(args: argparse.Namespace, store: Store, config: Config, out: TextIO) -> int:
    group = await add_group(store, config, args.uri, args.members)
    print(f"group {group.uri}: {' '.join(group.members)}", file=out)
    return 0


async def _cmd_group_list(args: argparse.Namespace, store: Store, config: Config, out: TextIO) -> int:
    for group in await store.subscribers.list_groups():
        print(f"{group.uri}  {' '.join(group.members)}", file=out)
    return 0


async def _cmd_group_remove(args: argparse.Namespace, store: Store, config: Config,
                      out: TextIO) -> int:
    try:
        uri = canonical_public_id(args.uri)
    except ValueError as exc:
        raise ProvisioningError(str(exc)) from None
    if not await store.subscribers.remove_group(uri):
        raise ProvisioningError(f"no group {uri}")
    await store.subscribers.remove_psi(uri)
    print(f"removed {uri}", file=out)
    return 0
