"""The NAT lab: network namespaces as hosts, for the end-to-end tests
(tests/e2e) and the hole-punching benchmark (tests/load/bench_punch_lab.py).

                          srv  ("the internet")
             br0: 203.0.113.1/24, 203.0.113.2/24 (RFC 5737 only)
              |                 |                 |
     wan 203.0.113.11  wan 203.0.113.12  wan 203.0.113.13
             r1                r2                r3          home routers
     lan 10.0.1.1/24   lan 10.0.2.1/24   lan 10.0.3.1/24
              |                 |                 |
     eth0 10.0.1.2     eth0 10.0.2.2     eth0 10.0.3.2
             c1                c2                c3          clients

- r1, r2: `iptables -t nat -A POSTROUTING -o wan -j MASQUERADE`. Linux keeps
  the source port when it is free, so the mapping is endpoint-independent
  in practice (the same public port whatever the destination).
- r3: `MASQUERADE --random-fully`: a new random port for every new
  conntrack entry, i.e. per destination: a symmetric NAT.
- every router: a home router's firewall (nft table `inet mmlab_fw`): from
  the WAN only established/related traffic enters (INPUT) or is forwarded
  (FORWARD); new connections are forwarded only from LAN to WAN. Without
  it, an early punch probe that reaches the other router before that
  router's own client has sent anything creates a conntrack entry there,
  and the NAT then gives the client's later packet a random port: a punch
  that should work fails. A dropped packet leaves no conntrack entry.
- loss: `Lab.loss(router, 30)` adds the table `inet mmlab_loss` with
  `numgen random mod 100 < 30 counter drop` on the router's FORWARD hook
  (both directions); removing the loss deletes that table.

Every veth is created inside the namespaces (`ip -n A link add X type veth
peer name Y netns B`), so nothing ever appears in the machine's own
namespace and deleting the namespaces removes everything. Names carry a
per-run prefix (`mml<pid % 100000>`), and close() (or cleanup_leftovers())
touches only namespaces of that prefix.

The services run in `srv`: the caller enters it with enter_srv() (setns(2)
on the calling thread; every process it starts afterwards is born there)
and leaves with leave_srv(). Clients and their commands run through
`ip netns exec` (exec_prefix()).

Standard library only (ctypes for setns); needs root, `ip`, `iptables`, `nft`.
"""

import contextlib
import ctypes
import os
import signal
import subprocess
import time

CLONE_NEWNET = 0x40000000

SERVER_IP = "203.0.113.1"
SERVER_IP2 = "203.0.113.2"  # the second address of srv, for RFC 5780 (coturn)
FW_TABLE = "mmlab_fw"
LOSS_TABLE = "mmlab_loss"

# site number -> is its NAT symmetric (MASQUERADE --random-fully)?
SITES = {1: False, 2: False, 3: True}


def wan_ip(n):
    """The public (WAN) address of router rN."""
    return f"203.0.113.{10 + n}"


def lan_gw(n):
    return f"10.0.{n}.1"


def client_ip(n):
    """The private address of client cN."""
    return f"10.0.{n}.2"


class LabUnavailable(Exception):
    """This machine cannot host the lab (not root, namespaces refused, no
    netfilter in a namespace); str() says why."""


class LabError(AssertionError):
    """A lab command failed where it should not have."""


FW_RULES = """\
table inet {table} {{
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname "wan" ct state established,related accept
        iifname "wan" drop
    }}
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "lan" oifname "wan" ct state new accept
    }}
}}
"""

LOSS_RULES = """\
table inet {table} {{
    chain forward {{
        type filter hook forward priority filter - 10; policy accept;
        numgen random mod 100 < {pct} counter drop
    }}
}}
"""


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
    return libc


def setns(fd):
    """setns(2) of the calling thread into the network namespace of `fd`."""
    if _libc().setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")


class Lab:
    """The topology above. Use as a context manager (or build() / close()).
    Host names are short ("srv", "r1", "c1", ...); ns(host) gives the
    namespace's full name."""

    HOSTS = ("srv",) + tuple(f"r{n}" for n in SITES) + tuple(f"c{n}" for n in SITES)

    def __init__(self, prefix=None, log=None):
        self.prefix = prefix or f"mml{os.getpid() % 100000}"
        self.created = []  # namespaces this Lab made, in order
        self.procs = []  # (host, Popen) started through popen()
        self._home_fd = None  # our own namespace while the thread is in srv
        self._log = log  # optional callable(str): what the lab does
        self.build_seconds = None

    # -- names ---------------------------------------------------------------

    def ns(self, host):
        assert host in self.HOSTS, host
        return f"{self.prefix}{host}"

    def exec_prefix(self, host):
        """The argv prefix that runs a command in `host`."""
        return ["ip", "netns", "exec", self.ns(host)]

    @staticmethod
    def wan_ip(n):
        return wan_ip(n)

    @staticmethod
    def client_ip(n):
        return client_ip(n)

    # -- commands --------------------------------------------------------------

    def _say(self, text):
        if self._log:
            self._log(text)

    @staticmethod
    def _cmd(argv, *, check=True, input=None, timeout=30):
        p = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout,
                           stdin=None if input is not None else subprocess.DEVNULL)
        if check and p.returncode != 0:
            raise LabError(f"lab command failed ({p.returncode}): {' '.join(argv)}\n"
                           f"stdout: {p.stdout.strip()}\nstderr: {p.stderr.strip()}")
        return p

    def ip(self, host, *args, check=True):
        """`ip -n NS ARGS`."""
        return self._cmd(["ip", "-n", self.ns(host), *args], check=check)

    def run(self, host, *argv, check=True, input=None, timeout=30):
        """Runs argv in `host`; returns the CompletedProcess (text)."""
        return self._cmd(self.exec_prefix(host) + [str(a) for a in argv], check=check, input=input,
                         timeout=timeout)

    def nft(self, host, script):
        return self._cmd(self.exec_prefix(host) + ["nft", "-f", "-"], input=script)

    def popen(self, host, argv, log_path, env=None):
        """Starts argv in `host` in the background (stdout and stderr to
        log_path); stopped by pid in close() if the caller has not. `ip
        netns exec` execs the command, so the pid is the command's own."""
        logf = open(log_path, "ab")
        try:
            p = subprocess.Popen(self.exec_prefix(host) + [str(a) for a in argv], stdin=subprocess.DEVNULL,
                                 stdout=logf, stderr=logf, env=env, start_new_session=True)
        finally:
            logf.close()
        self.procs.append((host, p))
        return p

    @staticmethod
    def stop_proc(p, timeout=10.0):
        """SIGTERM by pid, SIGKILL after `timeout`; returns the exit code
        (None when it had to be killed)."""
        if p.poll() is not None:
            return p.returncode
        os.kill(p.pid, signal.SIGTERM)
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(5)
            return None

    # -- building ------------------------------------------------------------------

    def __enter__(self):
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, et, ev, tb):
        self.close()
        return False

    def _add_ns(self, host):
        name = self.ns(host)
        p = self._cmd(["ip", "netns", "add", name], check=False)
        if p.returncode != 0:
            if not self.created:
                raise LabUnavailable(f"ip netns add {name} failed: {p.stderr.strip() or p.returncode}")
            raise LabError(f"ip netns add {name}: {p.stderr.strip()}")
        self.created.append(name)
        self.ip(host, "link", "set", "lo", "up")

    def build(self):
        t0 = time.monotonic()
        if os.geteuid() != 0:
            raise LabUnavailable("the NAT lab needs root (network namespaces, iptables, nft)")
        self.cleanup_leftovers()
        for host in self.HOSTS:
            self._add_ns(host)

        # netfilter must work in a namespace of ours: the first use decides
        # between "this machine cannot" (skip) and a real failure later on.
        for probe in (["nft", "list", "ruleset"], ["iptables", "-w", "-t", "nat", "-L", "-n"]):
            p = self.run("r1", *probe, check=False)
            if p.returncode != 0:
                raise LabUnavailable(f"{' '.join(probe)} refused in a namespace: {p.stderr.strip()}")

        # the internet: a bridge with the server's two addresses
        self.ip("srv", "link", "add", "br0", "type", "bridge")
        for addr in (SERVER_IP, SERVER_IP2):
            self.ip("srv", "addr", "add", f"{addr}/24", "dev", "br0")
        self.ip("srv", "link", "set", "br0", "up")

        for n, symmetric in SITES.items():
            r, c = f"r{n}", f"c{n}"
            # WAN: veth "wan" in rN, its peer "rN" a port of srv's bridge
            self.ip(r, "link", "add", "wan", "type", "veth", "peer", "name", r, "netns", self.ns("srv"))
            self.ip("srv", "link", "set", r, "master", "br0", "up")
            self.ip(r, "addr", "add", f"{wan_ip(n)}/24", "dev", "wan")
            self.ip(r, "link", "set", "wan", "up")
            # LAN: veth "lan" in rN, its peer "eth0" in cN
            self.ip(r, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", self.ns(c))
            self.ip(r, "addr", "add", f"{lan_gw(n)}/24", "dev", "lan")
            self.ip(r, "link", "set", "lan", "up")
            self.ip(r, "route", "add", "default", "via", SERVER_IP)  # the "ISP"; srv forwards nothing
            self.ip(c, "addr", "add", f"{client_ip(n)}/24", "dev", "eth0")
            self.ip(c, "link", "set", "eth0", "up")
            self.ip(c, "route", "add", "default", "via", lan_gw(n))

            self.run(r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            nat = ["iptables", "-w", "-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE"]
            self.run(r, *nat, *(["--random-fully"] if symmetric else []))
            self.nft(r, FW_RULES.format(table=FW_TABLE))
            self._say(f"{r}: wan {wan_ip(n)}, lan {lan_gw(n)}/24, "
                      f"{'MASQUERADE --random-fully (symmetric)' if symmetric else 'MASQUERADE'}; {c}: {client_ip(n)}")
        self.build_seconds = time.monotonic() - t0
        return self

    def lo_is_up(self, host):
        out = self.ip(host, "-o", "link", "show", "lo").stdout
        flags = out.split("<", 1)[1].split(">", 1)[0].split(",") if "<" in out else []
        return "UP" in flags

    # -- loss -----------------------------------------------------------------------

    def add_loss(self, router, pct=30):
        """Drops `pct`% of the packets router forwards, both directions."""
        assert 0 < pct < 100, pct
        self.nft(router, LOSS_RULES.format(table=LOSS_TABLE, pct=int(pct)))

    def remove_loss(self, router):
        self.run(router, "nft", "delete", "table", "inet", LOSS_TABLE, check=False)

    def loss_drops(self, router):
        """How many packets the loss rule of `router` dropped (None: no loss set)."""
        p = self.run(router, "nft", "list", "table", "inet", LOSS_TABLE, check=False)
        if p.returncode != 0:
            return None
        for word, nxt in zip(p.stdout.split(), p.stdout.split()[1:]):
            if word == "packets":
                return int(nxt)
        return None

    @contextlib.contextmanager
    def loss(self, router, pct=30):
        """with lab.loss("r1", 30): ... - removed on the way out, even on failure."""
        self.add_loss(router, pct)
        try:
            yield
        finally:
            self.remove_loss(router)

    def ruleset(self, host):
        """iptables' NAT rules and nft's ruleset of `host` (for failure reports)."""
        nat = self.run(host, "iptables", "-w", "-t", "nat", "-S", check=False).stdout
        return nat + self.run(host, "nft", "list", "ruleset", check=False).stdout

    # -- being in srv -------------------------------------------------------------

    def enter_srv(self):
        """Moves the calling thread into srv (setns); every process it starts
        from now on is born there. leave_srv() goes back."""
        assert self._home_fd is None, "already in srv"
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        target = os.open(f"/run/netns/{self.ns('srv')}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns(target)
        except BaseException:
            os.close(home)
            raise
        finally:
            os.close(target)
        self._home_fd = home

    def leave_srv(self):
        if self._home_fd is None:
            return
        try:
            setns(self._home_fd)
        finally:
            os.close(self._home_fd)
            self._home_fd = None

    @property
    def in_srv(self):
        return self._home_fd is not None

    @contextlib.contextmanager
    def srv(self):
        """with lab.srv(): the block runs in srv (sockets it opens live
        there); a thread already in srv stays there afterwards."""
        entered = not self.in_srv
        if entered:
            self.enter_srv()
        try:
            yield
        finally:
            if entered:
                self.leave_srv()

    # -- removal ------------------------------------------------------------------------

    def _pids_in(self, name):
        p = self._cmd(["ip", "netns", "pids", name], check=False)
        return [int(x) for x in p.stdout.split() if x.isdigit() and int(x) != os.getpid()]

    def close(self):
        """Stops what popen() started, then any process still in a namespace
        this Lab created (all started by this run), then deletes those
        namespaces (which removes their veths, bridge and rules). Safe after
        a partial build and when called twice."""
        self.leave_srv()
        for _, p in reversed(self.procs):
            with contextlib.suppress(Exception):
                self.stop_proc(p, timeout=5)
        self.procs = []
        for name in reversed(self.created):
            for pid in self._pids_in(name):
                self._say(f"killing pid {pid} left in {name}")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self._cmd(["ip", "netns", "del", name], check=False)
        self.created = []

    def cleanup_leftovers(self):
        """Deletes namespaces of this prefix that an earlier, killed run with
        the same prefix left behind (exact names only; no other run's)."""
        listed = self._cmd(["ip", "netns", "list"], check=False).stdout.split()
        mine = {self.ns(h) for h in self.HOSTS}
        for name in listed:
            if name in mine and name not in self.created:
                self._say(f"removing leftover namespace {name}")
                self._cmd(["ip", "netns", "del", name], check=False)

    def leftovers(self):
        """Namespaces of this prefix that still exist (should be none after close())."""
        mine = {self.ns(h) for h in self.HOSTS}
        return sorted(n for n in self._cmd(["ip", "netns", "list"], check=False).stdout.split() if n in mine)
