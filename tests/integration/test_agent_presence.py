"""SPEC §5: mm up keeps its broadcast alive and comes back by itself. A
tracker with MM_PRESENCE_TTL=3 and MM_HEARTBEAT_INTERVAL=1 on stores of its
own (its keys expire during the run): heartbeats keep an agent visible past
its TTL, an agent killed with SIGKILL disappears when the TTL runs out, a
broadcast lost by the server is sent again, and an agent started while the
server is down retries until it comes online."""

import itertools
import os
import time

import pytest

import mm
import mm_agent

TTL = 3
INTERVAL = 1
_seq = itertools.count(1)


@pytest.fixture(scope="module")
def short(run_dir, server_cert):
    with mm.Stack(run_dir, server_cert, "agttl",
                  tracker_env={"MM_PRESENCE_TTL": TTL, "MM_HEARTBEAT_INTERVAL": INTERVAL}) as s:
        yield s


@pytest.fixture
def agent(run_dir, short, server_ca):
    root = os.path.join(run_dir, "agp")

    def make(tag="a", register=True, server_url=None):
        a = mm_agent.Agent(root, f"{tag}{next(_seq)}", server_url or short.gateway.url("").rstrip("/"), server_ca.cert)
        a.init(mm.uniq_email(tag))
        if register:
            a.register()
        return a

    return make


@pytest.fixture
def share(run_dir):
    d = os.path.join(run_dir, "agp", f"share{next(_seq)}")
    os.makedirs(d)
    with open(os.path.join(d, "f.txt"), "w") as f:
        f.write("x\n")
    return d


def _visible(observer, who):
    r = observer.mm("lookup", who.email)
    if r.rc == 0:
        return True
    assert r.code == "not_found", r
    return False


def test_heartbeats_keep_it_and_sigkill_loses_it_after_the_ttl(agent, daemons, share, short):
    a, obs = agent("alice"), agent("obs")
    d = a.up(share, public=True)
    daemons.append(d)
    online = d.events()[1]
    assert online["event"] == "online" and online["expires_in"] == TTL
    assert 0.9 * INTERVAL - 1e-9 <= online["heartbeat_interval"] <= INTERVAL
    # three TTLs later, still there: the heartbeats extend it
    t_end = time.monotonic() + 3 * TTL
    while time.monotonic() < t_end:
        assert _visible(obs, a), "the broadcast lapsed although mm up heartbeats"
        time.sleep(0.5)
    # killed without a chance to say stop: gone once the TTL runs out
    d.kill()
    killed = time.monotonic()
    mm.wait_for(lambda: not _visible(obs, a), timeout=TTL + 3, interval=0.2, what="the killed agent to disappear")
    gone_after = time.monotonic() - killed
    assert gone_after <= TTL + 2, gone_after


def test_broadcast_lost_by_the_server_is_sent_again(agent, daemons, share, short, curl):
    """A heartbeat answered 404 not_broadcasting makes mm up send ready again."""
    a, obs = agent("alice"), agent("obs")
    d = a.up(share, public=True)
    daemons.append(d)
    cert = mm.Cert(a.cert, a.key, a.email)
    mm.assert_json(mm.stop(curl, short.gateway, cert), 200)  # behind the agent's back
    assert not _visible(obs, a)
    ev = d.wait_event("rebroadcast", timeout=INTERVAL + 5)
    assert ev["reason"] == "not_broadcasting"
    d.wait_event("online", timeout=5)
    assert _visible(obs, a)


def test_server_down_at_start_then_up(agent, daemons, share, short, run_dir, server_cert):
    """Started while the server is unreachable, mm up retries with backoff and
    comes online when the server does."""
    late = mm.Gateway(short.tracker.url, server_cert, run_dir, name="mm-gateway-late")
    url = f"https://127.0.0.1:{late.port}"
    a = agent("early", register=False, server_url=url)
    obs = agent("obs")
    d = a.up(share, public=True, wait_online=False)
    daemons.append(d)
    try:
        e1 = d.wait_event("server_unreachable", timeout=10)
        e2 = d.wait_event("server_unreachable", timeout=10)
        assert 500 <= e1["retry_in_ms"] <= 1000 and 1000 <= e2["retry_in_ms"] <= 2000, (e1, e2)
        assert "cannot reach the server" in e1["message"]
        late.start()
        assert late.port == int(url.rsplit(":", 1)[1]), "the gateway had to take another port; rerun"
        d.wait_event("online", timeout=15)
        assert _visible(obs, a)
        # and it stops cleanly, telling the server
        d.stop()
        assert d.events()[-1] == {"event": "stopped", "server_told": True}
        assert not _visible(obs, a)
    finally:
        if late.p is not None:
            late.stop_checked()


def test_stop_while_the_server_is_unreachable(agent, daemons, share, run_dir, server_cert):
    """SIGTERM during an outage still ends mm up promptly with exit 0."""
    a = agent("lonely", register=False, server_url=f"https://127.0.0.1:{mm.free_port()}")
    d = a.up(share, public=True, wait_online=False)
    daemons.append(d)
    d.wait_event("server_unreachable", timeout=10)
    took = d.stop(timeout=10)
    assert took < 3, took


def test_bootstrap_unavailable_does_not_disturb_the_broadcast(agent, daemons, share):
    """--bootstrap with the bootstrap registry unreachable (this stack runs
    none): the failure is reported and retried; the broadcast stays."""
    a, obs = agent("boot"), agent("obs")
    d = a.up(share, public=True, extra=["--bootstrap"])
    daemons.append(d)
    ev = d.wait_event("bootstrap_failed", timeout=10)
    assert ev["code"] in ("unavailable", "not_found", "http_error"), ev
    time.sleep(TTL + 1)
    assert _visible(obs, a)


def test_peers_follows_every_page(agent, short):
    """mm peers walks the list to its end (more peers than one page holds)."""
    obs = agent("obs")
    ids = mm.random_peer_ids(450)
    short.stores.add_broadcasts({pid: 600_000 for pid in ids}, port=4242)
    try:
        got = [p["peer_id"] for p in obs.ok("peers").json["peers"]]
        assert set(ids) <= set(got), f"{len(set(ids) - set(got))} peers missing"
        assert len(got) == len(set(got)), "a peer listed twice"
    finally:
        short.stores.redis_raw("EVAL", "for _, k in ipairs(ARGV) do redis.call('DEL', 'mm:presence:' .. k) end", "0",
                               *ids)
