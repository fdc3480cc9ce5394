"""SPEC §3.1 POST /api/relay/broadcast/ready, /heartbeat and /stop through
the gateway: the answers, the candidates a peer record shows, what
PostgreSQL (broadcasts, peer_events) and Redis (mm:presence:<peer_id>,
mm:presence:deadlines) hold, and that every rejected request is a 4xx in the
one error shape that changes nothing (§8).

Expiry with a short TTL: test_presence_expiry.py; Redis losing its data or
going away: test_presence_recovery.py; lookup and list: test_discovery.py."""

import concurrent.futures
import time

import pytest

import mm
from mm import cand

TTL = 3600  # the shared tracker runs on the defaults
OBSERVED = "127.0.0.1"


@pytest.fixture(scope="module")
def observer(certs, curl, gateway):
    """A registered peer that looks the others up."""
    return mm.register(curl, gateway, certs.self_signed(mm.uniq_email("observer")))


def _lookup_record(curl, gateway, observer, cert, **kw):
    r = mm.lookup(curl, gateway, observer, email=cert.email)
    return mm.assert_peer_record(mm.assert_json(r, 200), cert, **kw)


def _assert_presence(stores, peer_id, ttl=TTL):
    """mm:presence:<peer_id> lives with TTL ~ ttl, and the deadline index
    holds the peer at ~ (now + ttl) * 1000."""
    p = stores.presence(peer_id)
    assert p["exists"], f"no mm:presence:{peer_id} while broadcasting"
    assert ttl - 10 <= p["ttl"] <= ttl, f"TTL of mm:presence:{peer_id} is {p['ttl']}, expected ~{ttl}"
    assert p["deadline"] is not None, f"{peer_id} missing from mm:presence:deadlines"
    expected = (time.time() + ttl) * 1000
    assert abs(p["deadline"] - expected) < 10_000, f"deadline score {p['deadline']:.0f}, expected ~{expected:.0f}"
    return p


def _assert_no_presence(stores, peer_id):
    p = stores.presence(peer_id)
    assert not p["exists"] and p["ttl"] == -2, f"mm:presence:{peer_id} still exists: {p}"
    assert p["deadline"] is None, f"{peer_id} still in mm:presence:deadlines (score {p['deadline']})"


# --- the whole flow ------------------------------------------------------------------


def test_full_flow(gateway, stores, curl, certs, observer):
    alice = mm.register(curl, gateway, certs.self_signed(mm.uniq_email("alice")), display_name="Alice")
    t0 = time.time()
    r = mm.ready(curl, gateway, alice, 54321, ["192.168.1.50", "10.0.0.7:6000", "[2001:db8::5]:7000"])
    ans = mm.assert_ready(r, alice, ttl=TTL)
    expected = [
        cand("192.168.1.50", 54321, "private"),
        cand("10.0.0.7", 6000, "private"),
        cand("2001:db8::5", 7000, "public"),
        cand(OBSERVED, 54321, "loopback", "observed"),
    ]

    # PostgreSQL: one broadcasts row, one 'online' event; Redis: presence + deadline.
    row = stores.broadcast(alice.peer_id)
    assert row is not None, "no broadcasts row after ready"
    assert row["port"] == 54321 and row["candidates"] == expected, row
    assert row["observed_address"] == ans["observed_address"] == OBSERVED, row
    assert stores.events(alice.peer_id) == ["registered", "online"]
    _assert_presence(stores, alice.peer_id)

    # Another registered peer finds alice by email and by peer_id.
    by_email = _lookup_record(curl, gateway, observer, alice, port=54321, display_name="Alice", candidates=expected)
    assert abs(mm.parse_utc(by_email["online_since"]) - t0) < 5, by_email
    assert abs(mm.parse_utc(by_email["last_heartbeat"]) - t0) < 5, by_email
    assert TTL - 10 <= by_email["expires_in"] <= TTL, by_email
    r = mm.lookup(curl, gateway, observer, peer_id=alice.peer_id)
    by_id = mm.assert_peer_record(mm.assert_json(r, 200), alice, port=54321, display_name="Alice",
                                  candidates=expected)
    assert by_id["online_since"] == by_email["online_since"], (by_id, by_email)
    # A peer may look itself up too.
    mm.assert_peer_record(mm.assert_json(mm.lookup(curl, gateway, alice, email=alice.email), 200), alice,
                          candidates=expected, display_name="Alice")

    # Heartbeat: a full TTL again, the deadline moves on, nothing else changes.
    before = stores.presence(alice.peer_id)
    r = mm.heartbeat(curl, gateway, alice)
    assert mm.assert_json(r, 200) == {"expires_in": TTL}, r
    after = _assert_presence(stores, alice.peer_id)
    assert after["deadline"] > before["deadline"], f"heartbeat did not move the deadline: {before} -> {after}"
    rec = _lookup_record(curl, gateway, observer, alice, candidates=expected, display_name="Alice")
    assert rec["online_since"] == by_email["online_since"], "a heartbeat must not change online_since"
    assert mm.parse_utc(rec["last_heartbeat"]) >= mm.parse_utc(by_email["last_heartbeat"]), (rec, by_email)
    assert stores.broadcast(alice.peer_id)["started_at"] == row["started_at"]
    assert stores.events(alice.peer_id) == ["registered", "online"], "a heartbeat writes no event"

    # Stop: gone everywhere, at once.
    r = mm.stop(curl, gateway, alice)
    assert mm.assert_json(r, 200) == {}, r
    for q in ({"email": alice.email}, {"peer_id": alice.peer_id}):
        mm.assert_error(mm.lookup(curl, gateway, observer, **q), 404, "not_found")
    assert stores.broadcast(alice.peer_id) is None, "stop must delete the broadcasts row"
    _assert_no_presence(stores, alice.peer_id)
    assert stores.events(alice.peer_id) == ["registered", "online", "stopped"]

    # Heartbeat after stop: 404 not_broadcasting; stop again: 200 {}; both change nothing.
    with stores.unchanged(deep=True):
        mm.assert_error(mm.heartbeat(curl, gateway, alice), 404, "not_broadcasting")
        r = mm.stop(curl, gateway, alice)
        assert mm.assert_json(r, 200) == {}, r
    assert stores.events(alice.peer_id, "stopped") == ["stopped"], "a second stop writes no event"

    # Ready again starts a new broadcast (a second 'online').
    mm.assert_ready(mm.ready(curl, gateway, alice, 54322), alice, ttl=TTL)
    rec = _lookup_record(curl, gateway, observer, alice, port=54322, display_name="Alice",
                         candidates=[cand(OBSERVED, 54322, "loopback", "observed")])
    assert stores.events(alice.peer_id) == ["registered", "online", "stopped", "online"]
    assert mm.assert_json(mm.stop(curl, gateway, alice), 200) == {}


def test_ready_replaces_a_live_broadcast(gateway, stores, curl, registered, observer):
    c = registered()
    mm.assert_ready(mm.ready(curl, gateway, c, 1000, ["10.1.1.1"]), c, ttl=TTL)
    first = stores.broadcast(c.peer_id)
    rec1 = _lookup_record(curl, gateway, observer, c, port=1000)
    mm.assert_ready(mm.ready(curl, gateway, c, 2000, ["192.168.7.7:2222"]), c, ttl=TTL)
    rec2 = _lookup_record(curl, gateway, observer, c, port=2000, candidates=[
        cand("192.168.7.7", 2222, "private"), cand(OBSERVED, 2000, "loopback", "observed")])
    second = stores.broadcast(c.peer_id)
    assert second["port"] == 2000 and second["candidates"] == rec2["candidates"], second
    assert second["started_at"] == first["started_at"], "a replacing ready keeps started_at (online_since)"
    assert rec2["online_since"] == rec1["online_since"]
    assert stores.events(c.peer_id, "online") == ["online"], "a replacing ready is not a new 'online'"
    _assert_presence(stores, c.peer_id)
    mm.stop(curl, gateway, c)


def test_concurrent_readies_start_one_broadcast(gateway, stores, curl, registered):
    c = registered()
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(lambda i: mm.ready(curl, gateway, c, 3000 + i), range(8)))
    for r in results:
        mm.assert_ready(r, c, ttl=TTL)
    assert stores.events(c.peer_id, "online") == ["online"], f"one broadcast started: {stores.events(c.peer_id)}"
    assert int(stores.sql_value("SELECT count(*) FROM broadcasts WHERE peer_id = :'p'", p=c.peer_id)) == 1
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        results = list(ex.map(lambda _: mm.stop(curl, gateway, c), range(4)))
    for r in results:
        assert mm.assert_json(r, 200) == {}, r
    assert stores.events(c.peer_id, "stopped") == ["stopped"], f"one broadcast stopped: {stores.events(c.peer_id)}"
    assert stores.broadcast(c.peer_id) is None
    _assert_no_presence(stores, c.peer_id)


@pytest.mark.parametrize(
    "how",
    [
        {"data": None, "content_type": None},
        {"data": "", "content_type": "application/json"},
        {"data": "", "content_type": None},
        {"data": "{}", "content_type": "application/json"},
        {"data": '{"unknown": [1, 2], "port": "ignored"}', "content_type": "application/json"},
    ],
    ids=["no_body", "empty_json", "empty_no_type", "empty_object", "unknown_fields"],
)
def test_heartbeat_bodies(gateway, curl, registered, how):
    c = registered()
    mm.assert_ready(mm.ready(curl, gateway, c, 4000), c, ttl=TTL)
    r = curl(gateway.url(mm.HEARTBEAT), cert=c, **how)
    assert mm.assert_json(r, 200) == {"expires_in": TTL}, r
    mm.stop(curl, gateway, c)


def test_heartbeat_interval_has_jitter(gateway, curl, registered):
    """1800 s (TTL / 2) minus up to 10%: several readies do not all get the
    same value."""
    c = registered()
    seen = [mm.assert_ready(mm.ready(curl, gateway, c, 5000), c, ttl=TTL, interval=1800)["heartbeat_interval"]
            for _ in range(8)]
    assert len(set(seen)) > 1, f"no jitter in heartbeat_interval: {seen}"
    mm.stop(curl, gateway, c)


def test_ttl_and_heartbeat_interval_settings(stores, curl, certs, start_tracker, start_gateway):
    t = start_tracker(MM_PRESENCE_TTL=600, MM_HEARTBEAT_INTERVAL=100)
    g = start_gateway(tracker=t)
    c = mm.register(curl, g, certs.self_signed(mm.uniq_email("ttl")))
    for _ in range(3):
        mm.assert_ready(mm.ready(curl, g, c, 6000), c, ttl=600, interval=100)
    _assert_presence(stores, c.peer_id, ttl=600)
    assert mm.assert_json(mm.heartbeat(curl, g, c), 200) == {"expires_in": 600}
    _assert_presence(stores, c.peer_id, ttl=600)
    rec = mm.assert_json(mm.lookup(curl, g, c, peer_id=c.peer_id), 200)
    mm.assert_peer_record(rec, c, ttl=600)
    assert 590 <= rec["expires_in"] <= 600, rec
    assert mm.assert_json(mm.stop(curl, g, c), 200) == {}
    _assert_no_presence(stores, c.peer_id)


# --- candidates --------------------------------------------------------------------

P = 40000


@pytest.mark.parametrize(
    "addresses,expected",
    [
        (None, [cand(OBSERVED, P, "loopback", "observed")]),
        ([], [cand(OBSERVED, P, "loopback", "observed")]),
        (["192.168.1.50", "10.0.0.7:6000", "[2001:db8::5]:7000", "2001:db8::6"],
         [cand("192.168.1.50", P, "private"), cand("10.0.0.7", 6000, "private"), cand("2001:db8::5", 7000, "public"),
          cand("2001:db8::6", P, "public"), cand(OBSERVED, P, "loopback", "observed")]),
        # "my observed address": with the broadcast port it is the observed candidate itself
        (["0.0.0.0"], [cand(OBSERVED, P, "loopback", "observed")]),
        (["::"], [cand(OBSERVED, P, "loopback", "observed")]),
        (["10.0.0.1", "0.0.0.0:6000"],
         [cand("10.0.0.1", P, "private"), cand(OBSERVED, 6000, "loopback", "observed"),
          cand(OBSERVED, P, "loopback", "observed")]),
        (["[::]:7000"], [cand(OBSERVED, 7000, "loopback", "observed"), cand(OBSERVED, P, "loopback", "observed")]),
        # duplicates (same ip and port) are dropped, the first wins
        (["127.0.0.1"], [cand(OBSERVED, P, "loopback")]),
        (["10.0.0.7", f"10.0.0.7:{P}", "10.0.0.7:6000", "10.0.0.7", "10.0.0.7:6000"],
         [cand("10.0.0.7", P, "private"), cand("10.0.0.7", 6000, "private"), cand(OBSERVED, P, "loopback", "observed")]),
        # IPv4-mapped IPv6 is shown (and compared) as IPv4
        (["::ffff:192.168.1.9", "[::ffff:10.1.1.1]:7000", "192.168.1.9"],
         [cand("192.168.1.9", P, "private"), cand("10.1.1.1", 7000, "private"),
          cand(OBSERVED, P, "loopback", "observed")]),
        # IPv6 in its canonical text form
        (["2001:DB8:0:0::5", "[2001:0db8::0005]:7000", "2001:db8::5"],
         [cand("2001:db8::5", P, "public"), cand("2001:db8::5", 7000, "public"),
          cand(OBSERVED, P, "loopback", "observed")]),
        # the extremes of the port range
        (["10.0.0.1:1", "10.0.0.1:65535", "[fd00::1]:65535"],
         [cand("10.0.0.1", 1, "private"), cand("10.0.0.1", 65535, "private"), cand("fd00::1", 65535, "private"),
          cand(OBSERVED, P, "loopback", "observed")]),
    ],
    ids=["absent", "empty", "reported_in_order", "unspecified_v4", "unspecified_v6", "unspecified_with_port",
         "unspecified_v6_with_port", "reported_equals_observed", "duplicates", "v4_mapped", "v6_canonical",
         "port_extremes"],
)
def test_candidates(gateway, stores, curl, registered, observer, addresses, expected):
    c = registered()
    mm.assert_ready(mm.ready(curl, gateway, c, P, addresses), c, ttl=TTL)
    _lookup_record(curl, gateway, observer, c, port=P, candidates=expected)
    assert stores.broadcast(c.peer_id)["candidates"] == expected, "broadcasts.candidates should be what lookups show"
    mm.stop(curl, gateway, c)


SCOPE_CASES = {
    "loopback": ["127.0.0.1:1001", "127.5.6.7", "::1"],
    "link-local": ["169.254.0.1", "169.254.255.254", "fe80::1", "fe80::abcd:1234", "febf::1"],
    "private": ["10.0.0.1", "10.255.255.254", "172.16.0.1", "172.31.255.254", "192.168.0.1", "192.168.255.254",
                "100.64.0.1", "100.127.255.254", "fc00::1", "fd12:3456::1"],
    "public": ["8.8.8.8", "1.1.1.1", "172.15.255.254", "172.32.0.1", "100.63.255.254", "100.128.0.1",
               "192.169.0.1", "11.0.0.1", "203.0.113.5", "2001:db8::5", "2606:4700::1111"],
}


@pytest.mark.parametrize("scope", list(SCOPE_CASES))
def test_candidate_scopes(gateway, curl, registered, observer, scope):
    c = registered()
    addrs = SCOPE_CASES[scope]
    mm.assert_ready(mm.ready(curl, gateway, c, P, addrs), c, ttl=TTL)
    rec = _lookup_record(curl, gateway, observer, c)
    got = {(x["ip"], x["port"]): x["scope"] for x in rec["candidates"] if x["source"] == "reported"}
    for a in addrs:
        ip, port = (a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1])) if a.count(":") == 1 else (a, P)
        assert got.get((ip, port)) == scope, f"{a}: scope {got.get((ip, port))!r}, expected {scope!r}; {rec!r}"
    mm.stop(curl, gateway, c)


def test_sixteen_addresses_are_accepted(gateway, stores, curl, registered, observer):
    c = registered()
    addrs = [f"10.9.0.{i}" for i in range(1, 17)]
    mm.assert_ready(mm.ready(curl, gateway, c, P, addrs), c, ttl=TTL)
    expected = [cand(a, P, "private") for a in addrs] + [cand(OBSERVED, P, "loopback", "observed")]
    _lookup_record(curl, gateway, observer, c, candidates=expected)
    mm.stop(curl, gateway, c)


# --- the observed address, through a PROXY protocol header -----------------------------


@pytest.fixture
def proxy_gateway(start_gateway):
    return start_gateway(name="mm-gateway-bproxy", MM_TRUST_PROXY_PROTOCOL=1)


def test_observed_address_and_its_update_by_heartbeat(proxy_gateway, server_ca, stores, curl, registered, observer):
    g = proxy_gateway
    c = registered()

    def req(method, path, body=None, *, src):
        return mm.proxied(g, server_ca.cert, c, method, path, body, src_ip=src)

    r = req("POST", mm.READY, {"port": 7777, "addresses": ["192.168.1.50", "0.0.0.0:6000"]}, src="203.0.113.5")
    mm.assert_ready(r, c, ttl=TTL, observed="203.0.113.5")
    reported = [cand("192.168.1.50", 7777, "private"), cand("203.0.113.5", 6000, "public", "observed")]
    _lookup_record(curl, g, observer, c, port=7777,
                   candidates=reported + [cand("203.0.113.5", 7777, "public", "observed")])
    row = stores.broadcast(c.peer_id)
    assert row["observed_address"] == "203.0.113.5", row

    # The same source again: the row is not rewritten.
    assert mm.assert_json(req("POST", mm.HEARTBEAT, src="203.0.113.5"), 200) == {"expires_in": TTL}
    assert stores.broadcast(c.peer_id) == row, "a heartbeat from the same address should leave the row alone"

    # A new source address (the peer's NAT changed): the observed candidate follows.
    assert mm.assert_json(req("POST", mm.HEARTBEAT, src="198.51.100.7"), 200) == {"expires_in": TTL}
    rec = _lookup_record(curl, g, observer, c, port=7777)
    observed = [x for x in rec["candidates"] if x["source"] == "observed" and x["port"] == 7777]
    assert observed == [cand("198.51.100.7", 7777, "public", "observed")], rec
    assert rec["candidates"][0] == reported[0], rec
    assert "203.0.113.5" not in [x["ip"] for x in rec["candidates"] if x["port"] == 7777], rec
    row2 = stores.broadcast(c.peer_id)
    assert row2["observed_address"] == "198.51.100.7", row2
    assert row2["candidates"] == rec["candidates"], row2
    assert row2["started_at"] == row["started_at"], row2
    assert stores.events(c.peer_id, "online") == ["online"]

    # IPv6 and private sources.
    r = req("POST", mm.READY, {"port": 7778}, src="2001:db8::77")
    mm.assert_ready(r, c, ttl=TTL, observed="2001:db8::77")
    _lookup_record(curl, g, observer, c, candidates=[cand("2001:db8::77", 7778, "public", "observed")])
    r = req("POST", mm.READY, {"port": 7779}, src="10.20.30.40")
    mm.assert_ready(r, c, ttl=TTL, observed="10.20.30.40")
    _lookup_record(curl, g, observer, c, candidates=[cand("10.20.30.40", 7779, "private", "observed")])
    assert mm.assert_json(req("POST", mm.STOP, src="10.20.30.40"), 200) == {}


def test_client_cannot_claim_an_address_or_identity(gateway, stores, curl, registered, observer):
    """The gateway drops incoming X-MM-* headers (SPEC §2), and forwarding
    headers from a client are no source of truth either."""
    c, other = registered(), registered()
    hdrs = ["X-MM-Client-Addr: 203.0.113.9:1234", "X-MM-Peer-Id: " + other.peer_id,
            "X-MM-Peer-Email: " + other.email, "X-Forwarded-For: 203.0.113.10", "X-Real-IP: 203.0.113.11",
            "Forwarded: for=203.0.113.12"]
    mm.assert_ready(mm.ready(curl, gateway, c, 4321, headers=hdrs), c, ttl=TTL, observed=OBSERVED)
    _lookup_record(curl, gateway, observer, c, candidates=[cand(OBSERVED, 4321, "loopback", "observed")])
    assert mm.assert_json(mm.heartbeat(curl, gateway, c, headers=hdrs), 200) == {"expires_in": TTL}
    assert stores.broadcast(c.peer_id)["observed_address"] == OBSERVED
    assert stores.broadcast(other.peer_id) is None
    mm.stop(curl, gateway, c)


# --- bad input: 400 invalid_field, nothing changed ------------------------------------

GOOD = ["10.0.0.1", "192.168.0.1"]

BAD_BODIES = [
    # port
    ({"port": 0}, "port"),
    ({"port": 70000}, "port"),
    ({"port": 65536}, "port"),
    ({"port": -1}, "port"),
    ({"port": "54321"}, "port"),
    ({"port": 1.5}, "port"),
    ({"port": None}, "port"),
    ({"port": True}, "port"),
    ({"port": [54321]}, "port"),
    ({"port": {"n": 1}}, "port"),
    ({}, "port"),
    ({"addresses": ["10.0.0.1"]}, "port"),
    # addresses as a whole
    ({"port": 1234, "addresses": {}}, "addresses"),
    ({"port": 1234, "addresses": "x"}, "addresses"),
    ({"port": 1234, "addresses": "10.0.0.1"}, "addresses"),
    ({"port": 1234, "addresses": 5}, "addresses"),
    ({"port": 1234, "addresses": True}, "addresses"),
    ({"port": 1234, "addresses": [f"10.8.0.{i}" for i in range(1, 18)]}, "addresses"),
] + [
    # one bad entry, at index 2
    ({"port": 1234, "addresses": GOOD + [bad]}, "addresses[2]")
    for bad in [
        5, None, {}, [], True,
        "999.1.1.1", "1.2.3", "1.2.3.4.5", "1.2.3.4:", "1.2.3.4:abc", "1.2.3.4:-1",
        "fe80::1%eth0", "[fe80::1%eth0]:80", "fe80::1%25eth0",
        "224.0.0.1", "224.0.0.1:80", "239.255.255.250", "ff02::1", "[ff02::1]:80", "ff05::1:3",
        "255.255.255.255", "240.0.0.1", "0.1.2.3",
        "1.2.3.4:0", "1.2.3.4:70000", "1.2.3.4:65536", "[2001:db8::5]:0", "[2001:db8::5]:70000",
        "example.com", "localhost", "", " ", "2001:db8::g", "::ffff:999.1.1.1",
    ]
]


def _bad_id(case):
    body, field = case
    return field + "=" + (repr(body.get("addresses", [None] * 3)[2]) if field == "addresses[2]"
                          else repr(body)[:40])


@pytest.fixture(scope="module")
def live(certs, curl, gateway):
    """A peer that broadcasts: bad readies must leave its broadcast alone."""
    c = mm.register(curl, gateway, certs.self_signed(mm.uniq_email("live")))
    mm.assert_ready(mm.ready(curl, gateway, c, 9000, ["10.0.0.9"]), c, ttl=TTL)
    yield c
    mm.stop(curl, gateway, c)


@pytest.mark.parametrize("case", BAD_BODIES, ids=[_bad_id(c) for c in BAD_BODIES])
def test_bad_ready_is_400_and_changes_nothing(gateway, stores, curl, live, case):
    """deep: also every Redis value, so the live broadcast's presence,
    deadline and row all stay as they were."""
    body, field = case
    with stores.unchanged(deep=True):
        r = mm.ready(curl, gateway, live, body=body)
    mm.assert_error(r, 400, "invalid_field", field=field)


def test_bad_readies_of_a_silent_peer_change_nothing(gateway, stores, curl, registered):
    c = registered()
    with stores.unchanged(deep=True):
        for body, field in BAD_BODIES:
            r = mm.ready(curl, gateway, c, body=body)
            mm.assert_error(r, 400, "invalid_field", field=field)
    assert stores.broadcast(c.peer_id) is None
    assert stores.events(c.peer_id) == ["registered"]


@pytest.mark.parametrize(
    "data,content_type,status,codes",
    [
        ("{", "application/json", 400, ("invalid_json",)),
        ('{"port": 1234', "application/json", 400, ("invalid_json",)),
        ("[1234]", "application/json", 400, ("invalid_json", "invalid_field")),
        ("1234", "application/json", 400, ("invalid_json", "invalid_field")),
        ("null", "application/json", 400, ("invalid_json", "invalid_field")),
        ('"port"', "application/json", 400, ("invalid_json", "invalid_field")),
        ("", "application/json", 400, ("invalid_field", "invalid_json")),  # no body: no port
        ('{"port": 1234}', "text/plain", 415, ("unsupported_media_type",)),
        ('{"port": 1234, "pad": "' + "x" * 70000 + '"}', "application/json", 413, ("body_too_large",)),
    ],
    ids=["truncated", "unterminated", "array", "number", "null", "string", "empty", "text_plain", "too_large"],
)
def test_malformed_ready_bodies(gateway, stores, curl, live, data, content_type, status, codes):
    with stores.unchanged(deep=True):
        r = curl(gateway.url(mm.READY), cert=live, data=data, content_type=content_type)
        assert r.status == status, r
        mm.assert_error(r, status, r.json()["error"]["code"])
        assert r.json()["error"]["code"] in codes, r


@pytest.mark.parametrize(
    "method,path",
    [("GET", mm.READY), ("PUT", mm.READY), ("GET", mm.HEARTBEAT), ("DELETE", mm.STOP), ("GET", mm.STOP),
     ("POST", mm.LOOKUP + "?email=a@example.com"), ("POST", mm.LIST)],
)
def test_wrong_method_is_405(gateway, stores, curl, live, method, path):
    with stores.unchanged(deep=True):
        r = curl(gateway.url(path), method=method, cert=live, **({"data": "{}"} if method != "GET" else {}))
        mm.assert_error(r, 405, "method_not_allowed")


# --- who may do what --------------------------------------------------------------------


def test_ready_without_registration_is_403(gateway, stores, curl, peer):
    c = peer()
    with stores.unchanged(deep=True):
        for body in ({"port": 1234}, {"port": 1234, "addresses": ["10.0.0.1"]}):
            mm.assert_error(mm.ready(curl, gateway, c, body=body), 403, "not_registered")
    assert stores.broadcast(c.peer_id) is None and stores.peer(c.peer_id) is None


def test_unregistered_heartbeat_and_stop_change_nothing(gateway, stores, curl, peer):
    c = peer()
    with stores.unchanged(deep=True):
        r = mm.heartbeat(curl, gateway, c)
        assert r.status in (403, 404), r
        mm.assert_error(r, r.status, {403: "not_registered", 404: "not_broadcasting"}[r.status])
        r = mm.stop(curl, gateway, c)
        if r.status == 200:
            assert r.json() == {}, r
        else:
            mm.assert_error(r, 403, "not_registered")


def test_silent_peer_heartbeat_is_404_and_stop_is_200(gateway, stores, curl, registered):
    c = registered()
    with stores.unchanged(deep=True):
        mm.assert_error(mm.heartbeat(curl, gateway, c), 404, "not_broadcasting")
        mm.assert_error(mm.heartbeat(curl, gateway, c, json_body={}), 404, "not_broadcasting")
        for _ in range(2):
            assert mm.assert_json(mm.stop(curl, gateway, c), 200) == {}
    assert stores.events(c.peer_id) == ["registered"], "stopping what never started writes no event"


def test_without_client_certificate_is_401(gateway, stores, curl):
    with stores.unchanged(deep=True):
        for path, method in ((mm.READY, "POST"), (mm.HEARTBEAT, "POST"), (mm.STOP, "POST"),
                             (mm.LOOKUP + "?email=a@example.com", "GET"), (mm.LIST, "GET")):
            r = curl(gateway.url(path), method=method, **({"json_body": {"port": 1}} if method == "POST" else {}))
            mm.assert_error(r, 401, "client_certificate_required")
