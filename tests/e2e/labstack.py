"""The real Matchmaker suite inside the NAT lab's `srv` namespace, for the
end-to-end tests (tests/e2e/conftest.py) and the benchmark
(tests/load/bench_punch_lab.py).

The calling thread enters `srv` (Lab.enter_srv, setns(2)) before anything
starts, so the integration harness (tests/integration/mm.py) runs unchanged:
PostgreSQL and Redis (unix sockets), mm-tracker and mm-signal on 127.0.0.1
of srv, readiness checked over HTTP from this process (in srv too). Only two
settings differ from the integration suite:

- mm-gateway listens on 0.0.0.0 (MM_GATEWAY_ADDR), so clients reach it at
  https://203.0.113.1:PORT through their routers, with a certificate whose
  subjectAltName includes IP:203.0.113.1, and routes /api/signal to the
  mm-signal (MM_SIGNAL_URL);
- mm-signal answers STUN on UDP 3478 and 3479 (MM_STUN_PORT,
  MM_STUN_ALT_PORT) on every address of srv: the ports an agent uses by
  default, free in a fresh namespace.

Agents (mm_agent.Agent) run in a client namespace (`ip netns exec cN`),
pin the CA, and discover their own 10.0.N.2 address.
"""

import os
import socket
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import lab as labmod  # noqa: E402
import mm  # noqa: E402
import mm_agent  # noqa: E402

STUN_PORT = 3478
STUN_ALT_PORT = 3479
TURN_PORT = 3480  # coturn's turnserver, RFC 5780: 3480 and 3481 on both of srv's addresses
TURN_ALT_PORT = 3481

SERVER_SAN = f"DNS:localhost,IP:127.0.0.1,IP:{labmod.SERVER_IP}"


class LabStack:
    """Stores, mm-tracker, mm-signal and mm-gateway in the lab's srv. A
    context manager; the calling thread stays in srv until close()."""

    def __init__(self, lab, run_dir, *, gateway_env=None, signal_env=None):
        self.lab = lab
        self.run_dir = run_dir
        self.gateway_env = gateway_env or {}
        self.signal_env = signal_env or {}
        self.certs = mm.CertFactory(os.path.join(run_dir, "c"))
        self.stores = mm.Stores(os.path.join(run_dir, "s"))
        self.ca = self.server_cert = None
        self.tracker = self.signal = self.gateway = None
        self._entered = False
        self._seq = 0

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.close(check=False)
            raise
        return self

    def __exit__(self, et, ev, tb):
        self.close(check=et is None)
        return False

    def start(self):
        if not self.lab.in_srv:
            self.lab.enter_srv()
            self._entered = True
        assert self.lab.lo_is_up("srv"), "lo is down in srv: the services' loopback listeners would be unreachable"
        self.ca = self.certs.ca("labca")
        self.server_cert = self.certs.issue(self.ca, alg="p256", san=SERVER_SAN, cn="localhost", extensions="server")
        self.stores.start()
        self.tracker = mm.Tracker(self.stores, self.run_dir, name="mm-tracker-lab").start()
        self.stores.wait_presence_marker()
        self.signal = mm.Signal(self.stores, self.run_dir, name="mm-signal-lab", MM_STUN_PORT=str(STUN_PORT),
                                MM_STUN_ALT_PORT=str(STUN_ALT_PORT), **self.signal_env).start()
        self.gateway = mm.Gateway(self.tracker.url, self.server_cert, self.run_dir, name="mm-gateway-lab",
                                  MM_GATEWAY_ADDR="0.0.0.0", MM_SIGNAL_URL=self.signal.url,
                                  **self.gateway_env).start()
        return self

    @property
    def server_url(self):
        """The gateway as the clients see it, through their routers."""
        return f"https://{labmod.SERVER_IP}:{self.gateway.port}"

    def close(self, check=True):
        """Stops the services (asserting clean exits when check) and the
        stores, then takes the thread back to its own namespace."""
        errors = []
        try:
            for p in (self.gateway, self.signal, self.tracker):
                if p is None or p.p is None:
                    continue
                try:
                    if check:
                        p.stop_checked()
                    else:
                        p.terminate()
                except AssertionError as e:
                    errors.append(str(e))
            if self.stores.pg_url or self.stores.redis_url:
                self.stores.stop()
        finally:
            if self._entered:
                self.lab.leave_srv()
                self._entered = False
        if check:
            assert not errors, "\n".join(errors)

    # -- agents ------------------------------------------------------------------

    def agent(self, tag, host, register=True):
        """A new identity whose `mm` runs in `host` (e.g. "c1"), registered."""
        self._seq += 1
        a = mm_agent.Agent(os.path.join(self.run_dir, "agents"), f"{tag}{self._seq}", self.server_url, self.ca.cert)
        a.prefix = self.lab.exec_prefix(host)
        a.host = host
        a.init(mm.uniq_email(tag))
        if register:
            a.register()
        return a

    def up(self, agent, allow=(), **kw):
        """`mm up --allow EMAIL...` of `agent` in its namespace, with the
        addresses it finds itself (advertise=()), a share of its own and
        port 0; waits for `online`."""
        share = os.path.join(agent.dir, "share")
        os.makedirs(share, exist_ok=True)
        return agent.up(share, allow=allow, advertise=(), port=0, **kw)


# ---------------------------------------------------------------------------
# coturn's turnserver in srv (RFC 5780 needs two addresses: .1 and .2)


class TurnServer:
    """turnserver (Debian coturn) in srv, STUN only, listening on UDP
    TURN_PORT and TURN_ALT_PORT of 203.0.113.1 and 203.0.113.2, so that it
    answers RFC 5780 CHANGE-REQUESTs and turnutils_natdiscovery can classify
    a client's NAT. Stopped by pid."""

    def __init__(self, lab, run_dir):
        self.lab = lab
        self.dir = os.path.join(run_dir, "turn")
        os.makedirs(self.dir, exist_ok=True)
        self.log = os.path.join(self.dir, "turnserver.log")
        self.out = os.path.join(self.dir, "turnserver.out")
        self.p = None

    def start(self):
        argv = [
            "turnserver", "-n", "--stun-only", "--no-cli", "--no-tls", "--no-dtls",
            "-L", labmod.SERVER_IP, "-L", labmod.SERVER_IP2,
            "--listening-port", str(TURN_PORT), "--alt-listening-port", str(TURN_ALT_PORT),
            "--db", os.path.join(self.dir, "turndb"), "--pidfile", os.path.join(self.dir, "turnserver.pid"),
            "--log-file", self.log, "--simple-log", "--no-stdout-log",
        ]
        self.p = self.lab.popen("srv", argv, self.out)
        deadline = time.monotonic() + 15
        while True:
            if self.p.poll() is not None:
                raise AssertionError(f"turnserver exited {self.p.returncode} while starting:\n{self.logs()}")
            if all(stun_binding(ip, port, timeout=0.3) for ip in (labmod.SERVER_IP, labmod.SERVER_IP2)
                   for port in (TURN_PORT, TURN_ALT_PORT)):
                return self
            if time.monotonic() > deadline:
                raise AssertionError(f"turnserver does not answer STUN on {labmod.SERVER_IP}/"
                                     f"{labmod.SERVER_IP2} ports {TURN_PORT}/{TURN_ALT_PORT}:\n{self.logs()}")
            time.sleep(0.1)

    def logs(self, lines=30):
        return mm.tail(self.out, lines) + "\n" + mm.tail(self.log, lines)

    def stop(self):
        if self.p is not None:
            self.lab.stop_proc(self.p)
            self.p = None


def stun_binding(ip, port, timeout=1.0):
    """One STUN Binding request (RFC 5389, no attributes) from this thread's
    namespace; True when a Binding success with our transaction id comes back."""
    txid = os.urandom(12)
    req = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + txid
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(req, (ip, port))
            data = s.recv(2048)
        except OSError:
            return False
    return len(data) >= 20 and data[:2] == b"\x01\x01" and data[8:20] == txid


NATDISCOVERY_VERDICTS = {
    "NAT with Endpoint Independent Mapping!": "endpoint-independent",
    "NAT with Address Dependent Mapping!": "address-dependent",
    "NAT with Address and Port Dependent Mapping!": "address-and-port-dependent",
    "No NAT": "none",
}


def natdiscovery(lab, host):
    """`turnutils_natdiscovery -m -p TURN_PORT 203.0.113.1` in `host`:
    returns (verdict, output); verdict is a value of NATDISCOVERY_VERDICTS,
    or None when its output has none of them."""
    p = lab.run(host, "turnutils_natdiscovery", "-m", "-p", TURN_PORT, labmod.SERVER_IP, check=False, timeout=60)
    out = f"(exit {p.returncode})\n{p.stdout}{p.stderr}"
    for text, verdict in NATDISCOVERY_VERDICTS.items():
        if text in p.stdout:
            return verdict, out
    return None, out
