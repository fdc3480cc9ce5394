"""Helpers for the tests of the client agent `mm` (test_agent*.py): each
Agent has its own XDG_CONFIG_HOME / XDG_CACHE_HOME / HOME under the run
directory and talks to a gateway of the harness, whose CA it pins with
`mm init --server-ca`. `mm up` runs as a Daemon (JSON events on stdout,
logs on stderr, stopped by pid), registered in mm.LIVE_PROCS while it runs
so that a failing test shows what it printed.

Network traffic stays on loopback: daemons are started with
`--advertise 127.0.0.1` unless a test asks for the discovered addresses,
and black holes are local listeners that accept and never speak TLS.
"""

import contextlib
import hashlib
import json
import os
import select
import signal
import socket
import subprocess
import threading
import time

import mm


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Result:
    def __init__(self, p, json_mode):
        self.rc = p.returncode
        self.stdout = p.stdout
        self.stderr = p.stderr
        self.json = None
        if json_mode and p.stdout.strip():
            try:
                self.json = json.loads(p.stdout.strip().splitlines()[-1])
            except ValueError:
                self.json = None

    @property
    def code(self):
        """The error code of a --json failure."""
        return (self.json or {}).get("error", {}).get("code")

    def __repr__(self):
        return f"<mm rc={self.rc} stdout={self.stdout[-600:]!r} stderr={self.stderr[-600:]!r}>"


class Agent:
    """One identity with its own XDG directories."""

    def __init__(self, root, name, server_url, ca_file=None):
        self.name = name
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir, exist_ok=True)
        self.server_url = server_url
        self.ca_file = ca_file
        self.email = None
        self.extra_env = {}
        self.prefix = []  # e.g. ["ip", "netns", "exec", NS]: where mm runs

    @property
    def config_dir(self):
        return os.path.join(self.dir, "cfg", "matchmaker")

    @property
    def cache_dir(self):
        return os.path.join(self.dir, "cache", "matchmaker")

    @property
    def cert(self):
        return os.path.join(self.config_dir, "cert.pem")

    @property
    def key(self):
        return os.path.join(self.config_dir, "key.pem")

    def env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MM_", "XDG_"))}
        env.update({
            "HOME": self.dir,
            "XDG_CONFIG_HOME": os.path.join(self.dir, "cfg"),
            "XDG_CACHE_HOME": os.path.join(self.dir, "cache"),
            "MM_SERVER": self.server_url,
        })
        env.update(self.extra_env)
        return env

    def mm(self, *args, json_mode=True, timeout=60, cwd=None, env=None):
        """Runs `mm [--json] ARGS`; returns a Result (never raises on rc)."""
        cmd = self.prefix + [mm.binary("mm")] + (["--json"] if json_mode else []) + [str(a) for a in args]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env or self.env(),
                           cwd=cwd or self.dir, stdin=subprocess.DEVNULL)
        return Result(p, json_mode)

    def ok(self, *args, **kw):
        r = self.mm(*args, **kw)
        assert r.rc == 0, f"mm {' '.join(map(str, args))} failed: {r!r}"
        if kw.get("json_mode", True):
            assert r.json is not None and r.json.get("ok") is True, r
        return r

    def fails(self, rc, code, *args, **kw):
        """Asserts exit status `rc` and, with --json, the error shape and `code`."""
        r = self.mm(*args, **kw)
        assert r.rc == rc, f"mm {' '.join(map(str, args))}: expected exit {rc}, got {r!r}"
        if kw.get("json_mode", True):
            assert r.json is not None and set(r.json) == {"ok", "error"} and r.json["ok"] is False, r
            assert set(r.json["error"]) == {"code", "message"} and r.json["error"]["message"].strip(), r
            assert r.code == code, f"expected error {code!r}: {r!r}"
        return r

    def init(self, email, name=None, **kw):
        self.email = email.strip().lower()
        args = ["init", "--email", email]
        if name:
            args += ["--name", name]
        if self.ca_file:
            args += ["--server-ca", self.ca_file]
        return self.ok(*args, **kw)

    def register(self):
        return self.ok("register")

    @property
    def peer_id(self):
        return mm.peer_id_of(self.cert)

    def up(self, share, *, allow=(), public=False, advertise=("127.0.0.1",), port=0, extra=(), wait_online=True,
           env=None):
        d = Daemon(self, share, allow=allow, public=public, advertise=advertise, port=port, extra=extra, env=env)
        d.start()
        if wait_online:
            d.wait_event("online")
        return d


class Daemon:
    """`mm --json up ...` of an Agent: events are the JSON lines of stdout."""

    def __init__(self, agent, share, *, allow, public, advertise, port, extra, env):
        self.agent = agent
        self.name = f"mm-up-{agent.name}"
        self.args = ["up", "--share", share, "--port", str(port)]
        for a in allow:
            self.args += ["--allow", a]
        if public:
            self.args.append("--public")
        for a in advertise or ():
            self.args += ["--advertise", a]
        self.args += list(extra)
        self.env = env or agent.env()
        self.out = os.path.join(agent.dir, f"up-{time.monotonic_ns()}.out")
        self.log = os.path.join(agent.dir, f"up-{time.monotonic_ns()}.log")
        self.p = None
        self._seen = 0

    def start(self):
        self._outf = open(self.out, "wb")
        self._logf = open(self.log, "ab")
        self.p = subprocess.Popen([*self.agent.prefix, mm.binary("mm"), "--json", *self.args], env=self.env, stdin=subprocess.DEVNULL,
                                  stdout=self._outf, stderr=self._logf, start_new_session=True, cwd=self.agent.dir)
        mm.LIVE_PROCS.append(self)
        return self

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def events(self):
        out = []
        with open(self.out, "rb") as f:
            for line in f.read().decode("utf-8", "replace").splitlines():
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def wait_event(self, name, timeout=15.0, after=None):
        """Waits for the next event `name` (counting from the last one waited
        for, or from index `after`); returns it."""
        start = self._seen if after is None else after
        deadline = time.monotonic() + timeout
        while True:
            evs = self.events()
            for i in range(start, len(evs)):
                if evs[i].get("event") == name:
                    self._seen = i + 1
                    return evs[i]
                if evs[i].get("ok") is False:
                    raise AssertionError(f"{self.name} failed: {evs[i]}\n{mm.tail(self.log)}")
            if not self.alive():
                raise AssertionError(f"{self.name} exited ({self.p.returncode}) before '{name}'; events {evs}; "
                                     f"log:\n{mm.tail(self.log)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no '{name}' event within {timeout}s; events {evs}")
            time.sleep(0.05)

    @property
    def port(self):
        for e in self.events():
            if e.get("event") == "listening":
                return e["port"]
        raise AssertionError(f"{self.name} printed no listening event")

    def signal(self, sig):
        os.kill(self.p.pid, sig)

    def wait_exit(self, timeout=15.0):
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still runs after {timeout}s; log:\n{mm.tail(self.log)}") from None
        self._close()
        return self.p.returncode

    def stop(self, timeout=15.0):
        """SIGTERM; asserts exit 0 within `timeout`; returns the seconds taken."""
        t0 = time.monotonic()
        if self.alive():
            self.signal(signal.SIGTERM)
        rc = self.wait_exit(timeout)
        assert rc == 0, f"{self.name} exited {rc} on SIGTERM; log:\n{mm.tail(self.log)}"
        return time.monotonic() - t0

    def kill(self):
        if self.alive():
            self.signal(signal.SIGKILL)
            self.p.wait(5)
        self._close()

    def _close(self):
        if self in mm.LIVE_PROCS:
            mm.LIVE_PROCS.remove(self)
        for f in (getattr(self, "_outf", None), getattr(self, "_logf", None)):
            with contextlib.suppress(Exception):
                f.close()


class BlackHoles:
    """Loopback listeners that accept TCP connections and never answer: a
    TLS handshake to them hangs until the client gives up."""

    def __init__(self, n):
        self.socks = []
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen(128)
            self.socks.append(s)
        self.ports = [s.getsockname()[1] for s in self.socks]
        self.held = []
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop:
            r, _, _ = select.select(self.socks, [], [], 0.2)
            for s in r:
                with contextlib.suppress(OSError):
                    self.held.append(s.accept()[0])

    def close(self):
        self._stop = True
        self._t.join(2)
        for s in self.socks + self.held:
            with contextlib.suppress(OSError):
                s.close()
