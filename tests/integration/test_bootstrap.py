"""SPEC §3.2, §4, §7: the bootstrap registry. Broadcasting peers volunteer
as entry points of the gossip network (register, after a TCP connect test
to their gossip port), newcomers discover a random few, and a membership
ends on unregister, on expiry (mm-reaper, like presence) and when the
broadcast ends.

Real processes on stores of the module's own (memberships must not expire
in the shared Redis while other tests compare snapshots): mm-tracker,
mm-bootstrap, mm-reaper and an mm-gateway routing /api/bootstrap to the
registry. Two stacks: `bs` with the default TTLs (3600 s), and `short` with
MM_BOOTSTRAP_TTL=3 and MM_PRESENCE_TTL=4 for expiry. A volunteer's gossip
port is a Python TCP listener on 127.0.0.1 (the gateway sees every client
at 127.0.0.1, its observed address); a closed port is one nobody listens
on; a black-holed one is a listener whose accept queue is full, which makes
the kernel drop further SYNs."""

import concurrent.futures
import json
import socket
import time

import pytest

import mm

REGISTER = "/api/bootstrap/register"
UNREGISTER = "/api/bootstrap/unregister"
DISCOVER = "/api/bootstrap/discover"
NODE_KEYS = {"peer_id", "email", "gossip_port", "candidates"}
TTL = 3600
SHORT_TTL = 3  # s, MM_BOOTSTRAP_TTL of the `short` stack
SHORT_PRESENCE = 4  # s, its MM_PRESENCE_TTL
SWEEP = 5  # s, its reaper's MM_SWEEP_INTERVAL
MAX_LAG = 2.0  # s: gone from PostgreSQL within 2 s of the TTL's end, as presence


@pytest.fixture(scope="module")
def bs(run_dir, server_cert):
    with mm.Stack(run_dir, server_cert, "boot", bootstrap_env={}, reaper_env={}) as s:
        yield s


@pytest.fixture(scope="module")
def short(run_dir, server_cert):
    with mm.Stack(run_dir, server_cert, "bootshort", tracker_env={"MM_PRESENCE_TTL": SHORT_PRESENCE},
                  bootstrap_env={"MM_BOOTSTRAP_TTL": SHORT_TTL}, reaper_env={"MM_SWEEP_INTERVAL": SWEEP}) as s:
        yield s


def _parallel(fn, items, workers=8):
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        return list(ex.map(fn, items))


class Gossip:
    """A volunteer's gossip port: a TCP listener on 127.0.0.1 that never
    accepts (the kernel completes handshakes into its queue). full=True
    fills its accept queue, so that further SYNs are dropped: a port that
    never answers."""

    def __init__(self, full=False):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.fillers = []
        self.sock.listen(0 if full else 128)
        if full:
            # backlog 0 holds one connection; a few more make sure
            for _ in range(3):
                c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                c.setblocking(False)
                c.connect_ex(("127.0.0.1", self.port))
                self.fillers.append(c)
            time.sleep(0.1)

    def close(self):
        for c in self.fillers:
            c.close()
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _closed_port():
    return mm.free_port()


def register(curl, g, cert, gossip_port=None, *, body=None, **kw):
    if body is None:
        body = {} if gossip_port is None else {"gossip_port": gossip_port}
    return curl(g.url(REGISTER), cert=cert, json_body=body, **kw)


def unregister(curl, g, cert, **kw):
    return curl(g.url(UNREGISTER), cert=cert, **kw)


def discover(curl, g, cert, limit=None, *, query=None, **kw):
    if query is None:
        query = "" if limit is None else f"limit={limit}"
    return curl(g.url(f"{DISCOVER}?{query}" if query else DISCOVER), method="GET", cert=cert, **kw)


def discovered(curl, g, cert, limit=None):
    body = mm.assert_json(discover(curl, g, cert, limit), 200)
    assert isinstance(body, dict) and set(body) == {"nodes"} and isinstance(body["nodes"], list), body
    for n in body["nodes"]:
        assert isinstance(n, dict) and set(n) == NODE_KEYS, f"node record shape: {n!r}"
    return body["nodes"]


def assert_joined(resp, ttl=TTL):
    body = mm.assert_json(resp, 200)
    assert isinstance(body, dict) and set(body) == {"expires_in", "nodes"}, body
    assert body["expires_in"] == ttl and type(body["expires_in"]) is int, body
    assert isinstance(body["nodes"], list) and len(body["nodes"]) <= 8, body
    for n in body["nodes"]:
        assert isinstance(n, dict) and set(n) == NODE_KEYS, f"node record shape: {n!r}"
    return body


def membership(stores, peer_id):
    """What Redis and PostgreSQL hold for peer_id's membership."""
    key = f"mm:bootstrap:{peer_id}"
    rows = stores.sql("SELECT row_to_json(n)::text FROM bootstrap_nodes n WHERE peer_id = :'p'", p=peer_id)
    score = stores.redis_raw("ZSCORE", "mm:bootstrap:deadlines", peer_id)
    return {
        "value": stores.redis_raw("GET", key) or None,
        "ttl": int(stores.redis_raw("TTL", key)),
        "in_set": stores.redis_raw("SISMEMBER", "mm:bootstrap:nodes", peer_id) == "1",
        "deadline": float(score) if score else None,
        "row": json.loads(rows[0][0]) if rows else None,
    }


def bootstrap_events(stores, peer_id):
    """peer_id's bootstrap_on / bootstrap_off events, in order: [(kind, detail)]."""
    rows = stores.sql("SELECT kind, coalesce(detail::text, 'null') FROM peer_events WHERE peer_id = :'p'"
                      " AND kind LIKE 'bootstrap_%' ORDER BY id", p=peer_id)
    return [(k, json.loads(d)) for k, d in rows]


class Nodes:
    """The module's volunteers, so that a test can end every membership it
    did not make (the distribution test needs exactly its own nodes)."""

    def __init__(self):
        self.live = {}

    def add(self, cert):
        self.live[cert.peer_id] = cert

    def end_all(self, curl, g):
        for c in list(self.live.values()):
            assert mm.assert_json(unregister(curl, g, c), 200) == {}
        self.live.clear()


@pytest.fixture(scope="module")
def nodes():
    return Nodes()


def _peer(certs, curl, g, tag="boot"):
    return mm.register(curl, g, certs.self_signed(mm.uniq_email(tag)))


def _volunteer(certs, curl, g, gossip, nodes=None, *, port=None, addresses=None, gossip_port=None, ttl=TTL,
               presence_ttl=3600):
    """A registered, broadcasting peer (at `port`, default the gossip
    listener's) that joins the registry; returns its cert."""
    c = _peer(certs, curl, g)
    mm.assert_ready(mm.ready(curl, g, c, port or gossip.port, addresses), c, ttl=presence_ttl)
    assert_joined(register(curl, g, c, gossip_port), ttl=ttl)
    if nodes is not None:
        nodes.add(c)
    return c


# --- joining ---------------------------------------------------------------


def test_register_tests_the_port_and_stores_the_membership(bs, certs, curl, nodes):
    g, st = bs.gateway, bs.stores
    with Gossip() as gossip:
        c = _peer(certs, curl, g)
        mm.assert_ready(mm.ready(curl, g, c, gossip.port), c)
        t0 = time.time()
        body = assert_joined(register(curl, g, c))
        nodes.add(c)
        assert c.peer_id not in [n["peer_id"] for n in body["nodes"]], "register listed the caller itself"
        m = membership(st, c.peer_id)
        assert m["value"] == f"{gossip.port} 127.0.0.1:{gossip.port}", m
        assert TTL - 5 <= m["ttl"] <= TTL and m["in_set"], m
        assert m["deadline"] is not None and abs(m["deadline"] / 1000 - (t0 + TTL)) < 5, m
        row = m["row"]
        assert row["gossip_port"] == gossip.port and row["reachable_address"] == f"127.0.0.1:{gossip.port}", row
        assert row["registered_at"] == row["renewed_at"], row
        assert bootstrap_events(st, c.peer_id) == [
            ("bootstrap_on", {"gossip_port": gossip.port, "address": f"127.0.0.1:{gossip.port}"})]


def test_gossip_port_other_than_the_broadcast_port(bs, certs, curl, nodes):
    g, st = bs.gateway, bs.stores
    observer = _peer(certs, curl, g)
    with Gossip() as gossip:
        c = _peer(certs, curl, g)
        mm.assert_ready(mm.ready(curl, g, c, 5000, ["192.168.1.50", "10.0.0.7:6000", "[2001:db8::5]:7000"]), c)
        assert_joined(register(curl, g, c, gossip.port))
        nodes.add(c)
        assert membership(st, c.peer_id)["row"]["gossip_port"] == gossip.port
        rec = [n for n in discovered(curl, g, observer, 50) if n["peer_id"] == c.peer_id]
        assert rec, "the new node is not discovered"
        # every address of the broadcast, with the gossip port, the tested one first
        assert rec[0] == {
            "peer_id": c.peer_id, "email": c.email, "gossip_port": gossip.port,
            "candidates": [
                mm.cand("127.0.0.1", gossip.port, "loopback", "observed"),
                mm.cand("192.168.1.50", gossip.port, "private"),
                mm.cand("10.0.0.7", gossip.port, "private"),
                mm.cand("2001:db8::5", gossip.port, "public"),
            ]}, rec[0]


def test_closed_port_is_422_and_changes_nothing(bs, certs, curl):
    g, st = bs.gateway, bs.stores
    c = _peer(certs, curl, g)
    port = _closed_port()
    mm.assert_ready(mm.ready(curl, g, c, port), c)
    with st.unchanged(deep=True):
        t0 = time.monotonic()
        mm.assert_error(register(curl, g, c), 422, "not_reachable")
        mm.assert_error(register(curl, g, c, _closed_port()), 422, "not_reachable")
    assert time.monotonic() - t0 < 2.0, "a refused port should fail at once, not after the timeout"
    assert membership(st, c.peer_id)["row"] is None


def test_silent_port_times_out_without_blocking_others(bs, certs, curl, nodes):
    """A port that never answers: 422 after the 2 s budget, while the
    registry goes on answering other requests at once."""
    g, st = bs.gateway, bs.stores
    observer = _peer(certs, curl, g)
    with Gossip(full=True) as silent:
        c = _peer(certs, curl, g)
        mm.assert_ready(mm.ready(curl, g, c, silent.port), c)
        with st.unchanged(deep=True):
            with concurrent.futures.ThreadPoolExecutor(1) as ex:
                t0 = time.monotonic()
                fut = ex.submit(register, curl, g, c)
                time.sleep(0.3)
                lat = []
                for _ in range(5):
                    t1 = time.monotonic()
                    discovered(curl, g, observer, 1)
                    lat.append(time.monotonic() - t1)
                r = fut.result()
                took = time.monotonic() - t0
        mm.assert_error(r, 422, "not_reachable")
    assert 1.8 <= took <= 4.0, f"the connect test should give up after about 2 s, took {took:.2f} s"
    assert max(lat) < 1.0, f"discover waited for the connect test: {lat}"


def test_register_needs_a_live_broadcast(bs, certs, curl):
    g, st = bs.gateway, bs.stores
    unregistered = certs.self_signed(mm.uniq_email("nobody"))
    silent = _peer(certs, curl, g)
    with Gossip() as gossip:
        stopped = _peer(certs, curl, g)
        mm.assert_ready(mm.ready(curl, g, stopped, gossip.port), stopped)
        assert mm.assert_json(mm.stop(curl, g, stopped), 200) == {}
        with st.unchanged(deep=True):
            for c in (unregistered, silent, stopped):
                mm.assert_error(register(curl, g, c), 403, "not_broadcasting")
                mm.assert_error(register(curl, g, c, gossip.port), 403, "not_broadcasting")


@pytest.mark.parametrize("body", [
    {"gossip_port": 0}, {"gossip_port": 65536}, {"gossip_port": -1}, {"gossip_port": "7946"},
    {"gossip_port": 79.5}, {"gossip_port": [7946]}, {"gossip_port": True},
])
def test_bad_gossip_port_is_400(bs, certs, curl, body):
    g, st = bs.gateway, bs.stores
    with Gossip() as gossip:
        c = _peer(certs, curl, g)
        mm.assert_ready(mm.ready(curl, g, c, gossip.port), c)
        with st.unchanged(deep=True):
            mm.assert_error(register(curl, g, c, body=body), 400, "invalid_field", field="gossip_port")


@pytest.mark.parametrize("data,code", [("{", "invalid_json"), ("[]", "invalid_json"), ('{"gossip_port": 1,}', "invalid_json")])
def test_bad_register_body_is_400(bs, certs, curl, data, code):
    g, st = bs.gateway, bs.stores
    c = _peer(certs, curl, g)
    with st.unchanged(deep=True):
        mm.assert_error(curl(g.url(REGISTER), cert=c, data=data), 400, code)


def test_renewal_remembers_the_test(bs, certs, curl, nodes):
    """A live membership is renewed without testing again: the port may be
    closed by then. A new gossip port is tested, and a failed test leaves
    the membership as it was."""
    g, st = bs.gateway, bs.stores
    gossip = Gossip()
    c = _volunteer(certs, curl, g, gossip, nodes)
    before = membership(st, c.peer_id)
    gossip.close()
    st.redis_raw("EXPIRE", f"mm:bootstrap:{c.peer_id}", "100")  # so that the renewal visibly restores the TTL
    time.sleep(1.1)
    assert_joined(register(curl, g, c))
    after = membership(st, c.peer_id)
    assert after["ttl"] >= TTL - 5 and after["deadline"] > before["deadline"], (before, after)
    assert after["row"]["registered_at"] == before["row"]["registered_at"], (before, after)
    assert after["row"]["renewed_at"] > before["row"]["renewed_at"], (before, after)
    assert after["value"] == before["value"]
    with st.unchanged(deep=True):
        mm.assert_error(register(curl, g, c, _closed_port()), 422, "not_reachable")
    assert [k for k, _ in bootstrap_events(st, c.peer_id)] == ["bootstrap_on"]
    # a renewal with the explicit same port is the same renewal
    assert_joined(register(curl, g, c, before["row"]["gossip_port"]))
    assert [k for k, _ in bootstrap_events(st, c.peer_id)] == ["bootstrap_on"]


def test_changing_the_gossip_port_tests_it(bs, certs, curl, nodes):
    g, st = bs.gateway, bs.stores
    with Gossip() as first, Gossip() as second:
        c = _volunteer(certs, curl, g, first, nodes)
        assert_joined(register(curl, g, c, second.port))
        m = membership(st, c.peer_id)
        assert m["row"]["gossip_port"] == second.port and m["value"] == f"{second.port} 127.0.0.1:{second.port}", m
        assert [k for k, _ in bootstrap_events(st, c.peer_id)] == ["bootstrap_on"], "a renewal is not a new membership"


# --- leaving -------------------------------------------------------------------


def test_unregister(bs, certs, curl, nodes):
    g, st = bs.gateway, bs.stores
    observer = _peer(certs, curl, g)
    with Gossip() as gossip:
        c = _volunteer(certs, curl, g, gossip)
        assert c.peer_id in [n["peer_id"] for n in discovered(curl, g, observer, 50)]
        assert mm.assert_json(unregister(curl, g, c), 200) == {}
        assert c.peer_id not in [n["peer_id"] for n in discovered(curl, g, observer, 50)]
        m = membership(st, c.peer_id)
        assert m == {"value": None, "ttl": -2, "in_set": False, "deadline": None, "row": None}, m
        assert bootstrap_events(st, c.peer_id)[-1] == ("bootstrap_off", {"reason": "unregistered"})
        # twice, or never a member: 200, nothing changes
        with st.unchanged(deep=True):
            assert mm.assert_json(unregister(curl, g, c), 200) == {}
            assert mm.assert_json(unregister(curl, g, observer), 200) == {}
        assert [k for k, _ in bootstrap_events(st, c.peer_id)] == ["bootstrap_on", "bootstrap_off"]
        # the broadcast goes on; joining again is a new membership
        assert_joined(register(curl, g, c))
        nodes.add(c)
        assert [k for k, _ in bootstrap_events(st, c.peer_id)] == ["bootstrap_on", "bootstrap_off", "bootstrap_on"]


def test_stop_ends_the_membership(bs, certs, curl):
    g, st = bs.gateway, bs.stores
    observer = _peer(certs, curl, g)
    with Gossip() as gossip:
        c = _volunteer(certs, curl, g, gossip)
        assert c.peer_id in [n["peer_id"] for n in discovered(curl, g, observer, 50)]
        assert mm.assert_json(mm.stop(curl, g, c), 200) == {}
        assert c.peer_id not in [n["peer_id"] for n in discovered(curl, g, observer, 50)]
        m = membership(st, c.peer_id)
        assert m == {"value": None, "ttl": -2, "in_set": False, "deadline": None, "row": None}, m
        assert bootstrap_events(st, c.peer_id) == [
            ("bootstrap_on", {"gossip_port": gossip.port, "address": f"127.0.0.1:{gossip.port}"}),
            ("bootstrap_off", {"reason": "stopped"})]
        assert st.events(c.peer_id, "stopped") == ["stopped"]
        # broadcasting again does not bring the membership back
        mm.assert_ready(mm.ready(curl, g, c, gossip.port), c)
        assert c.peer_id not in [n["peer_id"] for n in discovered(curl, g, observer, 50)]
        assert membership(st, c.peer_id)["row"] is None


# --- discovery -------------------------------------------------------------------


@pytest.mark.parametrize("query", ["limit=0", "limit=51", "limit=text", "limit=-1", "limit=", "limit=1.5",
                                   "limit=%205", "limit=+5", "limit=5abc", "limit=99999999999999999999"])
def test_bad_limit_is_400(bs, certs, curl, query):
    g, st = bs.gateway, bs.stores
    c = _peer(certs, curl, g)
    with st.unchanged(deep=True):
        mm.assert_error(discover(curl, g, c, query=query), 400, "invalid_field", field="limit")


def test_discover_needs_a_registered_caller(bs, certs, curl):
    g, st = bs.gateway, bs.stores
    with st.unchanged(deep=True):
        mm.assert_error(discover(curl, g, certs.self_signed(mm.uniq_email("nobody"))), 403, "not_registered")
        r = curl(g.url(DISCOVER), method="GET")
        mm.assert_error(r, 401, "client_certificate_required")


def test_methods_and_paths(bs, certs, curl):
    g = bs.gateway
    c = _peer(certs, curl, g)
    mm.assert_error(curl(g.url(REGISTER), method="GET", cert=c), 405, "method_not_allowed")
    mm.assert_error(curl(g.url(DISCOVER), cert=c, json_body={}), 405, "method_not_allowed")
    mm.assert_error(curl(g.url("/api/bootstrap/nodes"), method="GET", cert=c), 404, "not_found")


def test_distribution_and_limits(bs, certs, curl, nodes):
    """With exactly three live nodes: limit=1 gives each of them over 60
    draws (uniformly: each at least 5 times); larger limits give all of
    them, never the caller; a node sees the two others."""
    g = bs.gateway
    nodes.end_all(curl, g)
    observer = _peer(certs, curl, g)
    assert discovered(curl, g, observer, 50) == [], "nodes of earlier tests are still live"
    gossip = [Gossip() for _ in range(3)]
    try:
        three = _parallel(lambda gs: _volunteer(certs, curl, g, gs, nodes), gossip)
        ids = {c.peer_id for c in three}
        counts = dict.fromkeys(ids, 0)
        for got in _parallel(lambda _: discovered(curl, g, observer, 1), range(60)):
            assert len(got) == 1 and got[0]["peer_id"] in ids, got
            counts[got[0]["peer_id"]] += 1
        assert all(n >= 5 for n in counts.values()), f"not uniform over 60 draws: {sorted(counts.values())}"
        for limit in (None, 2, 3, 8, 50):
            got = [n["peer_id"] for n in discovered(curl, g, observer, limit)]
            want = min(limit or 8, 3)
            assert len(got) == want and len(set(got)) == want and set(got) <= ids, (limit, got)
        for c in three:
            got = {n["peer_id"] for n in discovered(curl, g, c, 50)}
            assert got == ids - {c.peer_id}, "a node should see every other node and never itself"
            assert {n["peer_id"] for n in assert_joined(register(curl, g, c))["nodes"]} == ids - {c.peer_id}
        by_id = {c.peer_id: c for c in three}
        for n in discovered(curl, g, observer, 3):
            c = by_id[n["peer_id"]]
            assert n["email"] == c.email, n
            port = next(gs.port for gs, cc in zip(gossip, three) if cc is c)
            assert n["gossip_port"] == port and n["candidates"] == [mm.cand("127.0.0.1", port, "loopback", "observed")], n
    finally:
        for gs in gossip:
            gs.close()


def test_many_nodes_sample(bs, certs, curl, nodes):
    """50 at most, distinct, random: two draws of 20 from 30 nodes differ."""
    g = bs.gateway
    observer = _peer(certs, curl, g)
    with Gossip() as gossip:
        _parallel(lambda _: _volunteer(certs, curl, g, gossip, nodes), range(30))
        live = {n["peer_id"] for n in discovered(curl, g, observer, 50)}
        assert len(live) >= 30
        draws = [tuple(n["peer_id"] for n in discovered(curl, g, observer, 20)) for _ in range(3)]
        assert all(len(d) == 20 and len(set(d)) == 20 and set(d) <= live for d in draws), draws
        assert len(set(draws)) > 1, "three draws of 20 out of 30+ nodes were identical"


def _reaped(st, peer_id):
    """The reaper is done with a membership: its row is deleted and, after
    that (it leaves the deadline index only once the row is gone), its
    deadline entry too."""
    m = membership(st, peer_id)
    return m["row"] is None and m["deadline"] is None


def test_node_gone_with_its_broadcast(short, certs, curl):
    """A node whose presence expires disappears with it, and mm-reaper ends
    the broadcast and the membership together: one offline and one
    bootstrap_off {"reason": "offline"}."""
    g, st = short.gateway, short.stores
    observer = _peer(certs, curl, g)
    with Gossip() as gossip:
        c = _peer(certs, curl, g)
        mm.assert_ready(mm.ready(curl, g, c, gossip.port), c, ttl=SHORT_PRESENCE)
        t0 = time.monotonic()
        assert_joined(register(curl, g, c), ttl=SHORT_TTL)
        # keep the membership alive past the presence: renewals at 1.5 s and 3 s
        for at in (1.5, 3.0):
            time.sleep(max(0.0, t0 + at - time.monotonic()))
            assert_joined(register(curl, g, c), ttl=SHORT_TTL)
        assert c.peer_id in [n["peer_id"] for n in discovered(curl, g, observer)]
        presence_end = st.presence(c.peer_id)["deadline"] / 1000.0
        mm.wait_for(lambda: c.peer_id not in [n["peer_id"] for n in discovered(curl, g, observer)], timeout=3,
                    interval=0.05, what="the node to disappear with its presence")
        assert time.time() >= presence_end - 0.05, "gone before the presence ran out"
        mm.wait_for(lambda: _reaped(st, c.peer_id), timeout=MAX_LAG + 1, interval=0.05,
                    what="the reaper to end the membership with the broadcast")
        assert time.time() - presence_end <= MAX_LAG + 0.3, "reaped too late"
        m = membership(st, c.peer_id)
        assert m["value"] is None and not m["in_set"] and m["deadline"] is None, m
        assert bootstrap_events(st, c.peer_id)[1:] == [("bootstrap_off", {"reason": "offline"})]
        assert st.events(c.peer_id, "offline") == ["offline"] and st.broadcast(c.peer_id) is None


def test_membership_expires(short, certs, curl):
    """MM_BOOTSTRAP_TTL=3: invisible the moment the key expires, the row
    gone within 2 s of it (mm-reaper, one bootstrap_off), while the
    broadcast goes on; registering again is a new membership, tested
    again."""
    g, st = short.gateway, short.stores
    observer = _peer(certs, curl, g)
    gossip = Gossip()
    c = _peer(certs, curl, g)
    mm.assert_ready(mm.ready(curl, g, c, gossip.port), c, ttl=SHORT_PRESENCE)
    assert_joined(register(curl, g, c), ttl=SHORT_TTL)
    deadline = membership(st, c.peer_id)["deadline"] / 1000.0
    assert c.peer_id in [n["peer_id"] for n in discovered(curl, g, observer)]
    # the broadcast stays: heartbeats until the end of the test
    while time.time() < deadline - 0.3:
        assert mm.assert_json(mm.heartbeat(curl, g, c), 200) == {"expires_in": SHORT_PRESENCE}
        time.sleep(0.5)
    mm.wait_for(lambda: c.peer_id not in [n["peer_id"] for n in discovered(curl, g, observer)], timeout=2,
                interval=0.05, what="the node to disappear when its membership expires")
    assert time.time() >= deadline - 0.05, "gone before its TTL ran out"
    mm.wait_for(lambda: _reaped(st, c.peer_id), timeout=MAX_LAG + 1, interval=0.05,
                what="the reaper to delete the expired membership's row")
    lag = time.time() - deadline
    assert lag <= MAX_LAG + 0.3, f"reaped {lag:.2f} s after the TTL ran out"
    events = bootstrap_events(st, c.peer_id)
    assert [k for k, _ in events] == ["bootstrap_on", "bootstrap_off"], events
    off = events[1][1]
    assert off["reason"] == "expired" and off["found_by"] in ("event", "deadline", "sweep"), off
    assert abs(mm.parse_utc(off["expired_at"]) - deadline) < 0.01, off
    m = membership(st, c.peer_id)
    assert m == {"value": None, "ttl": -2, "in_set": False, "deadline": None, "row": None}, m
    assert st.broadcast(c.peer_id) is not None, "the broadcast should go on"
    m = short.reaper.metrics()
    assert m.get('mm_reaper_bootstrap_reaped_total{reason="%s"}' % off["found_by"], 0) >= 1, m
    # a new membership is tested again: with the port closed, it fails
    assert mm.assert_json(mm.heartbeat(curl, g, c), 200) == {"expires_in": SHORT_PRESENCE}
    gossip.close()
    mm.assert_error(register(curl, g, c), 422, "not_reachable")
    with Gossip() as again:
        assert_joined(register(curl, g, c, again.port), ttl=SHORT_TTL)
        assert [k for k, _ in bootstrap_events(st, c.peer_id)] == ["bootstrap_on", "bootstrap_off", "bootstrap_on"]
    assert mm.assert_json(unregister(curl, g, c), 200) == {}
    assert mm.assert_json(mm.stop(curl, g, c), 200) == {}


def test_reaper_down(short, certs, curl, run_dir):
    """mm-reaper down: a node whose membership expired (and whose deadline
    entry was lost) and a node whose presence expired are invisible at
    once, while their rows stay; when a reaper starts, its sweep and the
    deadline index end both, once each."""
    g, st = short.gateway, short.stores
    observer = _peer(certs, curl, g)
    short.reaper.stop_checked()
    try:
        with Gossip() as gx, Gossip() as gy:
            x, y = _peer(certs, curl, g), _peer(certs, curl, g)
            for c, gs in ((x, gx), (y, gy)):
                mm.assert_ready(mm.ready(curl, g, c, gs.port), c, ttl=SHORT_PRESENCE)
            t0 = time.monotonic()
            for c in (x, y):
                assert_joined(register(curl, g, c), ttl=SHORT_TTL)
            st.redis_raw("ZREM", "mm:bootstrap:deadlines", x.peer_id)
            # x's broadcast goes on (heartbeats), its membership lapses at 3 s;
            # y's membership goes on (renewals), its broadcast lapses at 4 s
            for at in (1.0, 1.5, 2.0, 3.0, 4.0, 4.5):
                time.sleep(max(0.0, t0 + at - time.monotonic()))
                if at in (1.0, 2.0, 3.0, 4.0):
                    assert mm.assert_json(mm.heartbeat(curl, g, x), 200) == {"expires_in": SHORT_PRESENCE}
                if at in (1.5, 3.0):
                    assert_joined(register(curl, g, y), ttl=SHORT_TTL)
            got = [n["peer_id"] for n in discovered(curl, g, observer, 50)]
            assert x.peer_id not in got and y.peer_id not in got, "expired nodes are still discovered"
            # the sample met them (it draws the whole of a small set) and dropped them from the set
            for c in (x, y):
                assert st.redis_raw("SISMEMBER", "mm:bootstrap:nodes", c.peer_id) == "0"
            assert membership(st, x.peer_id)["row"] is not None and membership(st, y.peer_id)["row"] is not None, (
                "no reaper runs: the rows should still be there")
    finally:
        short.reaper = mm.Reaper(st, run_dir, name="mm-reaper-bootshort2", MM_SWEEP_INTERVAL=SWEEP).start()
    mm.wait_for(lambda: _reaped(st, x.peer_id) and _reaped(st, y.peer_id) and st.broadcast(y.peer_id) is None,
                timeout=5, interval=0.1, what="the new reaper to end both")
    assert membership(st, y.peer_id)["row"] is None
    ex, ey = bootstrap_events(st, x.peer_id), bootstrap_events(st, y.peer_id)
    assert [k for k, _ in ex] == ["bootstrap_on", "bootstrap_off"] and ex[1][1]["found_by"] == "sweep", ex
    assert ey == [ey[0], ("bootstrap_off", {"reason": "offline"})] and ey[0][0] == "bootstrap_on", ey
    assert st.events(y.peer_id, "offline") == ["offline"] and st.broadcast(x.peer_id) is not None
    for c in (x, y):
        m = membership(st, c.peer_id)
        assert m == {"value": None, "ttl": -2, "in_set": False, "deadline": None, "row": None}, m
    assert mm.assert_json(mm.stop(curl, g, x), 200) == {}


def _wait_ready(proc, status, timeout=15):
    """Every thread answers /readyz for itself: 8 answers in a row agree."""
    mm.wait_for(lambda: all(mm.http_get(proc.internal("/readyz"))[0] == status for _ in range(8)), timeout=timeout,
                what=f"{proc.name}'s /readyz to be {status}")


def test_store_outage_is_503_and_recovers(short, certs, curl):
    """A store down: register, unregister and discover answer 503 with
    Retry-After and change nothing; the registry reconnects by itself.
    (The module's last test: it stops the `short` stack's stores.)"""
    g, st, b = short.gateway, short.stores, short.bootstrap
    observer = _peer(certs, curl, g)
    with Gossip() as gossip:
        c = _peer(certs, curl, g)
        mm.assert_ready(mm.ready(curl, g, c, gossip.port), c, ttl=SHORT_PRESENCE)
        pid = b.p.pid
        for stop, start in ((st.redis_stop, st.redis_start), (st.pg_stop, st.pg_start)):
            stop()
            try:
                _wait_ready(b, 503)
                for r in (register(curl, g, c), unregister(curl, g, c), discover(curl, g, observer),
                          discover(curl, g, observer, http="2")):
                    mm.assert_error(r, 503, "unavailable")
                    assert r.headers.get("retry-after", "").isdigit(), r.headers
            finally:
                start()
            for proc in (b, short.tracker):
                _wait_ready(proc, 200)
            assert b.p.pid == pid and b.alive()
            mm.assert_ready(mm.ready(curl, g, c, gossip.port), c, ttl=SHORT_PRESENCE)
            assert_joined(register(curl, g, c), ttl=SHORT_TTL)
            assert c.peer_id in [n["peer_id"] for n in discovered(curl, g, observer)]
            assert mm.assert_json(unregister(curl, g, c), 200) == {}
        # one membership per successful register, nothing from the refused ones
        assert [k for k, _ in bootstrap_events(st, c.peer_id)] == ["bootstrap_on", "bootstrap_off"] * 2
        assert mm.assert_json(mm.stop(curl, g, c), 200) == {}
