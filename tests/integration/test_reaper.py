"""SPEC §4, §7: mm-reaper turns expired presence into PostgreSQL: the
broadcasts row leaves within ~2 s of the TTL's end, with exactly one
`offline` peer event ({"reason": event|deadline|sweep, "expired_at"}) per
expiry, whether Redis's own expiry events come, come late (200,000 live
keys), or were lost (a reaper killed, a Redis restarted), with two reapers
at once, and never for a peer that heartbeats or sends ready again just in
time.

Real processes on stores of the module's own (they are stopped and
restarted here): mm-tracker with MM_PRESENCE_TTL=3, mm-gateway, mm-reaper
with MM_SWEEP_INTERVAL=5 (a second copy and restarted ones where a test says
so). Peers are real clients (registered through the gateway, ready /
heartbeat through it) plus, for bursts, peers written straight into the
stores the way the tracker writes them (mm.Stores.add_broadcasts: presence
key and deadline from one Lua script on Redis's clock, then the rows). Each
batch of a test uses its own broadcast port, so a count by port says what is
left of it. Lags are measured by the servers' clocks on this machine:
peer_events.at (the statement that deleted the row) minus expired_at (the
deadline the tracker wrote, which is when Redis expires the key)."""

import concurrent.futures
import os
import re
import threading
import time

import pytest

import mm

TTL = 3  # s, the tracker's MM_PRESENCE_TTL
INTERVAL = 2  # s, its MM_HEARTBEAT_INTERVAL
SWEEP = 5  # s, the reapers' MM_SWEEP_INTERVAL
MAX_LAG = 2.0  # s, SPEC §4: gone from PostgreSQL within 2 s of the TTL's end
REASONS = ("event", "deadline", "sweep")


@pytest.fixture(scope="module")
def rs(run_dir, server_cert):
    with mm.Stack(run_dir, server_cert, "reap", tracker_env={"MM_PRESENCE_TTL": TTL, "MM_HEARTBEAT_INTERVAL": INTERVAL},
                  reaper_env={"MM_SWEEP_INTERVAL": SWEEP}) as s:
        yield s


def _parallel(fn, items, workers=8):
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        return list(ex.map(fn, items))


class Pool:
    """Registered clients, handed out once each: a test's peers have no
    earlier broadcast of this module behind them."""

    def __init__(self, certs, curl, gateway, n):
        self._certs = _parallel(
            lambda _: mm.register(curl, gateway, certs.self_signed(mm.uniq_email("reap"))), range(n))

    def take(self, n):
        assert len(self._certs) >= n, "the pool is too small: raise its size in the fixture"
        out, self._certs = self._certs[:n], self._certs[n:]
        return out


def _wait_all_up(rs, timeout=15):
    """Every process ready again after a store restart. Each tracker thread
    has its own connections and answers /readyz for itself: 8 answers in a
    row must agree."""
    for what, url in (("tracker", rs.tracker.internal("/readyz")), ("reaper", rs.reaper.internal("/readyz"))):
        mm.wait_for(lambda: all(mm.http_get(url)[0] == 200 for _ in range(8)), timeout=timeout,
                    what=f"the {what}'s /readyz")


@pytest.fixture(autouse=True)
def _all_up(rs):
    """Each test starts with every process ready (an earlier test may have
    restarted a store)."""
    _wait_all_up(rs)


@pytest.fixture(scope="module")
def pool(rs, certs, curl):
    return Pool(certs, curl, rs.gateway, 40)


@pytest.fixture(scope="module")
def observer(pool):
    return pool.take(1)[0]


def _ready_all(rs, curl, peers, port):
    """ready for each peer (in parallel); returns {peer_id: deadline ms}
    as the tracker wrote it into mm:presence:deadlines."""

    def one(c):
        mm.assert_ready(mm.ready(curl, rs.gateway, c, port), c, ttl=TTL, interval=INTERVAL)
        p = rs.stores.presence(c.peer_id)
        assert p["exists"] and p["deadline"], p
        return c.peer_id, int(p["deadline"])

    return dict(_parallel(one, peers))


def _synthetic(rs, n, port, ttl_ms=TTL * 1000, spread_ms=0):
    """n peers written straight into the stores, deadlines spread evenly
    over spread_ms after ttl_ms; returns {peer_id: deadline ms}."""
    ids = mm.random_peer_ids(n)
    return rs.stores.add_broadcasts({pid: ttl_ms + (k * spread_ms) // max(n, 1) for k, pid in enumerate(ids)}, port)


def _wait_gone(stores, ports, timeout, what):
    ports = ports if isinstance(ports, (list, tuple)) else [ports]
    left = {}

    def gone():
        left.update((p, stores.broadcasts_on_port(p)) for p in ports)
        return all(v == 0 for v in left.values())

    try:
        mm.wait_for(gone, timeout=timeout, interval=0.1, what=what)
    except AssertionError:
        raise AssertionError(f"{what}: rows still in broadcasts after {timeout:.1f}s, by port: {left}") from None
    return time.time()


def _pct(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, max(0, int(len(v) * q + 0.999999) - 1))] if v else float("nan")


def _check_offline(stores, since, deadlines, *, reasons=REASONS, max_lag=MAX_LAG, exact=True, label=""):
    """Exactly one `offline` event per peer of `deadlines` ({peer_id:
    deadline ms, or None when unknown}) after event id `since`, with a
    reason in `reasons` and an expired_at equal to the deadline, at most
    `max_lag` s before the event (None: not checked). exact: no offline
    event for anybody else either. Returns the events {peer_id: event}."""
    events = stores.offline_events(since)
    problems = []
    missing = [pid for pid in deadlines if pid not in events]
    if missing:
        problems.append(f"{len(missing)} of {len(deadlines)} peers got no offline event (e.g. {missing[:3]})")
    dup = {pid: len(ev) for pid, ev in events.items() if len(ev) > 1}
    if dup:
        problems.append(f"{len(dup)} peers got more than one offline event: {list(dup.items())[:3]}")
    if exact:
        extra = [pid for pid in events if pid not in deadlines]
        if extra:
            problems.append(f"offline events for {len(extra)} peers that did not expire here: {extra[:3]}")
    out = {pid: events[pid][0] for pid in deadlines if pid in events}
    bad_reason = {pid: e["reason"] for pid, e in out.items() if e["reason"] not in reasons}
    if bad_reason:
        problems.append(f"reasons outside {reasons}: {list(bad_reason.items())[:3]}")
    no_key = [pid for pid, e in out.items() if not e["has_expired_at"]]
    if no_key:
        problems.append(f"{len(no_key)} events without expired_at in their detail")
    wrong = [(pid[:12], e["reason"], e["expired_at"], deadlines[pid]) for pid, e in out.items()
             if deadlines[pid] is not None
             and (e["expired_at"] is None or abs(e["expired_at"] * 1000 - deadlines[pid]) > 1)]
    if wrong:
        problems.append(f"{len(wrong)} events whose expired_at is not the deadline the tracker wrote, by reason "
                        f"{ {r: sum(1 for w in wrong if w[1] == r) for r in REASONS} } "
                        f"(peer, reason, expired_at, deadline ms): {wrong[:3]}")
    lags = [e["lag"] for e in out.values() if e["lag"] is not None]
    if max_lag is not None:
        late = sorted(((e["lag"], pid) for pid, e in out.items() if e["lag"] is not None and e["lag"] > max_lag),
                      reverse=True)
        if late:
            problems.append(f"{len(late)} of {len(lags)} rows left PostgreSQL more than {max_lag}s after the TTL's end "
                            f"(worst {late[0][0]:.3f}s)")
    by_reason = {r: sum(1 for e in out.values() if e["reason"] == r) for r in REASONS}
    if lags:
        print(f"{label}: {len(out)} reaped, lag p50 {_pct(lags, 0.5):.3f}s p99 {_pct(lags, 0.99):.3f}s "
              f"max {max(lags):.3f}s; by reason {by_reason}")
    assert not problems, f"{label}: " + "; ".join(problems)
    return out


def _lookup_after_restart(rs, curl, observer, timeout=10, **key):
    """A lookup as a client makes it after a store restart: a 503 (a
    tracker thread whose connection is still coming back; /readyz answers
    for one thread) is retried, as its Retry-After asks."""
    deadline = time.monotonic() + timeout
    while True:
        r = mm.lookup(curl, rs.gateway, observer, **key)
        if r.status != 503 or time.monotonic() > deadline:
            return r
        time.sleep(0.2)


def _assert_gone_for_clients(rs, curl, observer, peers):
    """Reaped real peers: lookups 404, no presence, no deadline entry."""
    for c in peers:
        mm.assert_error(_lookup_after_restart(rs, curl, observer, peer_id=c.peer_id), 404, "not_found")
        mm.assert_error(_lookup_after_restart(rs, curl, observer, email=c.email), 404, "not_found")
        p = rs.stores.presence(c.peer_id)
        assert not p["exists"] and p["deadline"] is None, f"{c.peer_id}: {p}"
        assert rs.stores.broadcast(c.peer_id) is None


def _delta(before, after):
    return {k: after[k] - before[k] for k in before}


def _metric_delta(before, after, name):
    return after.get(name, 0) - before.get(name, 0)


# ---------------------------------------------------------------------------
# keyspace notifications


def _flags(stores):
    lines = stores.redis_raw("CONFIG", "GET", "notify-keyspace-events").splitlines()
    assert lines[0] == "notify-keyspace-events", lines
    return lines[1] if len(lines) > 1 else ""


def test_turns_keyspace_notifications_on(rs, run_dir):
    st = rs.stores
    for before, keep in (("", ""), ("Kl", "Kl")):
        st.redis("CONFIG", "SET", "notify-keyspace-events", before)
        assert _flags(st) == before or set(_flags(st)) == set(before)
        r = mm.Reaper(st, run_dir, name="mm-reaper-ks", MM_SWEEP_INTERVAL=SWEEP).start()  # /readyz 200
        try:
            flags = _flags(st)
            assert "E" in flags and ("x" in flags or "A" in flags), f"reaper left notify-keyspace-events {flags!r}"
            assert set(keep) <= set(flags), f"reaper dropped flags others set: {before!r} -> {flags!r}"
            assert "keyspace notifications" in mm.tail(r.log, 50, since=r._log_start)
            # and it hears them: a presence key that expires (with no row) is counted
            m0 = r.metrics()
            pid = mm.random_peer_ids(1)[0]
            st.redis("SET", f"mm:presence:{pid}", "1 127.0.0.1", "PX", "50")
            time.sleep(0.15)
            st.redis("EXISTS", f"mm:presence:{pid}")  # Redis notices the expiry now
            mm.wait_for(lambda: _metric_delta(m0, r.metrics(), "mm_reaper_expired_events_total") >= 1, timeout=3,
                        what="mm_reaper_expired_events_total to count the expired presence key")
        finally:
            r.stop_checked()
    st.redis("CONFIG", "SET", "notify-keyspace-events", "Ex")  # as stores.sh starts it


def test_refuses_a_redis_that_hides_config(rs, run_dir):
    red = mm.ExtraRedis(os.path.join(run_dir, "nocfg"), "--rename-command", "CONFIG", "")
    try:
        assert "unknown command" in red.cli("CONFIG", "GET", "notify-keyspace-events").lower()
        code, log = mm.Reaper(rs.stores, run_dir, name="mm-reaper-nocfg", MM_REDIS_URL=red.url).start_expecting_exit()
    finally:
        red.stop()
    assert code not in (0, None), f"mm-reaper exited {code} on a Redis where it cannot check notifications:\n{log}"
    assert "notify-keyspace-events" in log, f"the reason should name notify-keyspace-events:\n{log}"


# ---------------------------------------------------------------------------
# expiry


def test_burst_expiry(rs, pool, observer, curl):
    st, r = rs.stores, rs.reaper
    since, m0 = st.last_event_id(), r.metrics()
    real = pool.take(6)
    deadlines = _ready_all(rs, curl, real, 31001)
    deadlines.update(_synthetic(rs, 2000, 31001, spread_ms=300))
    end = max(deadlines.values()) / 1000
    # still there just before the TTLs end
    assert st.broadcasts_on_port(31001) == len(deadlines)
    _wait_gone(st, 31001, end - time.time() + MAX_LAG + 1, "burst of 2,006 expiries")
    _check_offline(st, since, deadlines, label="burst")
    _assert_gone_for_clients(rs, curl, observer, real)
    m1 = r.metrics()
    got = _delta(r.reaped(m0), r.reaped(m1))
    assert got["all"] == len(deadlines), f"mm_reaper_reaped_total moved by {got}, expected {len(deadlines)} in all"
    assert _metric_delta(m0, m1, "mm_reaper_lag_seconds_count") == len(deadlines)
    assert _metric_delta(m0, m1, "mm_reaper_expired_events_total") >= 1
    assert m1.get('mm_reaper_lag_seconds_bucket{le="2.5"}', 0) == m1["mm_reaper_lag_seconds_count"]


def test_few_expire_among_200k_live_keys(rs, pool, observer, curl):
    st, r = rs.stores, rs.reaper
    live = mm.random_peer_ids(200_000)
    now = int(time.time() * 1000)
    val = f"{now} 127.0.0.1"
    payload = [mm.resp("SET", f"mm:presence:{pid}", val, "EX", 3600) for pid in live]
    for i in range(0, len(live), 1000):
        args = []
        for pid in live[i:i + 1000]:
            args += [now + 3_600_000, pid]
        payload.append(mm.resp("ZADD", "mm:presence:deadlines", *args))
    t0 = time.monotonic()
    st.redis_pipe(b"".join(payload))
    try:
        print(f"200k: loaded 200,000 live presence keys in {time.monotonic() - t0:.1f}s")
        assert int(st.redis_raw("DBSIZE")) >= 200_000
        zcard = int(st.redis_raw("ZCARD", "mm:presence:deadlines"))
        since, m0 = st.last_event_id(), r.metrics()
        real = pool.take(4)
        deadlines = _ready_all(rs, curl, real, 31002)
        deadlines.update(_synthetic(rs, 6, 31002))
        end = max(deadlines.values()) / 1000
        _wait_gone(st, 31002, end - time.time() + MAX_LAG + 1, "10 expiries among 200,000 live keys")
        _check_offline(st, since, deadlines, label="200k live")
        _assert_gone_for_clients(rs, curl, observer, real)
        assert _delta(r.reaped(m0), r.reaped())["all"] == len(deadlines)
        # the live ones are untouched
        assert int(st.redis_raw("ZCARD", "mm:presence:deadlines")) == zcard
        assert st.redis_raw("EXISTS", f"mm:presence:{live[0]}", f"mm:presence:{live[-1]}") == "2"
    finally:
        drop = [mm.resp("UNLINK", *[f"mm:presence:{pid}" for pid in live[i:i + 1000]])
                for i in range(0, len(live), 1000)]
        drop += [mm.resp("ZREM", "mm:presence:deadlines", *live[i:i + 1000]) for i in range(0, len(live), 1000)]
        st.redis_pipe(b"".join(drop))


def test_reaper_killed_while_peers_expire(rs, run_dir):
    """SIGKILL while a burst is being reaped (so some peers may be claimed in
    Redis and never deleted), more peers expire while no reaper runs, and
    the deadline entries of some of those are removed too: after a restart
    everything is reaped, those only the sweep can find within
    MM_SWEEP_INTERVAL."""
    st = rs.stores
    since = st.last_event_id()
    a = _synthetic(rs, 3000, 31003, spread_ms=1500)  # expire over 1.5 s
    b = _synthetic(rs, 200, 31004, ttl_ms=TTL * 1000 + 1000)  # expire 1 s after the first of a
    mm.wait_for(lambda: st.broadcasts_on_port(31003) < len(a), timeout=TTL + MAX_LAG + 1, interval=0.02,
                what="the reaper to start on the burst")
    rs.reaper.kill()
    left_a = st.broadcasts_on_port(31003)
    print(f"killed: mm-reaper killed with {len(a) - left_a} of {len(a)} reaped")
    # wait until everything has expired, make Redis notice b's expiries (its
    # events go nowhere) and drop b's deadline entries
    end = max(list(a.values()) + list(b.values())) / 1000
    time.sleep(max(0.0, end - time.time() + 0.3))
    st.redis_pipe(b"".join(mm.resp("EXISTS", f"mm:presence:{pid}") for pid in b))
    st.redis_pipe(mm.resp("ZREM", "mm:presence:deadlines", *b))
    assert st.broadcasts_on_port(31004) == len(b) and st.broadcasts_on_port(31003) == left_a, "nobody reaps"
    assert left_a > 0, "the reaper reaped the whole burst before it was killed"

    rs.reaper = mm.Reaper(st, run_dir, name="mm-reaper-reap", MM_SWEEP_INTERVAL=SWEEP).start()
    restarted = time.time()
    _wait_gone(st, [31003, 31004], SWEEP + 3, "reaping after the restart")
    ev = _check_offline(st, since, {**a, **{pid: None for pid in b}}, max_lag=None, label="killed+restarted")
    late = {pid: e["at"] - restarted for pid, e in ev.items() if e["at"] - restarted > SWEEP + 1}
    assert not late, (f"{len(late)} peers reaped later than MM_SWEEP_INTERVAL after the restart: "
                      f"{list(late.items())[:3]}")
    assert all(ev[pid]["reason"] == "sweep" for pid in b), {ev[pid]["reason"] for pid in b}
    # the ones reaped before the kill kept to the target
    before_kill = [e["lag"] for pid, e in ev.items() if pid in a and e["at"] < restarted]
    assert before_kill and max(before_kill) <= MAX_LAG, max(before_kill)
    m = rs.reaper.metrics()
    assert rs.reaper.reaped(m)["sweep"] >= len(b) and m["mm_reaper_sweeps_total"] >= 1


def test_two_reapers_one_event_per_expiry(rs, pool, observer, curl, run_dir):
    st, r1 = rs.stores, rs.reaper
    r2 = mm.Reaper(st, run_dir, name="mm-reaper-second", MM_SWEEP_INTERVAL=SWEEP).start()
    try:
        since, a0, b0 = st.last_event_id(), r1.reaped(), r2.reaped()
        real = pool.take(4)
        deadlines = _ready_all(rs, curl, real, 31005)
        deadlines.update(_synthetic(rs, 3000, 31005, spread_ms=500))
        end = max(deadlines.values()) / 1000
        _wait_gone(st, 31005, end - time.time() + MAX_LAG + 1, "3,004 expiries with two reapers")
        time.sleep(0.5)  # any duplicate would come now
        a, b = _delta(a0, r1.reaped()), _delta(b0, r2.reaped())
        print(f"\ntwo reapers: first {a}, second {b}")
        assert a["all"] + b["all"] == len(deadlines), f"reaped_total: first {a}, second {b}; {len(deadlines)} expired"
        _assert_gone_for_clients(rs, curl, observer, real)
        _check_offline(st, since, deadlines, label="two reapers")
    finally:
        r2.stop_checked()


def test_heartbeat_and_ready_racing_the_deadline(rs, pool, observer, server_ca):
    """Heartbeats 0.2 s before each deadline for three TTLs: never reaped,
    no offline event. A ready sent again around the deadline (from 150 ms
    before to 300 ms after it), twice: the peer ends up online (row,
    presence, lookup 200), with at most one offline event per lapse, each
    followed by an online."""
    st, gw = rs.stores, rs.gateway
    hb_peers, rd_peers = pool.take(4), pool.take(7)
    offsets = (-0.15, -0.05, -0.01, 0.0, 0.01, 0.05, 0.3)
    since = st.last_event_id()
    errors, log = [], []
    lock = threading.Lock()

    def request_at(c, when, method, path, body=None):
        """A request on a connection made ahead of time, sent at `when`
        (unix s); returns (time sent, Response)."""
        time.sleep(max(0.0, when - time.time() - 0.3))
        conn = mm.TLSConn(gw.port, mm.ssl_client_context(server_ca.cert, c))
        try:
            time.sleep(max(0.0, when - time.time()))
            sent = time.time()
            return sent, conn.request(method, path, body)
        finally:
            conn.close()

    def fail(msg):
        with lock:
            errors.append(msg)

    def online(c, what):
        """The peer broadcasts: row, presence, a lookup finds it."""
        row, pres = st.broadcast(c.peer_id), st.presence(c.peer_id)
        _, r = request_at(observer, 0, "GET", f"{mm.LOOKUP}?peer_id={c.peer_id}")
        if row is None or not pres["exists"] or r.status != 200:
            fail(f"{what}: not online afterwards (row {row}, presence {pres}, lookup {r!r})")

    def finish(c, pattern, what):
        kinds = ",".join(st.kinds_since(c.peer_id, since))
        if not re.fullmatch(pattern, kinds):
            fail(f"{what}: events {kinds!r}, expected {pattern!r}")
        _, r = request_at(c, 0, "POST", mm.STOP)
        if r.status != 200:
            fail(f"stop: {r!r}")

    for c in hb_peers + rd_peers:
        _, r = request_at(c, 0, "POST", mm.READY, {"port": 31006})
        assert r.status == 200, r
    start = time.time()

    def heartbeater(c):
        last = st.presence(c.peer_id)["deadline"] / 1000 - TTL  # when the ready ran, by Redis
        while time.time() < start + 3 * TTL:
            # `last` is when the previous request was sent: Redis extended the TTL a little later
            sent, r = request_at(c, last + TTL - 0.2, "POST", mm.HEARTBEAT)
            with lock:
                log.append(("hb", c.peer_id[:6], sent - last, r.status))
            if r.status != 200:
                fail(f"heartbeat {sent - last:.3f}s after the previous request: {r!r}")
            last = sent
        online(c, "heartbeating 0.2 s before each deadline")
        finish(c, "online", "heartbeating 0.2 s before each deadline")

    def racer(c, offset):
        for _ in range(2):
            deadline = st.presence(c.peer_id)["deadline"] / 1000
            sent, r = request_at(c, deadline + offset, "POST", mm.READY, {"port": 31006})
            with lock:
                log.append(("ready", c.peer_id[:6], sent - deadline, r.status))
            if r.status != 200:
                fail(f"ready {sent - deadline:+.3f}s from the deadline: {r!r}")
            time.sleep(1.0)  # a wrong reap would have happened by now
            online(c, f"ready {sent - deadline:+.3f}s from the deadline")
        finish(c, "online(,offline,online){0,2}", f"ready {offset:+.2f}s from the deadline, twice")

    jobs = [(heartbeater, (c,)) for c in hb_peers] + [(racer, (c, o)) for c, o in zip(rd_peers, offsets)]
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as ex:
        for f in [ex.submit(fn, *args) for fn, args in jobs]:
            f.result()
    print("\nrace: " + " ".join(f"{k}:{p}:{d:+.3f}:{s}" for k, p, d, s in log))
    assert not errors, "\n".join(errors)
    # nobody got an offline event but the ready racers that lapsed (written
    # by the reaper, or by the tracker's ready when it came first)
    lapsed = st.offline_events(since)
    print("race: offline events' reasons: "
          + " ".join(f"{p[:6]}:{e['reason']}" for p, ev in lapsed.items() for e in ev))
    assert set(lapsed) <= {c.peer_id for c in rd_peers}


# ---------------------------------------------------------------------------
# store restarts


def test_postgres_restart_while_peers_expire(rs, pool, observer, curl):
    st, r = rs.stores, rs.reaper
    since, m0 = st.last_event_id(), r.reaped()
    real = pool.take(3)
    deadlines = _ready_all(rs, curl, real, 31007)
    deadlines.update(_synthetic(rs, 1000, 31007, spread_ms=1000))
    first = min(deadlines.values()) / 1000
    # PostgreSQL goes down just before the first TTL ends, for ~2 s past the last
    time.sleep(max(0.0, first - time.time() - 0.3))
    st.pg_stop()
    try:
        mm.wait_for(lambda: r.ready_status() == 503, timeout=10, what="the reaper's /readyz to say PostgreSQL is down")
        time.sleep(max(0.0, max(deadlines.values()) / 1000 - time.time() + 1.5))
        assert r.alive()
    finally:
        st.pg_start()
    back = time.time()
    # every expired peer is reaped once PostgreSQL is back (reconnect backoff: at most 5 s)
    _wait_gone(st, 31007, 5 + MAX_LAG + 2, "reaping after PostgreSQL came back")
    ev = _check_offline(st, since, deadlines, max_lag=None, label="PostgreSQL restart")
    after = max(e["at"] for e in ev.values()) - back
    print(f"PostgreSQL restart: all {len(ev)} reaped {after:.2f}s after PostgreSQL was back")
    assert after <= 5 + MAX_LAG, after
    _wait_all_up(rs)
    _assert_gone_for_clients(rs, curl, observer, real)
    assert _delta(m0, r.reaped())["all"] == len(deadlines)


def test_redis_restart_while_peers_expire(rs, pool, observer, curl):
    st, r = rs.stores, rs.reaper
    since, m0 = st.last_event_id(), r.metrics()
    real = pool.take(3)
    deadlines = _ready_all(rs, curl, real, 31008)
    deadlines.update(_synthetic(rs, 1000, 31008, spread_ms=1000))
    first = min(deadlines.values()) / 1000
    time.sleep(max(0.0, first - time.time() - 0.3))
    st.redis_stop()
    try:
        mm.wait_for(lambda: r.ready_status() == 503, timeout=10, what="the reaper's /readyz to say Redis is down")
        time.sleep(max(0.0, max(deadlines.values()) / 1000 - time.time() + 1.5))
        assert r.alive()
    finally:
        st.redis_start()
    back = time.time()
    _wait_gone(st, 31008, 5 + MAX_LAG + 2, "reaping after Redis came back")
    ev = _check_offline(st, since, deadlines, max_lag=None, label="Redis restart")
    after = max(e["at"] for e in ev.values()) - back
    print(f"Redis restart: all {len(ev)} reaped {after:.2f}s after Redis was back")
    assert after <= 5 + MAX_LAG, after
    _wait_all_up(rs)
    _assert_gone_for_clients(rs, curl, observer, real)
    m1 = r.metrics()
    assert _delta(r.reaped(m0), r.reaped(m1))["all"] == len(deadlines)
