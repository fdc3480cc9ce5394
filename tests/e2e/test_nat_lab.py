"""Hole punching through real NATs: the lab of lab.py (three home routers
in network namespaces, r1 and r2 endpoint-independent, r3 symmetric, each
with a home router's firewall) and the real suite in its `srv`
(labstack.py). The lab itself is proven first (addresses, mappings,
firewall, a punch made by hand, the loss rule, coturn's own verdict on
each NAT); then
the agents: the tracker sees their routers' addresses, `mm punch` succeeds
between the two endpoint-independent NATs, also with 30% loss, fails
cleanly (and quickly) towards and from the symmetric one, and `mm stun`
classifies each NAT as coturn's turnutils_natdiscovery does.

Skipped, with the reason, where the lab cannot be built (not root,
namespaces refused).
"""

import re
import socket
import subprocess
import sys
import time

import pytest

import lab as labmod
import labstack
import mm

SERVER_IP, SERVER_IP2 = labmod.SERVER_IP, labmod.SERVER_IP2
wan_ip, client_ip = labmod.wan_ip, labmod.client_ip
SYMMETRIC = 3

# ---------------------------------------------------------------------------
# UDP by hand: a socket in a client namespace, driven line by line


UDP_PEER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 1 << 22)  # SO_RCVBUFFORCE: bursts must not overflow the buffer
s.bind(("0.0.0.0", 0))
print("port", s.getsockname()[1], flush=True)
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "send":
        s.sendto(cmd[3].encode(), (cmd[1], int(cmd[2])))
        print("sent", flush=True)
    elif cmd[0] == "recv":
        s.settimeout(float(cmd[1]))
        try:
            data, addr = s.recvfrom(2048)
            print("got", addr[0], addr[1], data.decode(), flush=True)
        except socket.timeout:
            print("nothing", flush=True)
    elif cmd[0] == "burst":
        for i in range(int(cmd[3])):
            s.sendto(b"burst", (cmd[1], int(cmd[2])))
        print("sent", flush=True)
    elif cmd[0] == "count":
        s.settimeout(float(cmd[1]))
        n = 0
        try:
            while True:
                s.recvfrom(2048)
                n += 1
        except socket.timeout:
            print("count", n, flush=True)
"""


class UdpPeer:
    """One UDP socket (bound to 0.0.0.0:random) in a client namespace."""

    def __init__(self, lab, host):
        self.host = host
        self.p = subprocess.Popen(lab.exec_prefix(host) + [sys.executable, "-c", UDP_PEER], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                                  start_new_session=True)
        lab.procs.append((host, self.p))  # the lab stops it too, should a test fail first
        self.lab = lab
        self.port = int(self._line().split()[1])

    def _line(self):
        line = self.p.stdout.readline()
        if not line:
            raise AssertionError(f"the UDP helper in {self.host} died: {self.p.stderr.read()}")
        return line.strip()

    def send(self, ip, port, text):
        self.p.stdin.write(f"send {ip} {port} {text}\n")
        assert self._line() == "sent"

    def recv(self, timeout):
        """(ip, port, text) of the next datagram, or None after `timeout` s."""
        self.p.stdin.write(f"recv {timeout}\n")
        parts = self._line().split()
        return None if parts[0] == "nothing" else (parts[1], int(parts[2]), parts[3])

    def burst(self, ip, port, n):
        """Sends n datagrams to ip:port at once."""
        self.p.stdin.write(f"burst {ip} {port} {n}\n")
        assert self._line() == "sent"

    def count(self, quiet):
        """How many datagrams arrive until none came for `quiet` s."""
        self.p.stdin.write(f"count {quiet}\n")
        return int(self._line().split()[1])

    def close(self):
        self.p.stdin.close()
        self.lab.stop_proc(self.p, timeout=5)
        self.p.stdout.close()
        self.p.stderr.close()


def srv_socket(ip=SERVER_IP):
    """A UDP socket on `ip` in srv (the caller is in srv)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, 33, 1 << 22)  # SO_RCVBUFFORCE (root): room for a burst
    s.bind((ip, 0))
    s.settimeout(3.0)
    return s


def srv_recv(s, what):
    try:
        data, addr = s.recvfrom(2048)
    except socket.timeout:
        raise AssertionError(f"srv received nothing: {what}") from None
    return addr[0], addr[1], data.decode()


# ---------------------------------------------------------------------------
# the lab itself


def test_lab_is_built_as_described(lab):
    """Every namespace exists with loopback up; the routers forward, NAT
    with MASQUERADE (r3 with --random-fully) and have the firewall table;
    the clients' default route is their router."""
    listed = mm.run(["ip", "netns", "list"]).stdout
    for host in lab.HOSTS:
        assert lab.ns(host) in listed, f"namespace {lab.ns(host)} missing:\n{listed}"
        assert lab.lo_is_up(host), f"lo is down in {host}"
    addrs = lab.ip("srv", "-4", "-o", "addr", "show", "dev", "br0").stdout
    assert f"{SERVER_IP}/24" in addrs and f"{SERVER_IP2}/24" in addrs, addrs
    for n in labmod.SITES:
        r, c = f"r{n}", f"c{n}"
        rules = lab.ruleset(r)
        assert lab.run(r, "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "1", f"{r} does not forward"
        masq = [ln for ln in rules.splitlines() if "MASQUERADE" in ln]
        assert len(masq) == 1 and "-o wan" in masq[0], f"{r}: one MASQUERADE on wan expected:\n{rules}"
        assert ("--random-fully" in masq[0]) == labmod.SITES[n], f"{r}: wrong NAT kind:\n{rules}"
        assert f"table inet {labmod.FW_TABLE}" in rules and "policy drop" in rules, f"{r}: no firewall:\n{rules}"
        assert f"table inet {labmod.LOSS_TABLE}" not in rules, f"{r}: loss left on:\n{rules}"
        assert f"{wan_ip(n)}/24" in lab.ip(r, "-4", "-o", "addr", "show", "dev", "wan").stdout
        route = lab.ip(c, "route", "show", "default").stdout
        assert f"via {labmod.lan_gw(n)}" in route, f"{c}: default route {route!r}"
    assert lab.build_seconds < 30, f"the lab took {lab.build_seconds:.1f}s to build"


def test_client_udp_leaves_with_its_routers_address(lab):
    """A datagram from cN reaches srv from rN's WAN address. One socket
    sending to two destinations (203.0.113.1 and .2) keeps its port on r1
    and r2 (Linux keeps the source port: an endpoint-independent mapping)
    and gets a new port per destination on r3 (symmetric)."""
    with lab.srv():
        a, b = srv_socket(SERVER_IP), srv_socket(SERVER_IP2)
        try:
            for n in labmod.SITES:
                peer = UdpPeer(lab, f"c{n}")
                try:
                    peer.send(SERVER_IP, a.getsockname()[1], f"c{n}-to-1")
                    peer.send(SERVER_IP2, b.getsockname()[1], f"c{n}-to-2")
                    got_a = srv_recv(a, f"c{n} -> {SERVER_IP}")
                    got_b = srv_recv(b, f"c{n} -> {SERVER_IP2}")
                finally:
                    peer.close()
                seen = f"c{n} (local port {peer.port}) seen as {got_a} and {got_b}"
                assert got_a[0] == wan_ip(n) and got_b[0] == wan_ip(n), seen
                assert got_a[2] == f"c{n}-to-1" and got_b[2] == f"c{n}-to-2", seen
                if n == SYMMETRIC:
                    assert got_a[1] != got_b[1], f"r{n} should map per destination: {seen}"
                else:
                    assert got_a[1] == got_b[1] == peer.port, f"r{n} should keep the source port: {seen}"
        finally:
            a.close()
            b.close()


def test_unsolicited_udp_does_not_reach_a_client(lab):
    """The home-router firewall: datagrams to r1's WAN address that answer
    nothing c1 sent (from srv, and an "early probe" from c2 behind r2) are
    not delivered, and leave no conntrack entry behind: c1's own datagram
    from that port afterwards still keeps the port, and srv's answer to it
    is delivered."""
    with lab.srv():
        s = srv_socket(SERVER_IP)
        c1, c2 = UdpPeer(lab, "c1"), UdpPeer(lab, "c2")
        try:
            s.sendto(b"unsolicited", (wan_ip(1), c1.port))
            c2.send(wan_ip(1), c1.port, "early-probe")
            got = c1.recv(1.0)
            assert got is None, f"c1 received an unsolicited datagram through r1's firewall: {got}"

            c1.send(SERVER_IP, s.getsockname()[1], "out")
            ip, port, _ = srv_recv(s, "c1's datagram after the unsolicited ones")
            assert (ip, port) == (wan_ip(1), c1.port), (
                f"c1's datagram from port {c1.port} reached srv from {ip}:{port}: the dropped probes changed r1's mapping")
            s.sendto(b"answer", (ip, port))
            assert c1.recv(2.0) == (SERVER_IP, s.getsockname()[1], "answer"), "srv's answer did not reach c1"
        finally:
            s.close()
            c1.close()
            c2.close()


def _learn_mapping(peer, s):
    """peer's public address as srv sees it."""
    peer.send(SERVER_IP, s.getsockname()[1], f"from-{peer.host}")
    ip, port, text = srv_recv(s, f"{peer.host}'s datagram")
    assert text == f"from-{peer.host}"
    return ip, port


def test_hand_made_punch_works_between_eim_nats_and_not_with_symmetric(lab):
    """A hole punch by hand, as an agent would do it: each side learns its
    public address from srv, then both send to each other. Between c1 and
    c2 (endpoint-independent), c2's early probe is dropped by r1, c1's
    datagram opens r1 and passes r2, and the answer comes back. With c3
    (symmetric r3) nothing passes: r3 maps c3's probe to c1 to another port
    than the one srv saw, so neither router lets the other's datagrams in."""
    with lab.srv():
        s = srv_socket(SERVER_IP)
        c1, c2, c3 = UdpPeer(lab, "c1"), UdpPeer(lab, "c2"), UdpPeer(lab, "c3")
        try:
            m1, m2, m3 = _learn_mapping(c1, s), _learn_mapping(c2, s), _learn_mapping(c3, s)
            mapped = f"mapped: c1 {m1}, c2 {m2}, c3 {m3}"

            c2.send(*m1, "early")  # reaches r1 before c1 sent anything to r2: dropped
            assert c1.recv(0.5) is None, f"r1 let c2's early probe in ({mapped})"
            c1.send(*m2, "punch-1")
            got = c2.recv(2.0)
            assert got == (m1[0], m1[1], "punch-1"), f"c1 -> c2 through both NATs: got {got} ({mapped})"
            c2.send(*m1, "punch-2")
            got = c1.recv(2.0)
            assert got == (m2[0], m2[1], "punch-2"), f"c2 -> c1 through both NATs: got {got} ({mapped})"

            c3.send(*m1, "early")  # r3 gives this destination a new port
            c1.send(*m3, "punch-1")
            got3 = c3.recv(1.0)
            c3.send(*m1, "punch-2")
            got1 = c1.recv(1.0)
            assert got3 is None and got1 is None, (
                f"a punch through the symmetric r3 should fail: c3 got {got3}, c1 got {got1} ({mapped})")
        finally:
            s.close()
            for p in (c1, c2, c3):
                p.close()


def _srv_count(s, quiet):
    """Datagrams arriving on s until none came for `quiet` s: (count, last source)."""
    n, src = 0, None
    s.settimeout(quiet)
    try:
        while True:
            src = s.recvfrom(2048)[1]
            n += 1
    except socket.timeout:
        return n, src


def test_loss_drops_about_30_percent_each_way_and_goes_away(lab):
    """Lab.loss("r1", 30) makes r1 drop about 30% of what it forwards in
    each direction (its nft counter accounts for every missing datagram);
    once removed, nothing is lost and no loss table is left."""
    n = 300
    with lab.srv():
        s = srv_socket(SERVER_IP)
        c1 = UdpPeer(lab, "c1")
        try:
            with lab.loss("r1", 30):
                c1.burst(SERVER_IP, s.getsockname()[1], n)
                out, src = _srv_count(s, 0.5)
                assert src is not None, "no datagram of 300 passed r1 with 30% loss"
                for _ in range(n):
                    s.sendto(b"in", src)
                back = c1.count(0.5)
                drops = lab.loss_drops("r1")
            seen = f"c1 -> srv {out}/{n}, srv -> c1 {back}/{n}, r1's rule dropped {drops}"
            # Binomial(300, 0.7): mean 210, sd 8; the bounds are 6 sd away
            assert 160 <= out <= 260 and 160 <= back <= 260, f"not about 30% loss: {seen}"
            assert drops == 2 * n - out - back, f"losses the rule did not count: {seen}"

            assert lab.loss_drops("r1") is None, f"the loss table is still on r1:\n{lab.ruleset('r1')}"
            c1.burst(SERVER_IP, s.getsockname()[1], 100)
            out2, src2 = _srv_count(s, 0.5)
            for _ in range(100):
                s.sendto(b"in", src2)
            back2 = c1.count(0.5)
            assert (out2, back2) == (100, 100), f"loss after its removal: {out2}/100 out, {back2}/100 back"
        finally:
            s.close()
            c1.close()


# ---------------------------------------------------------------------------
# coturn's verdict on each NAT (RFC 5780)


@pytest.fixture(scope="module")
def turn(lab, run_dir):
    """turnserver in srv on 203.0.113.1 and .2, ports 3480/3481."""
    with lab.srv():
        t = labstack.TurnServer(lab, run_dir).start()
    try:
        yield t
    finally:
        t.stop()


@pytest.mark.parametrize("n", sorted(labmod.SITES))
def test_natdiscovery_classifies_the_lab_nats(lab, turn, n):
    """turnutils_natdiscovery -m (RFC 5780 mapping discovery against coturn
    on both of srv's addresses) finds an endpoint-independent mapping
    behind r1 and r2 and not behind r3: the lab's NATs are what they claim."""
    verdict, out = labstack.natdiscovery(lab, f"c{n}")
    expected = "address-and-port-dependent" if n == SYMMETRIC else "endpoint-independent"
    assert verdict == expected, f"natdiscovery in c{n}: {verdict!r}, expected {expected!r}\n{out}\n{turn.logs()}"
    assert f"UDP reflexive addr: {wan_ip(n)}:" in out, f"natdiscovery in c{n} did not see r{n}'s address:\n{out}"


# ---------------------------------------------------------------------------
# the suite in srv, and agents in the clients


def test_clients_reach_the_gateway_through_their_routers(lab, stack):
    """From every client, https://203.0.113.1:PORT answers through the NAT
    with the lab's certificate (IP SAN) and the gateway's JSON 401 for a
    request without a client certificate."""
    url = f"{stack.server_url}/api/relay/register"
    for n in labmod.SITES:
        p = lab.run(f"c{n}", "curl", "-sS", "--max-time", "10", "--cacert", stack.ca.cert, "-H",
                    "content-type: application/json", "-d", "{}", "-w", "\n%{http_code}", url, check=False,
                    timeout=20)
        assert p.returncode == 0 and p.stdout.rstrip().endswith("401"), f"c{n}: curl {url}: {p!r}"
        assert '"client_certificate_required"' in p.stdout, f"c{n}: {p.stdout}"


@pytest.fixture(scope="module")
def agents(stack):
    """One registered identity per client: a1 in c1, a2 in c2, a3 in c3."""
    return {n: stack.agent(f"lab{n}", f"c{n}") for n in labmod.SITES}


@pytest.fixture(scope="module")
def daemons(stack, agents):
    """`mm up` in every client with the addresses it finds itself: c1
    allows a2 and a3, c2 and c3 allow a1."""
    a1, a2, a3 = agents[1], agents[2], agents[3]
    started = {}
    try:
        started[1] = stack.up(a1, allow=[a2.email, a3.email])
        started[2] = stack.up(a2, allow=[a1.email])
        started[3] = stack.up(a3, allow=[a1.email])
        yield started
    finally:
        errors = []
        for d in started.values():
            try:
                d.stop()
            except AssertionError as e:
                errors.append(str(e))
        assert not errors, "\n".join(errors)


def test_tracker_records_the_routers_public_address(stack, agents, daemons):
    """(a) An agent behind r1 reports its own 10.0.1.2 and the tracker
    observes r1's WAN address 203.0.113.11 (likewise c2 / r2): in the online
    event, in the broadcasts row, and in a lookup from the other client;
    never a 10.0.x.x address as observed."""
    for n, peer in ((1, 2), (2, 1)):
        a, d, other = agents[n], daemons[n], agents[peer]
        online = next(e for e in d.events() if e.get("event") == "online")
        assert online["observed_address"] == wan_ip(n), f"c{n}'s online event: {online}"
        assert online["addresses"] == [client_ip(n)], f"c{n} should find only {client_ip(n)}: {online}"

        row = stack.stores.broadcast(a.peer_id)
        assert row is not None and row["observed_address"] == wan_ip(n), f"broadcasts row of c{n}: {row}"

        rec = other.ok("lookup", a.email).json["peer"]
        cands = {(c["ip"], c["source"], c["scope"]) for c in rec["candidates"]}
        assert (wan_ip(n), "observed", "public") in cands, f"lookup of c{n} from c{peer}: {rec}"
        assert (client_ip(n), "reported", "private") in cands, f"lookup of c{n} from c{peer}: {rec}"
        bad = [c for c in rec["candidates"] if c["source"] == "observed" and c["ip"].startswith("10.")]
        assert not bad, f"a private address observed for c{n}: {rec}"


# ---- mm punch ---------------------------------------------------------------

PUNCH_OK_KEYS = {"ok", "email", "peer_id", "local", "remote", "mapped", "rtt_ms", "time_ms", "attempts",
                 "nat_mapping", "peer_nat_mapping", "session_id"}


def _ip_port(text):
    m = re.fullmatch(r"(\d+\.\d+\.\d+\.\d+):(\d+)", str(text))
    assert m, f"not an ip:port: {text!r}"
    return m.group(1), int(m.group(2))


def punch(agent, target, timeout=60, *extra):
    """`mm --json punch TARGET` in agent's namespace: (Result, wall seconds)."""
    t0 = time.monotonic()
    try:
        r = agent.mm("punch", target.email, *extra, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"mm punch {target.email} from {agent.host} still ran after {timeout}s: "
                             f"stdout {e.stdout!r} stderr {e.stderr!r}") from None
    return r, time.monotonic() - t0


def assert_punched(r, wall, agent, target, n_from, n_to, context, lossy=False):
    """A successful punch from site n_from to site n_to, as the contract says.
    `lossy`: c1's second STUN port may have stayed silent through the loss
    (nat_mapping null: unknown), but never reads as address-dependent."""
    assert r.rc == 0 and r.json is not None and r.json.get("ok") is True, f"punch failed: {r!r}\n{context()}"
    j = r.json
    missing = PUNCH_OK_KEYS - set(j)
    assert not missing, f"punch answer without {sorted(missing)}: {j}"
    assert j["email"] == target.email and j["peer_id"] == target.peer_id, j
    assert _ip_port(j["local"])[0] == client_ip(n_from), f"local should be {client_ip(n_from)}:port: {j}"
    assert _ip_port(j["remote"])[0] == wan_ip(n_to), f"remote should be r{n_to}'s {wan_ip(n_to)}:port: {j}"
    assert _ip_port(j["mapped"])[0] == wan_ip(n_from), f"mapped should be r{n_from}'s {wan_ip(n_from)}:port: {j}"
    assert j["nat_mapping"] == "endpoint-independent" or (lossy and j["nat_mapping"] is None), j
    assert j["peer_nat_mapping"] == "endpoint-independent", j
    assert isinstance(j["rtt_ms"], (int, float)) and j["rtt_ms"] >= 0, j
    assert isinstance(j["time_ms"], (int, float)) and 0 < j["time_ms"] <= wall * 1000 + 50, (
        f"time_ms {j.get('time_ms')} vs the process's {wall * 1000:.0f} ms: {j}")
    assert j["rtt_ms"] <= j["time_ms"], j
    assert type(j["attempts"]) is int and j["attempts"] >= 1, j
    assert isinstance(j["session_id"], str) and re.fullmatch(r"[0-9a-f]{32}", j["session_id"]), j
    return j


def _context(lab, daemons, *sites):
    """What the peers' daemons printed, for a failure message (and the loss counters)."""

    def text():
        parts = []
        for n in sites:
            parts.append(f"--- mm up in c{n}: events {daemons[n].events()[-8:]}\n{mm.tail(daemons[n].log, 20)}")
            drops = lab.loss_drops(f"r{n}")
            if drops is not None:
                parts.append(f"r{n} loss rule dropped {drops} packets")
        return "\n".join(parts)

    return text


def test_punch_between_two_eim_nats_succeeds(lab, agents, daemons):
    """(b) c1 punches c2 (both behind endpoint-independent NATs; c2 allows
    c1): exit 0 and the contract's JSON: local is c1's 10.0.1.2:port, remote
    is r2's 203.0.113.12:port, mapped r1's, both NATs endpoint-independent;
    c2's daemon reports the punch."""
    a1, a2 = agents[1], agents[2]
    r, wall = punch(a1, a2)
    assert_punched(r, wall, a1, a2, 1, 2, _context(lab, daemons, 1, 2))
    j = r.json
    ev = daemons[2].wait_event("punched", timeout=10)
    assert ev.get("session_id") == j["session_id"], f"c2's punched event is for another session: {ev} vs {j}"
    assert ev.get("remote") == j["mapped"], f"c2 should see c1 at r1's mapping {j['mapped']}: {ev}"


def test_punch_succeeds_with_30_percent_loss_on_r1(lab, agents, daemons):
    """(c) The same punch with r1 dropping 30% of what it forwards, both
    directions (HTTPS to the gateway included): the agent's own retries
    carry it through. The loss is removed afterwards, even on failure."""
    a1, a2 = agents[1], agents[2]
    context = _context(lab, daemons, 1, 2)
    with lab.loss("r1", 30):
        r, wall = punch(a1, a2, 90)
        drops = lab.loss_drops("r1")
        assert_punched(r, wall, a1, a2, 1, 2, context, lossy=True)
    assert drops, f"the loss rule on r1 dropped nothing ({drops!r}): was it in place?\n{lab.ruleset('r1')}"
    assert lab.loss_drops("r1") is None, "the loss table is still on r1"


def _assert_symmetric_failure(r, wall, code, context):
    assert r.rc == 1, f"expected exit 1, got {r!r}\n{context()}"
    assert wall < 30, f"a punch that cannot work took {wall:.1f}s (limit 30 s): {r!r}"
    assert r.json is not None and set(r.json) == {"ok", "error"} and r.json["ok"] is False, r
    err = r.json["error"]
    assert set(err) == {"code", "message"} and err["message"].strip(), r
    assert err["code"] == code, f"expected {code!r}: {r.json}\n{context()}"
    assert "symmetric" in err["message"].lower(), f"the message should say the NAT is symmetric: {r.json}"


def test_punch_towards_a_symmetric_nat_fails_cleanly(lab, agents, daemons):
    """(d) c1 punches c3, behind the symmetric r3 (c3 allows c1): exit 1
    within 30 s with {"ok":false,"error":{...}} saying the peer's NAT is
    symmetric; every daemon keeps running."""
    r, wall = punch(agents[1], agents[3], 45)
    _assert_symmetric_failure(r, wall, "peer_symmetric_nat", _context(lab, daemons, 1, 3))
    assert daemons[1].alive() and daemons[3].alive()


def test_punch_from_behind_a_symmetric_nat_fails_cleanly(lab, agents, daemons):
    """(d) c3, behind the symmetric r3, punches c1 (c1 allows c3): exit 1
    within 30 s saying our own NAT is symmetric; every daemon keeps running."""
    r, wall = punch(agents[3], agents[1], 45)
    _assert_symmetric_failure(r, wall, "symmetric_nat", _context(lab, daemons, 3, 1))
    assert daemons[1].alive() and daemons[3].alive()


# ---- mm stun vs coturn -----------------------------------------------------------


@pytest.mark.parametrize("n", sorted(labmod.SITES))
def test_mm_stun_agrees_with_natdiscovery(lab, turn, stack, agents, n):
    """(e) `mm stun` in cN (mm-signal's STUN on 203.0.113.1:3478 and :3479)
    sees rN's address and classifies the NAT as coturn's natdiscovery does
    (address- and port-dependent counts as address-dependent)."""
    verdict, out = labstack.natdiscovery(lab, f"c{n}")
    assert verdict in ("endpoint-independent", "address-and-port-dependent", "address-dependent"), out
    expected = "endpoint-independent" if verdict == "endpoint-independent" else "address-dependent"

    r = agents[n].mm("stun", timeout=30)
    assert r.rc == 0 and r.json is not None and r.json.get("ok") is True, f"mm stun in c{n}: {r!r}"
    j = r.json
    for k in ("local", "mapped", "mapped_alt", "nat_mapping", "stun", "rtt_ms"):
        assert k in j, f"mm stun answer without {k!r}: {j}"
    assert _ip_port(j["local"])[0] == client_ip(n), j
    assert _ip_port(j["mapped"])[0] == wan_ip(n), j
    assert j["stun"] == f"{SERVER_IP}:{labstack.STUN_PORT}", j
    assert j["mapped_alt"] is not None and _ip_port(j["mapped_alt"])[0] == wan_ip(n), j
    assert j["nat_mapping"] == expected, (
        f"mm stun in c{n} says {j['nat_mapping']!r}, natdiscovery says {verdict!r}: {j}\n{out}")
    assert (_ip_port(j["mapped"])[1] == _ip_port(j["mapped_alt"])[1]) == (expected == "endpoint-independent"), j
