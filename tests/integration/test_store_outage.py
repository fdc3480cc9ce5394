"""SPEC §3, §8: a store that is down gives 503 unavailable (with
Retry-After, nothing half-written) and the service reconnects by itself when
it comes back. These tests stop and start their own PostgreSQL and Redis, so
they never disturb the shared ones."""

import os

import pytest

import mm

REGISTER = "/api/relay/register"


@pytest.fixture(scope="module")
def own(run_dir, server_cert):
    """Own stores, tracker and gateway for this module."""
    stores = mm.Stores(os.path.join(run_dir, "o"))
    tracker = gateway = None
    try:
        stores.start()
        tracker = mm.Tracker(stores, run_dir, name="mm-tracker-outage").start()
        gateway = mm.Gateway(tracker.url, server_cert, run_dir, name="mm-gateway-outage").start()
        yield stores, tracker, gateway
        # Both still run after the outages, and stop cleanly.
        gateway.stop_checked()
        tracker.stop_checked()
    finally:
        for p in (gateway, tracker):
            if p is not None and p.alive():
                p.terminate()
        stores.stop()


def _readyz(tracker):
    return mm.http_get(tracker.internal("/readyz"))[0]


def _wait_all_threads(tracker, status, timeout=15):
    """Each worker thread has its own connections and answers /readyz for
    itself: wait until 8 probes in a row agree."""
    mm.wait_for(lambda: all(_readyz(tracker) == status for _ in range(8)), timeout=timeout,
                what=f"every thread's /readyz to be {status}")


def test_postgres_down_is_503_and_recovers_without_restart(own, curl, peer):
    stores, tracker, gateway = own
    a, b = peer(), peer()
    mm.assert_registration(curl(gateway.url(REGISTER), cert=a, json_body={}), 201, a)
    pid = tracker.p.pid

    stores.pg_stop()
    try:
        _wait_all_threads(tracker, 503, timeout=10)
        for c in (b, a, b):
            for http in ("1.1", "2"):
                r = curl(gateway.url(REGISTER), cert=c, json_body={}, http=http)
                mm.assert_error(r, 503, "unavailable")
                assert r.headers.get("retry-after", "").isdigit(), f"503 without Retry-After: {r.headers}"
        assert tracker.alive() and gateway.alive()
    finally:
        stores.pg_start()

    # Back: the same tracker process reconnects by itself.
    seen = []

    def registered():
        r = curl(gateway.url(REGISTER), cert=b, json_body={})
        seen.append(r.status)
        if r.status == 503:
            mm.assert_error(r, 503, "unavailable")
            return None
        return r

    r = mm.wait_for(registered, timeout=15, interval=0.25, what="register after PostgreSQL came back")
    # 201, not 200: nothing of b was half-written during the outage.
    mm.assert_registration(r, 201, b)
    assert tracker.p.pid == pid and tracker.alive()
    _wait_all_threads(tracker, 200)
    for _ in range(4):
        mm.assert_registration(curl(gateway.url(REGISTER), cert=a, json_body={}), 200, a)
    assert stores.events(b.peer_id, "registered") == ["registered"]
    assert stores.events(a.peer_id, "registered") == ["registered"]


def test_redis_down_is_not_ready_and_recovers(own, curl, peer):
    stores, tracker, gateway = own
    _wait_all_threads(tracker, 200)
    stores.redis_stop()
    try:
        _wait_all_threads(tracker, 503, timeout=10)
        assert tracker.alive() and gateway.alive()
    finally:
        stores.redis_start()
    _wait_all_threads(tracker, 200)
    c = peer()
    mm.assert_registration(curl(gateway.url(REGISTER), cert=c, json_body={}), 201, c)


def test_sigterm_while_postgres_is_down(own, run_dir):
    """Stopping must not wait for a store that is gone."""
    stores, _, _ = own
    extra = mm.Tracker(stores, run_dir, name="mm-tracker-outage-term").start()
    try:
        stores.pg_stop()
        try:
            _wait_all_threads(extra, 503, timeout=10)
            took = extra.stop_checked(timeout=10)
            assert took < 10
        finally:
            stores.pg_start()
    finally:
        extra.terminate()
