"""SPEC §3.3 and §5: `mm stun` and `mm punch` on loopback, through a real
gateway and mm-signal (STUN on two free UDP ports, given to the agents with
MM_STUN / MM_STUN_ALT). No NAT here: the NAT cases are in tests/e2e (the
network-namespace lab); these check the protocol, the output and every
failure the agent must explain."""

import base64
import hashlib
import hmac
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


def _pkt(kind, role, sid, seq, echo, secret, mac=None):
    """A punch packet (proto/punch.md), written independently of common/src/punch.c."""
    head = b"MMP1" + bytes([kind, role, 0, 0]) + sid + seq.to_bytes(8, "big") + echo.to_bytes(8, "big")
    return head + (mac if mac is not None else hmac.new(secret, head, hashlib.sha256).digest())


def _read(sock, secret, timeout):
    """The next authentic packet: (type, role, seq, echo, source), or None after `timeout`."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, src = sock.recvfrom(2048)
        except socket.timeout:
            return None
        if len(data) != 72 or data[:4] != b"MMP1":
            continue
        assert hmac.compare_digest(data[40:], hmac.new(secret, data[:40], hashlib.sha256).digest()), data
        return data[4], data[5], int.from_bytes(data[24:32], "big"), int.from_bytes(data[32:40], "big"), src
    return None


def _acks(sock, secret, timeout):
    """The echo of every ACK that arrives within `timeout` (probes ignored)."""
    out, deadline = [], time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        p = _read(sock, secret, left)
        if p is not None and p[0] == 2:
            out.append(p[3])
    return out


def test_daemon_speaks_the_punch_protocol(agent, share, daemons, curl, gw):
    """The daemon's side against an offerer written here from proto/punch.md
    alone: its probes are authentic, carry the answerer's role and reach
    the offered candidate; it answers an authentic probe with an ACK that
    echoes it, and nothing else (a wrong MAC, our own role reflected back,
    a replay); an ACK to one of its probes gives it the path; 15 s later it
    sends a keepalive on that path."""
    a, b = agent("a"), agent("b")
    d = b.up(share, allow=[a.email])
    daemons.append(d)
    me = mm.Cert(a.cert, a.key, a.email)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        r = curl(gw.url("/api/signal/offer"), cert=me, http="2",
                 json_body={"to": b.email, "candidates": [{"ip": "127.0.0.1", "port": port, "type": "host"}]})
        assert r.status == 201, r
        sid_hex = r.json()["session_id"]
        r = curl(gw.url(f"/api/signal/session/{sid_hex}?wait=10"), method="GET", cert=me, http="2")
        assert r.status == 200 and r.json()["state"] == "answered", r
        secret, sid = base64.b64decode(r.json()["secret"]), bytes.fromhex(sid_hex)
        cands = {(c["ip"], c["port"]) for c in r.json()["peer"]["candidates"]}

        probe = _read(s, secret, r.json()["punch_in_ms"] / 1000 + 3)
        assert probe is not None, f"no probe from the daemon; events {d.events()}"
        kind, role, seq, echo, src = probe
        assert (kind, role, echo) == (1, 2, 0) and seq >= 1, probe
        assert (src[0], src[1]) in cands, f"a probe from {src}, not from a candidate of the answer: {cands}"

        bad_mac = _pkt(1, 1, sid, 1, 0, secret, mac=bytes(32))
        reflected = _pkt(1, 2, sid, 1, 0, secret)
        other_session = _pkt(1, 1, bytes(16), 1, 0, secret)
        for junk in (bad_mac, reflected, other_session):
            s.sendto(junk, src)
        assert _acks(s, secret, 0.3) == [], "the daemon answered a packet it must drop"
        good = _pkt(1, 1, sid, 5, 0, secret)
        s.sendto(good, src)
        assert _acks(s, secret, 1.0) == [5]
        s.sendto(good, src)  # a replay
        assert _acks(s, secret, 0.3) == [], "the daemon answered a replayed probe"

        # answer one of its probes: it then has the path
        while True:
            p = _read(s, secret, 2)
            assert p is not None, f"the daemon stopped probing early; events {d.events()}"
            if p[0] == 1:
                s.sendto(_pkt(2, 1, sid, 6, p[2], secret), p[4])
                break
        ev = d.wait_event("punched", timeout=5)
        assert ev["session_id"] == sid_hex and ev["remote"] == f"127.0.0.1:{port}", ev

        t0 = time.monotonic()
        while True:
            p = _read(s, secret, 20 - (time.monotonic() - t0))
            assert p is not None, f"no keepalive within 20 s; events {d.events()}"
            if p[0] == 3:
                break
        assert 14 <= time.monotonic() - t0 <= 17, f"keepalive after {time.monotonic() - t0:.1f} s, not 15"
        assert p[3] == 0 and p[4] == src, p
        s.sendto(_pkt(2, 1, sid, 7, p[2], secret), p[4])
    assert d.alive()
