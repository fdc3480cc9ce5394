"""SPEC §4, §8: presence survives Redis losing its data (the tracker
restores it, with a full TTL, for every broadcast PostgreSQL holds), a
Redis that is down gives 503 unavailable (with Retry-After, nothing written
to PostgreSQL) and the tracker reconnects by itself, and a killed tracker
loses no acknowledged broadcast. These tests flush, stop and kill, so they
run on stores, a tracker and a gateway of their own."""

import os
import signal
import time

import pytest

import mm
from mm import cand

TTL = 900  # not the default, to see that a restore uses the configured TTL
OBSERVED = "127.0.0.1"


@pytest.fixture(scope="module")
def own(run_dir, server_cert):
    with mm.Stack(run_dir, server_cert, "rec", tracker_env={"MM_PRESENCE_TTL": TTL}) as s:
        yield s


def _reg(s, certs, curl, tag, display_name=None):
    c = mm.register(curl, s.gateway, certs.self_signed(mm.uniq_email(tag)), display_name=display_name)
    c.display_name = display_name
    return c


def _found(curl, s, observer, c):
    r = mm.lookup(curl, s.gateway, observer, peer_id=c.peer_id)
    if r.status == 404:
        mm.assert_error(r, 404, "not_found")
        return None
    return mm.assert_peer_record(mm.assert_json(r, 200), c, ttl=TTL, display_name=c.display_name)


def _listed(curl, s, observer, limit):
    """A full walk of the list: in order, no duplicates, exactly the peers
    with a presence key (earlier tests of this module may have left some)."""
    ids = [p["peer_id"] for page in mm.walk_list(curl, s.gateway, observer, limit=limit) for p in page["peers"]]
    assert ids == sorted(set(ids)), ids
    assert set(ids) == s.stores.presence_peer_ids()
    return set(ids)


def _stable(rec):
    """The parts of a record that a restore must keep."""
    return {k: rec[k] for k in ("peer_id", "email", "display_name", "port", "online_since", "candidates")}


def test_flushall_restores_presence(own, certs, curl):
    s, stores = own, own.stores
    observer = _reg(s, certs, curl, "obs")
    a = _reg(s, certs, curl, "a", display_name="A")
    b = _reg(s, certs, curl, "b")
    gone = _reg(s, certs, curl, "stopped")
    silent = _reg(s, certs, curl, "silent")
    late = _reg(s, certs, curl, "late")
    mm.assert_ready(mm.ready(curl, s.gateway, a, 1111, ["192.168.1.50", "0.0.0.0:6000"]), a, ttl=TTL)
    mm.assert_ready(mm.ready(curl, s.gateway, b, 2222), b, ttl=TTL)
    mm.assert_ready(mm.ready(curl, s.gateway, gone, 3333), gone, ttl=TTL)
    mm.assert_ready(mm.ready(curl, s.gateway, late, 4444), late, ttl=TTL)
    mm.stop(curl, s.gateway, gone)
    before = {c.peer_id: _stable(_found(curl, s, observer, c)) for c in (a, b)}
    assert before[a.peer_id]["candidates"] == [
        cand("192.168.1.50", 1111, "private"), cand(OBSERVED, 6000, "loopback", "observed"),
        cand(OBSERVED, 1111, "loopback", "observed")]
    pg = stores.snapshot(redis=False)

    stores.redis("FLUSHALL")
    t0 = time.monotonic()
    # A ready right after the flush is not undone by the restore.
    mm.assert_ready(mm.ready(curl, s.gateway, late, 4445), late, ttl=TTL)
    mm.wait_for(lambda: all(_found(curl, s, observer, c) for c in (a, b)), timeout=8, interval=0.1,
                what="lookups to find the broadcasting peers again after FLUSHALL")
    took = time.monotonic() - t0
    assert took < 3.5, f"presence came back {took:.1f}s after FLUSHALL (expected within ~2 s)"

    for c in (a, b):
        rec = _found(curl, s, observer, c)
        assert _stable(rec) == before[c.peer_id], "the restored record differs"
        assert rec["expires_in"] >= TTL - 10, f"not restored with a full TTL: {rec!r}"
        p = stores.presence(c.peer_id)
        assert TTL - 10 <= p["ttl"] <= TTL, p
        assert p["deadline"] is not None and abs(p["deadline"] - (time.time() + TTL) * 1000) < 10_000, p
    assert _found(curl, s, observer, late)["port"] == 4445
    for c in (gone, silent):
        assert _found(curl, s, observer, c) is None, "a peer that does not broadcast came back"
        assert not stores.presence(c.peer_id)["exists"]
    # The list sees them all again, and the restore wrote nothing to PostgreSQL
    # (the late ready did: compare everything else).
    assert {a.peer_id, b.peer_id, late.peer_id} <= _listed(curl, s, observer, 2)
    assert mm.assert_json(mm.stop(curl, s.gateway, late), 200) == {}
    after = stores.snapshot(redis=False)
    changed = [t for t, h in after["db"] if dict(pg["db"]).get(t) != h]
    assert set(changed) <= {"broadcasts", "peer_events"}, changed
    # late's ready came while Redis held no presence for it: that may count
    # as its broadcast having lapsed ('offline', then a new 'online').
    ev = stores.events(late.peer_id)
    assert ev in (["registered", "online", "stopped"], ["registered", "online", "offline", "online", "stopped"]), ev
    assert stores.events(a.peer_id) == ["registered", "online"], "a restore is not a new 'online'"

    assert mm.assert_json(mm.heartbeat(curl, s.gateway, a), 200) == {"expires_in": TTL}
    for c in (a, b):
        assert mm.assert_json(mm.stop(curl, s.gateway, c), 200) == {}


def _assert_503(r):
    mm.assert_error(r, 503, "unavailable")
    assert r.headers.get("retry-after", "").isdigit(), f"503 without Retry-After: {r.headers}"


def test_redis_down_is_503_then_recovers(own, certs, curl):
    s, stores = own, own.stores
    observer = _reg(s, certs, curl, "obs")
    a = _reg(s, certs, curl, "a")
    n = _reg(s, certs, curl, "n")
    mm.assert_ready(mm.ready(curl, s.gateway, a, 5555, ["10.0.0.5"]), a, ttl=TTL)
    rec = _found(curl, s, observer, a)
    pid = s.tracker.p.pid

    stores.redis_stop()
    try:
        with stores.unchanged(redis=False):
            for http in ("1.1", "2"):
                _assert_503(mm.ready(curl, s.gateway, n, 6666, http=http))
                _assert_503(mm.ready(curl, s.gateway, a, 7777, http=http))
                _assert_503(mm.heartbeat(curl, s.gateway, a, http=http))
                _assert_503(mm.stop(curl, s.gateway, a, http=http))
                _assert_503(mm.lookup(curl, s.gateway, observer, email=a.email, http=http))
                _assert_503(mm.lookup(curl, s.gateway, observer, peer_id=a.peer_id, http=http))
                _assert_503(mm.list_page(curl, s.gateway, observer, http=http))
        assert s.tracker.alive() and s.gateway.alive()
    finally:
        stores.redis_start()

    # Back, without restarting the tracker: a's broadcast is as it was.
    got = mm.wait_for(lambda: _found(curl, s, observer, a), timeout=15, interval=0.25,
                      what="lookup after Redis came back")
    assert _stable(got) == _stable(rec)
    assert s.tracker.p.pid == pid and s.tracker.alive()
    mm.assert_ready(mm.ready(curl, s.gateway, n, 6666), n, ttl=TTL)
    assert _found(curl, s, observer, n)["port"] == 6666
    assert mm.assert_json(mm.heartbeat(curl, s.gateway, a), 200) == {"expires_in": TTL}
    assert {a.peer_id, n.peer_id} <= _listed(curl, s, observer, 1)
    for c in (a, n):
        assert mm.assert_json(mm.stop(curl, s.gateway, c), 200) == {}
        assert _found(curl, s, observer, c) is None
    assert stores.events(a.peer_id) == ["registered", "online", "stopped"]
    assert stores.events(n.peer_id) == ["registered", "online", "stopped"]


def test_killed_tracker_loses_no_broadcast(own, certs, curl, run_dir):
    s = own
    observer = _reg(s, certs, curl, "obs")
    a = _reg(s, certs, curl, "a")
    mm.assert_ready(mm.ready(curl, s.gateway, a, 8888, ["10.0.0.8"]), a, ttl=TTL)
    rec = _found(curl, s, observer, a)

    old = s.tracker
    os.kill(old.p.pid, signal.SIGKILL)
    old.p.wait(10)
    old._close()
    s.tracker = mm.Tracker(s.stores, run_dir, name="mm-tracker-rec-2", listen=old.listen,
                           MM_PRESENCE_TTL=TTL).start()

    got = mm.wait_for(lambda: _found(curl, s, observer, a), timeout=10, interval=0.2,
                      what="lookup through the restarted tracker")
    assert _stable(got) == _stable(rec)
    assert mm.assert_json(mm.heartbeat(curl, s.gateway, a), 200) == {"expires_in": TTL}
    assert mm.assert_json(mm.stop(curl, s.gateway, a), 200) == {}
    assert s.stores.events(a.peer_id) == ["registered", "online", "stopped"]
