"""Tests for imsbox.sip.auth: Digest authentication (RFC 3261 22, RFC 7616, RFC 8760)."""

from __future__ import annotations

import hashlib
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imsbox.sip.auth import (
    Algorithm,
    Challenge,
    Credentials,
    DigestAuthenticator,
    DigestError,
    HA1Store,
    Qop,
    VerifyOutcome,
    answer_challenge,
    choose_challenge,
    compute_ha1,
    compute_response,
    compute_userhash,
    credentials_for_realm,
)

FUZZ = settings(max_examples=300, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

# RFC 7616 section 3.9.1
RFC7616_REALM = "http-auth@example.org"
RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC7616_MD5_RESPONSE = "8ca523f5e9506fed4657c9700eebdbec"
RFC7616_SHA256_RESPONSE = "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"


def _h(name: str, text: str) -> str:
    """Independent reference hash, written from the RFC formula."""
    return hashlib.new(name, text.encode()).hexdigest()


class VirtualClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class CountingBytes:
    """Deterministic stand-in for secrets.token_bytes."""

    def __init__(self) -> None:
        self._counter = itertools.count()

    def __call__(self, n: int) -> bytes:
        return next(self._counter).to_bytes(4, "big").ljust(n, b"\x5a")[:n]


SECRET = b"k" * 32
REALM = "ims.example.com"
METHOD = "REGISTER"
URI = "sip:ims.example.com"


def make_server(clock: VirtualClock | None = None, **kwargs: object) -> DigestAuthenticator:
    return DigestAuthenticator(REALM, nonce_lifetime=300, clock=clock or VirtualClock(), secret=SECRET,
                               random_bytes=CountingBytes(), **kwargs)  # type: ignore[arg-type]


def make_store() -> HA1Store:
    store = HA1Store()
    store.add_password("alice", REALM, "wonderland")
    return store


def answer(server: DigestAuthenticator, algorithm: Algorithm = Algorithm.SHA_256, *,
           password: str = "wonderland", username: str = "alice", nc: int = 1, **kwargs: object) -> Credentials:
    challenge = next(c for c in server.challenges() if c.algorithm is algorithm)
    return answer_challenge(challenge, METHOD, URI, username, password=password, nc=nc,
                            cnonce="0a4f113b", **kwargs)  # type: ignore[arg-type]


# --- test vectors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "hash_name", "expected"),
    [(Algorithm.MD5, "md5", RFC7616_MD5_RESPONSE), (Algorithm.SHA_256, "sha256", RFC7616_SHA256_RESPONSE)],
)
def test_rfc7616_vectors(algorithm: Algorithm, hash_name: str, expected: str) -> None:
    value = (f'Digest realm="{RFC7616_REALM}", qop="auth, auth-int", algorithm={algorithm.value}, '
             f'nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"')
    challenge = Challenge.parse(value)
    creds = answer_challenge(challenge, "GET", "/dir/index.html", "Mufasa", password="Circle of Life",
                             cnonce=RFC7616_CNONCE)
    ha1 = _h(hash_name, f"Mufasa:{RFC7616_REALM}:Circle of Life")
    ha2 = _h(hash_name, "GET:/dir/index.html")
    reference = _h(hash_name, f"{ha1}:{RFC7616_NONCE}:00000001:{RFC7616_CNONCE}:auth:{ha2}")
    assert creds.response == expected == reference
    assert (creds.qop, creds.nc, creds.opaque) == (Qop.AUTH, "00000001", RFC7616_OPAQUE)
    assert compute_ha1("Mufasa", RFC7616_REALM, "Circle of Life", algorithm) == ha1


def test_rfc2617_vector_with_qop() -> None:
    ha1 = compute_ha1("Mufasa", "testrealm@host.com", "Circle Of Life")
    response = compute_response(algorithm=Algorithm.MD5, ha1=ha1, nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
                                method="GET", uri="/dir/index.html", qop=Qop.AUTH, nc="00000001",
                                cnonce="0a4f113b")
    assert response == "6629fae49393a05397450978507c4ef1"


def test_rfc2069_no_qop_response() -> None:
    nonce = "dcd98b7102dd2f0e8b11d0f600bfb0c093"
    challenge = Challenge.parse(f'Digest realm="testrealm@host.com", nonce="{nonce}"')
    creds = answer_challenge(challenge, "GET", "/dir/index.html", "Mufasa", password="Circle Of Life")
    ha1 = _h("md5", "Mufasa:testrealm@host.com:Circle Of Life")
    ha2 = _h("md5", "GET:/dir/index.html")
    assert creds.response == _h("md5", f"{ha1}:{nonce}:{ha2}")
    assert (creds.qop, creds.nc, creds.cnonce, creds.algorithm) == (None, None, None, None)
    assert "qop" not in str(creds) and "nc=" not in str(creds)


def test_sess_and_auth_int_formulas() -> None:
    ha1 = _h("sha256", "bob:r:pw")
    sess_ha1 = _h("sha256", f"{ha1}:n:c")
    ha2 = _h("sha256", "INVITE:sip:x@y:" + hashlib.sha256(b"v=0\r\n").hexdigest())
    expected = _h("sha256", f"{sess_ha1}:n:00000002:c:auth-int:{ha2}")
    got = compute_response(algorithm=Algorithm.SHA_256_SESS, ha1=ha1, nonce="n", method="INVITE", uri="sip:x@y",
                           qop=Qop.AUTH_INT, nc="00000002", cnonce="c", body=b"v=0\r\n")
    assert got == expected


def test_ha1_argument_equals_password() -> None:
    challenge = Challenge(realm=REALM, nonce="abc", qop=("auth",), algorithm=Algorithm.SHA_256)
    by_password = answer_challenge(challenge, METHOD, URI, "alice", password="pw", cnonce="c")
    by_ha1 = answer_challenge(challenge, METHOD, URI, "alice",
                              ha1=compute_ha1("alice", REALM, "pw", Algorithm.SHA_256), cnonce="c")
    assert by_password == by_ha1


def test_userhash_client() -> None:
    challenge = Challenge(realm=REALM, nonce="abc", qop=("auth",), algorithm=Algorithm.SHA_256, userhash=True)
    creds = answer_challenge(challenge, METHOD, URI, "alice", password="pw", cnonce="c")
    assert creds.username == compute_userhash("alice", REALM, Algorithm.SHA_256) == _h("sha256", f"alice:{REALM}")
    assert creds.userhash and "userhash=true" in str(creds)


@pytest.mark.parametrize(
    ("challenge", "kwargs", "reason"),
    [
        (Challenge(realm="r", nonce="n", qop=("auth",)), {}, "exactly one"),
        (Challenge(realm="r", nonce="n", qop=("auth",)), {"password": "p", "ha1": "00"}, "exactly one"),
        (Challenge(realm="r", nonce="n", qop=("auth",)), {"password": "p", "nc": 0}, "nc"),
        (Challenge(realm="r", nonce="n", algorithm=Algorithm.MD5_SESS), {"password": "p"}, "needs qop"),
        (Challenge(realm="r", nonce="n", qop=("auth-conf",)), {"password": "p"}, "qop"),
    ],
)
def test_answer_challenge_rejects_bad_input(challenge: Challenge, kwargs: dict, reason: str) -> None:
    with pytest.raises(DigestError, match=reason):
        answer_challenge(challenge, METHOD, URI, "alice", **kwargs)


def test_answer_prefers_auth_and_uses_auth_int_when_only_offered() -> None:
    both = Challenge(realm="r", nonce="n", qop=("auth-int", "auth"))
    assert answer_challenge(both, METHOD, URI, "a", password="p", cnonce="c").qop is Qop.AUTH
    only_int = Challenge(realm="r", nonce="n", qop=("auth-int",))
    assert answer_challenge(only_int, METHOD, URI, "a", password="p", cnonce="c", body=b"x").qop is Qop.AUTH_INT


def test_answer_generates_cnonce_when_not_given() -> None:
    challenge = Challenge(realm="r", nonce="n", qop=("auth",))
    first = answer_challenge(challenge, METHOD, URI, "a", password="p")
    second = answer_challenge(challenge, METHOD, URI, "a", password="p")
    assert first.cnonce and second.cnonce and first.cnonce != second.cnonce


# --- server ------------------------------------------------------------------------------


def test_challenge_headers_offer_sha256_then_md5() -> None:
    server = make_server()
    headers = server.challenge_headers(401)
    assert [name for name, _ in headers] == ["WWW-Authenticate", "WWW-Authenticate"]
    parsed = [Challenge.parse(value) for _, value in headers]
    assert [c.algorithm for c in parsed] == [Algorithm.SHA_256, Algorithm.MD5]
    assert parsed[0].nonce == parsed[1].nonce and parsed[0].opaque == server.opaque
    assert all(c.realm == REALM and c.qop == ("auth",) and not c.stale for c in parsed)
    assert {name for name, _ in server.challenge_headers(407)} == {"Proxy-Authenticate"}
    assert all(Challenge.parse(v).stale for _, v in server.challenge_headers(401, stale=True))
    with pytest.raises(DigestError):
        server.challenge_headers(403)


def test_fresh_nonce_per_challenge() -> None:
    server = make_server()
    assert server.challenges()[0].nonce != server.challenges()[0].nonce


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_round_trip_client_to_server(algorithm: Algorithm) -> None:
    server = make_server(algorithms=(algorithm,))
    header = str(answer(server, algorithm))
    result = server.verify(Credentials.parse(header), METHOD, make_store().lookup)
    assert result.ok and result.outcome is VerifyOutcome.OK and result.username == "alice"
    assert server.verify(str(answer(server, algorithm, nc=2)), METHOD, make_store().lookup).ok


def test_round_trip_from_challenge_text() -> None:
    server = make_server()
    challenge = choose_challenge(value for _, value in server.challenge_headers(407))
    assert challenge.algorithm is Algorithm.SHA_256
    creds = answer_challenge(challenge, "MESSAGE", "sip:bob@example.com", "alice", password="wonderland")
    assert server.verify(str(creds), "MESSAGE", make_store().lookup).ok


def test_auth_int_round_trip_checks_body() -> None:
    server = make_server(qop=(Qop.AUTH_INT,))
    creds = answer(server, body=b"hello")
    assert creds.qop is Qop.AUTH_INT
    assert server.verify(creds, METHOD, make_store().lookup, body=b"tampered").outcome is VerifyOutcome.BAD_CREDENTIALS
    assert server.verify(creds, METHOD, make_store().lookup, body=b"hello").ok


def test_method_is_covered() -> None:
    server = make_server()
    assert not server.verify(answer(server), "INVITE", make_store().lookup).ok


def test_stale_nonce_after_lifetime() -> None:
    clock = VirtualClock()
    server = make_server(clock)
    challenge = server.challenges()[0]
    lookup = make_store().lookup

    def send(nc: int) -> VerifyOutcome:
        creds = answer_challenge(challenge, METHOD, URI, "alice", password="wonderland", nc=nc, cnonce="c")
        return server.verify(creds, METHOD, lookup).outcome

    clock.now += 299
    assert send(1) is VerifyOutcome.OK
    clock.now += 2
    assert send(2) is VerifyOutcome.STALE
    # The answer to the stale=true challenge that follows succeeds without a new password prompt.
    retry = Challenge.parse(server.challenge_headers(401, stale=True)[0][1])
    assert retry.stale
    creds = answer_challenge(retry, METHOD, URI, "alice", password="wonderland")
    assert server.verify(creds, METHOD, lookup).ok


def test_expired_nonce_with_wrong_password_is_not_stale() -> None:
    clock = VirtualClock()
    server = make_server(clock)
    creds = answer(server, password="guess")
    clock.now += 1000
    assert server.verify(creds, METHOD, make_store().lookup).outcome is VerifyOutcome.BAD_CREDENTIALS


def test_expired_correct_response_is_stale() -> None:
    clock = VirtualClock()
    server = make_server(clock)
    creds = answer(server)
    clock.now += 301
    result = server.verify(creds, METHOD, make_store().lookup)
    assert result.outcome is VerifyOutcome.STALE and not result.ok


def test_nonce_count_replay_rejected() -> None:
    server = make_server()
    challenge = server.challenges()[0]
    lookup = make_store().lookup

    def send(nc: int) -> VerifyOutcome:
        creds = answer_challenge(challenge, METHOD, URI, "alice", password="wonderland", nc=nc, cnonce="c")
        return server.verify(creds, METHOD, lookup).outcome

    assert send(1) is VerifyOutcome.OK
    assert send(1) is VerifyOutcome.REPLAY
    assert send(3) is VerifyOutcome.OK
    assert send(2) is VerifyOutcome.REPLAY
    assert send(4) is VerifyOutcome.OK


def test_bounded_tracking_keeps_replay_protection() -> None:
    clock = VirtualClock()
    server = make_server(clock, max_tracked_nonces=2)
    lookup = make_store().lookup
    first = answer(server)
    assert server.verify(first, METHOD, lookup).ok
    clock.now += 1
    for _ in range(3):  # pushes the first nonce's record out
        assert server.verify(answer(server), METHOD, lookup).ok
    # A replay of an evicted nonce must not pass; asking for a new nonce is safe.
    assert server.verify(first, METHOD, lookup).outcome is VerifyOutcome.STALE


def test_expired_records_are_evicted_first() -> None:
    clock = VirtualClock()
    server = make_server(clock, max_tracked_nonces=2)
    lookup = make_store().lookup
    old = [answer(server), answer(server)]
    assert all(server.verify(c, METHOD, lookup).ok for c in old)
    clock.now += 400
    young = answer(server)
    assert server.verify(young, METHOD, lookup).ok
    clock.now += 1
    newest = answer(server)
    assert server.verify(newest, METHOD, lookup).ok
    # Only expired records were dropped, so the young nonce is still tracked: replay detected.
    assert server.verify(young, METHOD, lookup).outcome is VerifyOutcome.REPLAY


def test_wrong_password_and_unknown_user_look_the_same() -> None:
    server = make_server()
    lookup = make_store().lookup
    wrong_password = server.verify(answer(server, password="nope"), METHOD, lookup)
    unknown_user = server.verify(answer(server, username="mallory", password="wonderland"), METHOD, lookup)
    assert wrong_password.outcome is unknown_user.outcome is VerifyOutcome.BAD_CREDENTIALS
    assert wrong_password.reason == unknown_user.reason


def test_unknown_user_with_matching_guess_still_fails() -> None:
    """Even a response that happens to match the dummy H(A1) cannot succeed for an unknown user."""
    server = make_server()
    creds = answer(server, username="ghost")
    assert server.verify(creds, METHOD, lambda *_: None).outcome is VerifyOutcome.BAD_CREDENTIALS


def test_tampered_nonce_rejected() -> None:
    server = make_server()
    creds = answer(server)
    nonce = creds.nonce
    flipped = nonce[:20] + ("A" if nonce[20] != "A" else "B") + nonce[21:]
    for bad in (flipped, nonce + "A", nonce[:-1], "not a nonce", "ünïcode", ""):
        forged = answer_challenge(Challenge(realm=REALM, nonce=bad, opaque=server.opaque, qop=("auth",),
                                            algorithm=Algorithm.SHA_256),
                                  METHOD, URI, "alice", password="wonderland", cnonce="c")
        result = server.verify(forged, METHOD, make_store().lookup)
        assert result.outcome is VerifyOutcome.BAD_CREDENTIALS, bad


def test_nonce_survives_restart_only_with_same_secret() -> None:
    clock = VirtualClock()
    creds = answer(make_server(clock))
    assert make_server(clock).verify(creds, METHOD, make_store().lookup).ok
    other = DigestAuthenticator(REALM, clock=clock, secret=b"other secret")
    assert other.verify(creds, METHOD, make_store().lookup).outcome is VerifyOutcome.BAD_CREDENTIALS


def test_algorithm_not_offered_rejected() -> None:
    server = make_server(algorithms=(Algorithm.SHA_256,))
    nonce = server.challenges()[0].nonce
    md5 = Challenge(realm=REALM, nonce=nonce, opaque=server.opaque, qop=("auth",))
    creds = answer_challenge(md5, METHOD, URI, "alice", password="wonderland", cnonce="c")
    result = server.verify(creds, METHOD, make_store().lookup)
    assert result.outcome is VerifyOutcome.BAD_CREDENTIALS and "algorithm" in result.reason


@pytest.mark.parametrize(
    ("change", "reason"),
    [({"opaque": "other"}, "opaque"), ({"opaque": None}, "opaque"), ({"realm": "evil.example"}, "realm"),
     ({"userhash": True}, "userhash")],
)
def test_directive_mismatch_rejected(change: dict, reason: str) -> None:
    server = make_server()
    challenge = server.challenges()[0]
    fields = {"realm": challenge.realm, "nonce": challenge.nonce, "opaque": challenge.opaque,
              "qop": ("auth",), "algorithm": Algorithm.SHA_256, **change}
    creds = answer_challenge(Challenge(**fields), METHOD, URI, "alice", password="wonderland", cnonce="c")
    result = server.verify(creds, METHOD, make_store().lookup)
    assert result.outcome is VerifyOutcome.BAD_CREDENTIALS and reason in result.reason


def test_qop_not_offered_rejected() -> None:
    server = make_server()  # offers auth only
    challenge = server.challenges()[0]
    forced = Challenge(realm=REALM, nonce=challenge.nonce, opaque=server.opaque, qop=("auth-int",),
                       algorithm=Algorithm.SHA_256)
    creds = answer_challenge(forced, METHOD, URI, "alice", password="wonderland", cnonce="c")
    assert server.verify(creds, METHOD, make_store().lookup).outcome is VerifyOutcome.BAD_CREDENTIALS


def test_missing_and_malformed() -> None:
    server = make_server()
    lookup = make_store().lookup
    assert server.verify(None, METHOD, lookup).outcome is VerifyOutcome.MISSING
    assert server.verify("Digest realm=", METHOD, lookup).outcome is VerifyOutcome.MALFORMED
    good = answer(server)
    no_qop = answer_challenge(Challenge(realm=REALM, nonce=good.nonce, opaque=server.opaque,
                                        algorithm=Algorithm.SHA_256), METHOD, URI, "alice", password="wonderland")
    for creds in (no_qop, _replace(good, uri=None), _replace(good, nc=None), _replace(good, cnonce=None)):
        result = server.verify(creds, METHOD, lookup)
        assert result.outcome is VerifyOutcome.MALFORMED, creds


def _replace(creds: Credentials, **changes: object) -> Credentials:
    from dataclasses import replace

    return replace(creds, **changes)


def test_ha1_store_keeps_only_hashes() -> None:
    store = HA1Store()
    store.add_password("alice", REALM, "wonderland")
    assert store.lookup("alice", REALM, Algorithm.MD5) == compute_ha1("alice", REALM, "wonderland")
    assert store.lookup("alice", REALM, Algorithm.SHA_256_SESS) == _h("sha256", f"alice:{REALM}:wonderland")
    assert store.lookup("alice", "other", Algorithm.MD5) is None
    store.set_ha1("bob", REALM, Algorithm.MD5, "ABCDEF")
    assert store.lookup("bob", REALM, Algorithm.MD5) == "abcdef"
    assert "wonderland" not in repr(store._ha1)


def test_credentials_for_realm() -> None:
    values = ["Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
              'Digest username="a", realm="other", nonce="n", uri="u", response="r"',
              'Digest username="b", realm="ims.example.com", nonce="n", uri="u", response="r"']
    found = credentials_for_realm(values, REALM)
    assert found is not None and found.username == "b"
    assert credentials_for_realm(values[:2], REALM) is None


def test_choose_challenge_skips_unsupported() -> None:
    values = ['Digest realm="r", nonce="n", algorithm=SHA-512-256, qop="auth"',
              'Basic realm="r"',
              'Digest realm="r", nonce="n2", algorithm=sha-256, qop="auth"',
              'Digest realm="r", nonce="n3", algorithm=MD5, qop="auth"']
    chosen = choose_challenge(values)
    assert (chosen.nonce, chosen.algorithm) == ("n2", Algorithm.SHA_256)
    with pytest.raises(DigestError, match="no usable"):
        choose_challenge(values[:2])


# --- parsing and serialisation --------------------------------------------------------------


def test_challenge_parse_is_tolerant() -> None:
    value = ('digest  REALM = "a \\"quoted\\", realm" ,,Nonce=abc,\r\n\tQOP="auth,auth-int" , stale=TRUE,'
             ' algorithm=md5-SESS, domain="sip:a sip:b", charset=UTF-8, userhash=false, X-Extra="1,2"')
    challenge = Challenge.parse(value)
    assert challenge.realm == 'a "quoted", realm'
    assert challenge.nonce == "abc"
    assert challenge.qop == ("auth", "auth-int")
    assert challenge.stale and not challenge.userhash
    assert challenge.algorithm is Algorithm.MD5_SESS
    assert challenge.domain == ("sip:a", "sip:b")
    assert challenge.charset == "UTF-8"
    assert challenge.params == {"x-extra": "1,2"}
    assert Challenge.parse(str(challenge)) == challenge


def test_challenge_serialisation() -> None:
    challenge = Challenge(realm='r"\\', nonce="n", opaque="o", stale=True, algorithm=Algorithm.SHA_256,
                          qop=("auth",), params={"ext": "a b"})
    assert str(challenge) == ('Digest realm="r\\"\\\\", nonce="n", opaque="o", stale=true, '
                              'algorithm=SHA-256, qop="auth", ext="a b"')
    assert Challenge(realm="r", nonce="n").effective_algorithm is Algorithm.MD5


def test_credentials_round_trip_and_format() -> None:
    value = ('Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", '
             'algorithm=MD5, nonce="abc", nc=00000001, cnonce="c,\\"x", qop=auth, '
             'response="8ca523f5e9506fed4657c9700eebdbec", opaque="o", ext=tok')
    creds = Credentials.parse(value)
    assert creds.cnonce == 'c,"x' and creds.nc == "00000001" and creds.nonce_count == 1
    assert creds.qop is Qop.AUTH and creds.params == {"ext": "tok"}
    text = str(creds)
    assert 'cnonce="c,\\"x"' in text and "nc=00000001" in text and "qop=auth" in text
    assert 'response="8ca523f5e9506fed4657c9700eebdbec"' in text
    assert Credentials.parse(text) == creds


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "auth-scheme"),
        ('Basic realm="r"', "auth-scheme"),
        ('Digest nonce="n"', "realm"),
        ('Digest realm="r"', "nonce"),
        ('Digest realm="r", realm="s", nonce="n"', "duplicate"),
        ('Digest realm="r, nonce=n', "unterminated"),
        ('Digest realm="r" nonce="n"', "','"),
        ('Digest realm "r"', "'='"),
        ('Digest realm=, nonce="n"', "value"),
        ('Digest realm="r", nonce="n", stale=maybe', "stale"),
        ('Digest realm="r", nonce="n", algorithm=AKAv1-MD5', "algorithm"),
        ('Digest realm="r", nonce="n", qop="auth;x"', "qop"),
        ('Digest realm="a\nb", nonce="n"', "control"),
        ('Digest realm="a\\\rb", nonce="n"', "control"),
        ('Digest, realm="r", nonce="n"', "whitespace"),
        ('Digest realm="r", nonce="n", Digest realm="s"', "'='"),
    ],
)
def test_challenge_parse_errors(value: str, reason: str) -> None:
    with pytest.raises(DigestError, match=reason) as info:
        Challenge.parse(value)
    assert info.value.reason


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('Digest realm="r", nonce="n", uri="u", response="x"', "username"),
        ('Digest username="a", realm="r", nonce="n", uri="u"', "response"),
        ('Digest username="a", realm="r", nonce="n", uri="u", response="x", nc=1', "nc"),
        ('Digest username="a", realm="r", nonce="n", uri="u", response="x", nc=0000000g', "nc"),
        ('Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth-conf', "qop"),
        ('Digest username="a", realm="r", nonce="n", uri="u", response="x", userhash=1', "userhash"),
    ],
)
def test_credentials_parse_errors(value: str, reason: str) -> None:
    with pytest.raises(DigestError, match=reason):
        Credentials.parse(value)


def test_surrogates_refused() -> None:
    with pytest.raises(DigestError, match="undecodable"):
        Challenge.parse('Digest realm="\udcff", nonce="n"')
    with pytest.raises(DigestError, match="Unicode"):
        compute_ha1("a\udcff", "r", "p")


def test_serialising_control_characters_refused() -> None:
    with pytest.raises(DigestError, match="control"):
        str(Challenge(realm="r\r\nVia: evil", nonce="n"))
    with pytest.raises(DigestError, match="parameter name"):
        str(Challenge(realm="r", nonce="n", params={"bad name": "x"}))
    with pytest.raises(DigestError, match="nc"):
        str(Credentials(username="a", realm="r", nonce="n", uri="u", response="x", nc="1"))


# --- property tests ----------------------------------------------------------------------------

_PIECES = st.sampled_from(['Digest ', 'realm', 'nonce', 'uri', 'username', 'response', 'qop', 'nc',
                           'algorithm', 'stale', '=', '"', '\\', ',', ' ', '\t', '\r\n ', 'auth',
                           'MD5', 'SHA-256-sess', 'true', '00000001', 'x', '\x00', 'é', '\udcff'])
_NEAR_VALID = st.lists(_PIECES, max_size=30).map("".join)
_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)
_TOKEN = st.from_regex(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,10}", fullmatch=True)


@FUZZ
@given(st.one_of(st.text(max_size=80), st.text(st.characters(exclude_categories=()), max_size=40),
                 _NEAR_VALID))
def test_parsers_raise_only_digest_error(value: str) -> None:
    for parse in (Challenge.parse, Credentials.parse):
        try:
            parsed = parse(value)
        except DigestError as exc:
            assert exc.reason
        else:
            assert parse(str(parsed)) == parsed


@FUZZ
@given(st.one_of(st.text(max_size=80), _NEAR_VALID))
def test_verify_never_raises_on_text(value: str) -> None:
    server = make_server()
    assert server.verify(value, METHOD, make_store().lookup).outcome in (
        VerifyOutcome.MALFORMED, VerifyOutcome.BAD_CREDENTIALS)


@FUZZ
@given(realm=_TEXT, nonce=_TEXT, opaque=st.none() | _TEXT, stale=st.booleans(),
       algorithm=st.none() | st.sampled_from(Algorithm), qop=st.lists(st.sampled_from(["auth", "auth-int", "x"])),
       domain=st.lists(st.from_regex(r"[!-~]{1,8}", fullmatch=True), max_size=3),
       params=st.dictionaries(_TOKEN.map(str.lower).filter(lambda n: n not in {
           "realm", "nonce", "opaque", "stale", "algorithm", "qop", "domain", "charset", "userhash"}),
           _TEXT, max_size=3))
def test_challenge_round_trip(realm: str, nonce: str, opaque: str | None, stale: bool,
                              algorithm: Algorithm | None, qop: list[str], domain: list[str],
                              params: dict[str, str]) -> None:
    challenge = Challenge(realm=realm, nonce=nonce, opaque=opaque, stale=stale, algorithm=algorithm,
                          qop=tuple(qop), domain=tuple(domain), params=params)
    assert Challenge.parse(str(challenge)) == challenge


@FUZZ
@given(username=_TEXT, realm=_TEXT, nonce=_TEXT, uri=st.none() | _TEXT, cnonce=st.none() | _TEXT,
       qop=st.none() | st.sampled_from(Qop), nc=st.none() | st.from_regex(r"[0-9a-fA-F]{8}", fullmatch=True),
       algorithm=st.none() | st.sampled_from(Algorithm))
def test_credentials_round_trip(username: str, realm: str, nonce: str, uri: str | None, cnonce: str | None,
                                qop: Qop | None, nc: str | None, algorithm: Algorithm | None) -> None:
    creds = Credentials(username=username, realm=realm, nonce=nonce, uri=uri, response="ab12", cnonce=cnonce,
                        qop=qop, nc=nc, algorithm=algorithm)
    assert Credentials.parse(str(creds)) == creds


@FUZZ
@given(username=_TEXT, password=_TEXT, uri=_TEXT.filter(bool), algorithm=st.sampled_from(Algorithm),
       nc=st.integers(1, 0xFFFFFFFF))
def test_any_user_round_trips(username: str, password: str, uri: str, algorithm: Algorithm, nc: int) -> None:
    server = make_server(algorithms=(algorithm,))
    store = HA1Store()
    store.add_password(username, REALM, password, algorithms=(algorithm,))
    creds = answer_challenge(server.challenges()[0], "OPTIONS", uri, username, password=password, nc=nc)
    assert server.verify(str(creds), "OPTIONS", store.lookup).ok
