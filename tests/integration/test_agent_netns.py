"""SPEC §5: mm up finds the machine's addresses itself and sends ready again
when they change. Run in a network namespace of the test's own, whose
interfaces the test may change without touching the machine's: a gateway
and the agents run inside it (the tracker stays outside, reached over a
unix socket); a veth pair inside the namespace gets addresses added and
removed. No packet leaves the namespace. Skipped, saying why, where the
kernel refuses namespaces."""

import itertools
import os
import subprocess

import pytest

import mm
import mm_agent

_seq = itertools.count(1)


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=check)


@pytest.fixture(scope="module")
def netns():
    name = f"mmagt{os.getpid() % 100000}"
    p = _ip("netns", "add", name, check=False)
    if p.returncode != 0:
        pytest.skip(f"cannot create a network namespace here (ip netns add: {p.stderr.strip()})")
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "link", "add", "va", "type", "veth", "peer", "name", "vb")
        _ip("-n", name, "link", "set", "va", "up")
        _ip("-n", name, "link", "set", "vb", "up")
        _ip("-n", name, "addr", "add", "10.77.0.1/24", "dev", "va")
        yield name
    finally:
        _ip("netns", "del", name, check=False)


@pytest.fixture(scope="module")
def inside(netns, stores, run_dir, server_cert):
    """A tracker (outside, on a unix socket) and a gateway inside the namespace; yields the gateway's URL there."""
    tracker = mm.Tracker(stores, run_dir, name="mm-tracker-ns", listen=f"unix:{run_dir}/ns-trk.sock").start()
    gw_sock = f"{run_dir}/ns-gw.sock"
    log = open(os.path.join(run_dir, "mm-gateway-ns.log"), "ab")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MM_")}
    env.update({
        "MM_GATEWAY_ADDR": "127.0.0.1", "MM_GATEWAY_PORT": "8443", "MM_GATEWAY_INTERNAL_LISTEN": f"unix:{gw_sock}",
        "MM_TLS_CERT_FILE": server_cert.cert, "MM_TLS_KEY_FILE": server_cert.key, "MM_TRACKER_URL": tracker.url,
        "MM_BOOTSTRAP_URL": "", "MM_SIGNAL_URL": "", "MM_ADMIN_URL": "", "MM_THREADS": "1", "MM_LOG_LEVEL": "info",
    })
    gw = subprocess.Popen(["ip", "netns", "exec", netns, mm.binary("mm-gateway")], env=env, stdin=subprocess.DEVNULL,
                          stdout=log, stderr=log, start_new_session=True)
    try:
        mm.wait_for(lambda: mm.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket", gw_sock,
                                    "http://localhost/readyz"], check=False).stdout == "200",
                    timeout=20, what="the gateway in the namespace")
        yield "https://127.0.0.1:8443"
    finally:
        gw.terminate()
        try:
            assert gw.wait(10) == 0, "the namespace's gateway did not exit 0 on SIGTERM"
        finally:
            log.close()
            tracker.stop_checked()


@pytest.fixture
def agent(run_dir, inside, netns, server_ca):
    def make(tag):
        a = mm_agent.Agent(os.path.join(run_dir, "agn"), f"{tag}{next(_seq)}", inside, server_ca.cert)
        a.prefix = ["ip", "netns", "exec", netns]
        a.init(mm.uniq_email(tag))
        a.register()
        return a

    return make


def _reported(observer, who):
    rec = observer.ok("lookup", who.email).json["peer"]
    return sorted(c["ip"] for c in rec["candidates"] if c["source"] == "reported")


def test_addresses_are_discovered_and_followed(agent, netns, run_dir):
    a, b = agent("moving"), agent("obs")
    share = os.path.join(a.dir, "share")
    os.makedirs(share)
    d = a.up(share, public=True, advertise=())
    try:
        # the namespace has 10.77.0.1 on va, link-local IPv6 only on vb, and loopback: only the first counts
        assert d.events()[1]["addresses"] == ["10.77.0.1"], d.events()
        assert _reported(b, a) == ["10.77.0.1"]

        _ip("-n", netns, "addr", "add", "10.77.0.2/24", "dev", "va")
        _ip("-n", netns, "addr", "add", "fd00:77::1/64", "dev", "va", "nodad")
        d.wait_event("addresses_changed", timeout=12)
        ev = d.wait_event("online", timeout=5)
        if ev["addresses"] != ["10.77.0.1", "10.77.0.2", "fd00:77::1"]:  # both may not have landed in one read
            d.wait_event("addresses_changed", timeout=12)
            ev = d.wait_event("online", timeout=5)
        assert ev["addresses"] == ["10.77.0.1", "10.77.0.2", "fd00:77::1"], ev
        assert _reported(b, a) == ["10.77.0.1", "10.77.0.2", "fd00:77::1"]

        _ip("-n", netns, "addr", "del", "10.77.0.2/24", "dev", "va")  # (deleting the primary would take the secondary along)
        d.wait_event("addresses_changed", timeout=12)
        assert d.wait_event("online", timeout=5)["addresses"] == ["10.77.0.1", "fd00:77::1"]

        # nothing but loopback left: then loopback is what there is
        _ip("-n", netns, "addr", "flush", "dev", "va", "scope", "global")
        d.wait_event("addresses_changed", timeout=12)
        assert d.wait_event("online", timeout=5)["addresses"] == ["127.0.0.1", "::1"]
        assert _reported(b, a) == ["127.0.0.1", "::1"]
    finally:
        d.stop()
        _ip("-n", netns, "addr", "add", "10.77.0.1/24", "dev", "va", check=False)
