"""SPEC §3.3 and §5: `mm stun` and `mm punch` on loopback, through a real
gateway and mm-signal (STUN on two free UDP ports, given to the agents with
MM_STUN / MM_STUN_ALT). No NAT here: the NAT cases are in tests/e2e (the
network-namespace lab); these check the protocol, the output and every
failure the agent must explain."""

import itertools
import json
import os
import socket
import time

import pytest

import mm
import mm_agent

_seq = itertools.count(1)


@pytest.fixture(scope="module")
def sig(stores, run_dir):
    s = mm.Signal(stores, run_dir, name="mm-signal-punch").start()
    yield s
    s.stop_checked()


@pytest.fixture(scope="module")
def gw(tracker, server_cert, run_dir, sig):
    g = mm.Gateway(tracker.url, server_cert, run_dir, name="mm-gateway-punch", MM_SIGNAL_URL=sig.url).start()
    yield g
    g.stop_checked()


@pytest.fixture
def agent(run_dir, gw, sig, server_ca):
    def make(tag="p", stun=True):
        a = mm_agent.Agent(os.path.join(run_dir, "punch"), f"{tag}{next(_seq)}", gw.url("").rstrip("/"), server_ca.cert)
        if stun:
            a.extra_env = {"MM_STUN": f"127.0.0.1:{sig.stun_port}", "MM_STUN_ALT": str(sig.stun_alt_port)}
        a.init(mm.uniq_email(tag))
        a.register()
        return a

    return make


@pytest.fixture
def daemons():
    started = []
    yield started
    for d in started:
        if d.alive():
            d.stop()


@pytest.fixture
def share(run_dir):
    d = os.path.join(run_dir, "punch-share", f"s{next(_seq)}")
    os.makedirs(d)
    return d


def test_stun_reports_mapping_and_nat_kind(agent, sig):
    """mm stun: the address both STUN ports saw (loopback: no NAT, so the
    same port twice = endpoint-independent) and the local end."""
    a = agent("s")
    r = a.ok("stun").json
    assert r["stun"] == f"127.0.0.1:{sig.stun_port}"
    ip, port = r["mapped"].rsplit(":", 1)
    assert ip == "127.0.0.1" and r["mapped_alt"] == r["mapped"] and r["local"] == r["mapped"]
    assert r["nat_mapping"] == "endpoint-independent" and 0 <= r["rtt_ms"] < 1000
    human = a.mm("stun", json_mode=False)
    assert human.rc == 0 and "endpoint-independent" in human.stdout and r["stun"] in human.stdout


def test_stun_alternate_port_silent(agent, sig):
    """A silent second port: the mapping is still reported, nat_mapping null."""
    a = agent("s")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
        hole.bind(("127.0.0.1", 0))
        r = a.ok("stun", "--stun-alt", str(hole.getsockname()[1])).json
    assert r["mapped"].startswith("127.0.0.1:") and r["mapped_alt"] is None and r["nat_mapping"] is None


def test_stun_unreachable_fails_fast(agent):
    """Nothing answers: exit 1, stun_unreachable, within the 3 s budget."""
    a = agent("s")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
        hole.bind(("127.0.0.1", 0))
        t0 = time.monotonic()
        r = a.fails(1, "stun_unreachable", "stun", "--stun", f"127.0.0.1:{hole.getsockname()[1]}")
    assert time.monotonic() - t0 < 5 and "--stun" in r.json["error"]["message"]


@pytest.mark.parametrize("bad", ["", "[::1", "host:0", "host:99999", "host:x", "[::1]x"])
def test_stun_bad_target_is_usage_error(agent, bad):
    a = agent("s")
    a.fails(1, "bad_usage", "stun", "--stun", bad)


def test_punch_succeeds_on_loopback(agent, share, daemons):
    """The whole exchange: offer, the daemon's answer, probes both ways;
    the path and its round trip are printed, and the daemon reports it."""
    a, b = agent("a"), agent("b")
    d = b.up(share, allow=[a.email])
    daemons.append(d)
    t0 = time.monotonic()
    r = a.ok("punch", b.email, timeout=40).json
    took = time.monotonic() - t0
    assert r["email"] == b.email and r["peer_id"] == b.peer_id and r["attempts"] == 1
    rip, rport = r["remote"].rsplit(":", 1)
    socket.inet_pton(socket.AF_INET, rip)  # one of b's candidates: loopback or this machine's private address
    assert 0 < int(rport) < 65536
    assert r["local"].rsplit(":", 1)[1] == r["mapped"].rsplit(":", 1)[1]
    assert 0 <= r["rtt_ms"] < 1000 and 0 < r["time_ms"] < took * 1000
    assert r["nat_mapping"] == "endpoint-independent" and r["peer_nat_mapping"] == "endpoint-independent"
    assert len(r["session_id"]) == 32
    ev = d.wait_event("punched", timeout=10)
    assert ev["from"] == a.email and ev["session_id"] == r["session_id"]
    human = a.mm("punch", b.email, json_mode=False, timeout=40)
    assert human.rc == 0 and "Direct UDP path to" in human.stdout and "round trip" in human.stdout


def test_punch_offline_peer_not_found(agent):
    a, b = agent("a"), agent("b")
    r = a.fails(1, "not_found", "punch", b.email)
    assert "mm up" in r.json["error"]["message"]


def test_punch_not_allowed_is_not_answered(agent, share, daemons):
    """A caller outside --allow gets no answer: exit 1 (no_answer) well
    within 30 s; the daemon says why and keeps running."""
    a, b, c = agent("a"), agent("b"), agent("c")
    d = b.up(share, allow=[c.email])
    daemons.append(d)
    t0 = time.monotonic()
    r = a.fails(1, "no_answer", "punch", b.email, timeout=40)
    assert time.monotonic() - t0 < 30 and "--allow" in r.json["error"]["message"]
    ev = d.wait_event("punch_ignored", timeout=5)
    assert ev["from"] == a.email and ev["reason"] == "not_allowed"
    assert d.alive()


def test_punch_usage_errors(agent):
    a = agent("a")
    a.fails(2, None, "punch", json_mode=False)
    assert a.mm("punch", "x@example.com", "--stun-alt", "0", json_mode=False).rc == 2
    assert a.mm("punch", "x@example.com", "--share", "/tmp", json_mode=False).rc == 2
    assert a.mm("punch", "one@example.com", "two@example.com", json_mode=False).rc == 2


def test_punch_survives_garbage_on_its_socket(agent, share, daemons):
    """Junk sent at the daemon's punch socket (the remote end of a path it
    keeps alive) is dropped: the daemon lives on and punches again."""
    a, b = agent("a"), agent("b")
    d = b.up(share, allow=[a.email])
    daemons.append(d)
    junk = [b"", b"\x00" * 20, b"MMP1" + b"\x01" * 68, os.urandom(72), b"MMP1" + os.urandom(200)]
    r = a.ok("punch", b.email, timeout=40).json
    host, port = r["remote"].rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for j in junk:
            s.sendto(j, (host, int(port)))
    assert d.alive()
    r2 = a.ok("punch", b.email, timeout=40).json
    assert r2["session_id"] != r["session_id"]
    d.stop()
    assert json.dumps(d.events())  # the daemon printed only JSON lines


def test_punch_again_and_again(agent, share, daemons):
    """More punches in a row than the daemon runs sessions at once (8): a
    new punch from the same peer replaces its older path, so none is
    turned away as busy."""
    a, b = agent("a"), agent("b")
    d = b.up(share, allow=[a.email])
    daemons.append(d)
    sessions = {a.ok("punch", b.email, timeout=40).json["session_id"] for _ in range(10)}
    assert len(sessions) == 10
    assert not [e for e in d.events() if e.get("event") == "punch_ignored"], d.events()
