"""SPEC §3.1, §4: presence expires with its Redis TTL. A tracker with
MM_PRESENCE_TTL=3 on stores of its own (its keys expire while the rest of
the suite compares Redis snapshots, so they must not live in the shared
Redis). No mm-reaper runs here: an expired peer's broadcasts row stays, and
lookups and lists must still never show it (liveness is read from Redis)."""

import concurrent.futures
import time

import pytest

import mm

TTL = 3
INTERVAL = 2


@pytest.fixture(scope="module")
def short(run_dir, server_cert):
    with mm.Stack(run_dir, server_cert, "ttl3",
                  tracker_env={"MM_PRESENCE_TTL": TTL, "MM_HEARTBEAT_INTERVAL": INTERVAL}) as s:
        yield s


def _parallel(fn, items):
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        return list(ex.map(fn, items))


def test_presence_expires_unless_heartbeats_keep_it(short, certs, curl):
    g, stores = short.gateway, short.stores
    observer = mm.register(curl, g, certs.self_signed(mm.uniq_email("obs")))
    keep = _parallel(lambda _: mm.register(curl, g, certs.self_signed(mm.uniq_email("keep"))), range(3))
    lapse = _parallel(lambda _: mm.register(curl, g, certs.self_signed(mm.uniq_email("lapse"))), range(4))
    for c in keep + lapse:
        mm.assert_ready(mm.ready(curl, g, c, 5000), c, ttl=TTL, interval=INTERVAL)
        p = stores.presence(c.peer_id)
        assert p["exists"] and 1 <= p["ttl"] <= TTL, p
    started = time.monotonic()
    ids = sorted(c.peer_id for c in keep + lapse)
    assert [p["peer_id"] for page in mm.walk_list(curl, g, observer, limit=2) for p in page["peers"]] == ids

    # Heartbeat `keep` about every second for 3.6 s: past the TTL of everything else.
    while time.monotonic() - started < 3.6:
        for c in keep:
            assert mm.assert_json(mm.heartbeat(curl, g, c), 200) == {"expires_in": TTL}
        time.sleep(0.8)

    for c in keep:
        rec = mm.assert_json(mm.lookup(curl, g, observer, email=c.email), 200)
        mm.assert_peer_record(rec, c, ttl=TTL)
    for c in lapse:
        for q in ({"email": c.email}, {"peer_id": c.peer_id}):
            mm.assert_error(mm.lookup(curl, g, observer, **q), 404, "not_found")
        # no reaper runs: the row is still there, yet the peer is invisible
        assert stores.broadcast(c.peer_id) is not None, "expiry alone should not delete the row (no reaper runs)"

    # The list skips the expired peers (pages may come out short, `next` is
    # null only at the end), in order, each live peer once.
    for limit in (1, 2, 3, 500):
        pages = mm.walk_list(curl, g, observer, limit=limit)
        got = [p["peer_id"] for page in pages for p in page["peers"]]
        assert got == sorted(c.peer_id for c in keep), f"limit {limit}: {got}"

    # A heartbeat after expiry: 404 not_broadcasting, nothing changed.
    for c in lapse:
        stores.presence(c.peer_id)  # reading an expired key makes Redis drop it now, not during the block
    # PostgreSQL unchanged, and no lapsed peer revived. (Not a whole-Redis
    # snapshot: the kept peers' keys may expire meanwhile on a slow machine.)
    pg_before = stores.snapshot(redis=False)
    for c in lapse:
        mm.assert_error(mm.heartbeat(curl, g, c), 404, "not_broadcasting")
    assert stores.snapshot(redis=False) == pg_before, "a rejected heartbeat changed PostgreSQL"
    for c in lapse:
        assert not stores.presence(c.peer_id)["exists"], "a rejected heartbeat revived a lapsed peer"

    # Ready again: a new broadcast (a second 'online'), found again.
    c = lapse[0]
    old_since = mm.parse_utc(stores.sql_value(
        "SELECT to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM broadcasts"
        " WHERE peer_id = :'p'", p=c.peer_id))
    t_again = time.time()
    mm.assert_ready(mm.ready(curl, g, c, 5001), c, ttl=TTL, interval=INTERVAL)
    rec = mm.assert_json(mm.lookup(curl, g, observer, peer_id=c.peer_id), 200)
    mm.assert_peer_record(rec, c, port=5001, ttl=TTL)
    events = stores.events(c.peer_id)
    problems = []
    if not mm.parse_utc(rec["online_since"]) >= int(t_again) - 1 > old_since:
        problems.append(f"online_since {rec['online_since']} is the expired broadcast's start, not the new one's")
    if events.count("online") != 2:
        problems.append(f"expected a second 'online' event, events are {events}")
    assert mm.assert_json(mm.heartbeat(curl, g, c), 200) == {"expires_in": TTL}

    for x in keep + [c]:
        assert mm.assert_json(mm.stop(curl, g, x), 200) == {}
    # Stopping an expired broadcast is fine too; it removes the stale row.
    for x in lapse[1:]:
        assert mm.assert_json(mm.stop(curl, g, x), 200) == {}
        assert stores.broadcast(x.peer_id) is None
    # (checked last, so that a failure here does not hide the rest)
    assert not problems, "a ready after expiry must start a new broadcast: " + "; ".join(problems)
