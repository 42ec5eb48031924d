"""RFC 3261 section 16 proxy steps, one at a time."""

from imsbox.sip import Response, parse, parse_uri
from imsbox.sip.proxy_core import (
    ProxyIdentity, ResponseContext, check_request, forward_copy, loop_hash,
    order_targets, preprocess_route,
)

ME = ProxyIdentity({("127.0.0.1", 5070), ("proxy.test", None)},
                   record_route=parse_uri("sip:127.0.0.1:5070;lr"), supported=frozenset({"sec-agree"}))


def req(extra="", uri="sip:bob@b.test", mf="70", method="INVITE"):
    return parse((
        f"{method} {uri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc\r\n"
        f"Max-Forwards: {mf}\r\nTo: <sip:bob@b.test>\r\nFrom: <sip:a@a.test>;tag=1\r\n"
        f"Call-ID: c1\r\nCSeq: 1 {method}\r\n{extra}Content-Length: 0\r\n\r\n").encode())


def test_max_forwards_zero_is_483():
    assert check_request(req(mf="0"), ME).status == 483
    assert check_request(req(mf="1"), ME) is None


def test_proxy_require_unknown_is_420_with_unsupported():
    reply = check_request(req("Proxy-Require: foo, sec-agree\r\n"), ME)
    assert reply.status == 420 and reply.header("Unsupported") == "foo"


def test_loop_detected_only_for_same_request():
    r = req()
    digest = loop_hash(r)
    looped = req(f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{digest}.1\r\n")
    # the looped copy has our Via below the sender's: compute hash on it too
    looped.remove_header("Via")
    looped.add_header("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc")
    looped.add_header("Via", f"SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{loop_hash(looped)}.1")
    assert check_request(looped, ME).status == 482
    # a spiral: same proxy, different Request-URI -> different hash, no loop
    spiral = req(f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{digest}.1\r\n",
                 uri="sip:carol@c.test")
    assert check_request(spiral, ME) is None


def test_own_route_is_popped_and_strict_previous_hop_undone():
    r = req("Route: <sip:127.0.0.1:5070;lr>, <sip:next.test;lr>\r\n")
    preprocess_route(r, ME)
    assert [str(x.uri) for x in r.route] == ["sip:next.test;lr"]
    strict = req("Route: <sip:next.test;lr>, <sip:bob@b.test>\r\n", uri="sip:127.0.0.1:5070;lr")
    preprocess_route(strict, ME)
    assert str(strict.uri) == "sip:bob@b.test"
    assert [str(x.uri) for x in strict.route] == ["sip:next.test;lr"]


def test_forward_copy_decrements_and_record_routes():
    r = req()
    out = forward_copy(r, parse_uri("sip:bob@10.0.0.2:5080"), ME, record_route=True)
    assert out.max_forwards == 69 and str(out.uri) == "sip:bob@10.0.0.2:5080"
    assert str(out.record_route[0].uri) == "sip:127.0.0.1:5070;lr"
    assert r.max_forwards == 70 and not r.record_route  # original untouched


def test_forward_copy_path_for_register_and_strict_fixup():
    reg = req(method="REGISTER", uri="sip:b.test")
    out = forward_copy(reg, None, ME, record_route=True, path=True)
    assert out.path and not out.record_route
    strict = req("Route: <sip:strict.test>, <sip:other.test;lr>\r\n")
    out = forward_copy(strict, None, ME, record_route=False)
    assert str(out.uri) == "sip:strict.test"
    assert [str(x.uri) for x in out.route] == ["sip:other.test;lr", "sip:bob@b.test"]


def test_order_targets_by_q():
    a, b, c = (parse_uri(f"sip:{n}@x.test") for n in "abc")
    assert order_targets([(a, 0.5), (b, 1.0), (c, 0.5)]) == [[b], [a, c]]


def resp(status, extra=""):
    r = req()
    out = Response.for_request(r, status)
    for line in filter(None, extra.split("\n")):
        name, _, value = line.partition(": ")
        out.add_header(name, value)
    return out


def test_best_response_prefers_lowest_class_and_aggregates_challenges():
    ctx = ResponseContext("INVITE")
    for key in (1, 2, 3):
        ctx.add_branch(key)
    forwarded, cancel = ctx.on_response(1, resp(180))
    assert [r.status for r in forwarded] == [180] and not cancel
    assert ctx.on_response(1, resp(100)) == ([], False)  # 100 is hop-by-hop
    forwarded, cancel = ctx.on_response(1, resp(486))
    assert forwarded == [] and not cancel
    ctx.on_response(2, resp(401, 'WWW-Authenticate: Digest realm="a", nonce="1"'))
    assert ctx.final_response() is None  # branch 3 still pending
    ctx.on_response(3, resp(407, 'Proxy-Authenticate: Digest realm="b", nonce="2"'))
    best = ctx.final_response()
    assert best.status == 401
    assert best.headers.get_all("WWW-Authenticate") == ['Digest realm="a", nonce="1"']
    assert best.headers.get_all("Proxy-Authenticate") == ['Digest realm="b", nonce="2"']


def test_2xx_forwarded_at_once_and_others_cancelled():
    ctx = ResponseContext("INVITE")
    ctx.add_branch(1)
    ctx.add_branch(2)
    forwarded, cancel = ctx.on_response(2, resp(200))
    assert [r.status for r in forwarded] == [200] and cancel
    forwarded, cancel = ctx.on_response(1, resp(200))
    assert [r.status for r in forwarded] == [200] and not cancel  # every 2xx goes up
    assert ctx.final_response() is None


def test_6xx_cancels_and_wins_and_503_becomes_500():
    ctx = ResponseContext("INVITE")
    ctx.add_branch(1)
    ctx.add_branch(2)
    assert ctx.on_response(1, resp(603))[1] is True
    ctx.on_response(2, resp(404))
    assert ctx.final_response().status == 603
    ctx = ResponseContext("MESSAGE")
    ctx.add_branch(1)
    ctx.on_response(1, resp(503))
    assert ctx.final_response().status == 500


def test_timeouts_only_give_408():
    ctx = ResponseContext("OPTIONS")
    ctx.add_branch(1)
    ctx.on_timeout(1)
    assert ctx.final_response().status == 408


def test_preprocess_route_returns_the_route_it_popped():
    r = req("Route: <sip:orig@127.0.0.1:5070;lr;odi=x1>, <sip:next.test;lr>\r\n")
    popped = preprocess_route(r, ME)
    assert popped is not None and popped.user == "orig" and popped.param("odi") == "x1"
    assert preprocess_route(req("Route: <sip:next.test;lr>\r\n"), ME) is None
    assert preprocess_route(req(), ME) is None


def test_best_of_ranks_only_the_branches_asked_for():
    ctx = ResponseContext("INVITE")
    for key in (0, 1, 2):
        ctx.add_branch(key)
    ctx.on_response(0, resp(404))   # a first target set
    ctx.on_response(1, resp(503))   # a second one, serial after a failure route
    ctx.on_timeout(2)
    assert ctx.best_of([0]).status == 404
    assert ctx.best_of([1, 2]).status == 408   # 4xx ranks before 5xx
    assert ctx.best_of([]) is None
    assert ctx.final_response().status == 404  # upstream: the best of all branches
