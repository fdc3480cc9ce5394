"""Helpers for the integration tests: real stores, real binaries, certificates,
HTTP through curl and Python's ssl module.

Everything here uses the Python standard library and command-line tools that
Debian ships (openssl, curl, psql, redis-cli); nothing is installed by pip.
Every run gets its own temp dirs (short, for unix socket paths) and free
ports, so two runs on one machine never collide.
"""

import contextlib
import hashlib
import http.client
import itertools
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
STORES_SH = os.path.join(REPO, "deploy", "local", "stores.sh")
MIGRATE_SH = os.path.join(REPO, "deploy", "local", "migrate.sh")

# Every process started through this module, so a failing test can show
# their logs (see conftest.pytest_runtest_makereport) and nothing outlives
# the session.
LIVE_PROCS = []


# ---------------------------------------------------------------------------
# small utilities


def build_dir():
    return os.environ.get("MM_BUILD_DIR") or os.path.join(REPO, "build")


def binary(name):
    """Path of build/bin/NAME; fails the test (never skips) when missing."""
    path = os.path.join(build_dir(), "bin", name)
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"{name} not found at {path}: build it with `make` in {REPO} "
            f"(or set MM_BUILD_DIR to the build directory)",
            pytrace=False,
        )
    return path


def require_script(path):
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing or not executable", pytrace=False)
    return path


def short_tmpdir(prefix="mmt"):
    """A fresh directory under /tmp with a short name (unix socket paths
    must stay under 108 bytes). World-traversable so that a store run as
    the postgres user can reach a subdirectory of it."""
    d = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    os.chmod(d, 0o755)
    return d


def free_port():
    """A TCP port nobody listens on right now (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, *, check=True, input=None, timeout=60, env=None, cwd=None):
    """Runs a command, returns CompletedProcess with text stdout/stderr."""
    p = subprocess.run(
        cmd,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )
    if check and p.returncode != 0:
        raise AssertionError(
            f"command failed ({p.returncode}): {' '.join(map(str, cmd))}\n"
            f"stdout: {p.stdout}\nstderr: {p.stderr}"
        )
    return p


def uniq_email(tag="peer", domain="example.com"):
    return f"{tag}-{uuid.uuid4().hex[:12]}@{domain}"


def log_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def tail(path, lines=40, since=0):
    """The last `lines` lines of a log, from byte offset `since` on."""
    try:
        with open(path, "rb") as f:
            f.seek(max(since, log_size(path) - 64 * 1024))
            data = f.read()
    except OSError as e:
        return f"({path}: {e})"
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def wait_for(pred, timeout=10.0, interval=0.1, what="condition"):
    """Polls pred() until it returns a truthy value; returns it, or fails."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = pred()
        except Exception as e:  # noqa: BLE001 - keep polling, report the last error
            last = e
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def http_get(url, timeout=2.0):
    """Plain-HTTP GET (internal listeners). Returns (status, headers, body)."""
    req = urllib.request.Request(url, method="GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


# ---------------------------------------------------------------------------
# certificates (openssl CLI)

KEY_ALGS = {
    "p256": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    "p384": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
    "p521": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521"],
    "ed25519": ["-algorithm", "ED25519"],
    "rsa2048": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    "rsa1024": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
}

# `openssl ca` configuration: copies the CSR's extensions (subjectAltName),
# keeps the subject as given, and lets us choose start and end dates.
CA_CONF = """\
[ ca ]
default_ca = CA_default
[ CA_default ]
dir = {dir}
database = {dir}/index.txt
new_certs_dir = {dir}/newcerts
serial = {dir}/serial
default_md = default
policy = policy_any
copy_extensions = copy
unique_subject = no
email_in_dn = yes
[ policy_any ]
commonName = optional
emailAddress = optional
[ leaf ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth,serverAuth
subjectKeyIdentifier = hash
[ server ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


class Cert:
    """A certificate and its key on disk, with the identity the gateway
    should derive from it."""

    def __init__(self, cert, key, email=None):
        self.cert = cert
        self.key = key
        self.email = email  # normalised email the server should find, or None
        self.peer_id = peer_id_of(cert)
        self.fingerprint = fingerprint_of(cert)

    def __repr__(self):
        return f"Cert({os.path.basename(self.cert)}, {self.email}, {self.peer_id[:12]})"


def peer_id_of(cert_path):
    """Lowercase hex SHA-256 of the DER SubjectPublicKeyInfo (SPEC §2)."""
    pem = subprocess.run(
        ["openssl", "x509", "-in", cert_path, "-pubkey", "-noout"], capture_output=True, check=True
    ).stdout
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "DER"], input=pem, capture_output=True, check=True
    ).stdout
    assert len(der) > 30, "empty SPKI"
    return hashlib.sha256(der).hexdigest()


def fingerprint_of(cert_path):
    """Lowercase hex SHA-256 of the whole DER certificate (SPEC §2)."""
    with open(cert_path) as f:
        pem = f.read()
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", pem, re.S)
    assert m, f"no certificate in {cert_path}"
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(m.group(0))).hexdigest()


class CertFactory:
    """Makes keys and certificates in its own directory with the openssl CLI."""

    def __init__(self, directory):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self._seq = itertools.count(1)
        self._ca_dirs = {}

    def _path(self, name, ext):
        return os.path.join(self.dir, f"{next(self._seq):04d}-{name}.{ext}")

    def key(self, alg="p256", name="key"):
        if alg not in KEY_ALGS:
            raise ValueError(alg)
        path = self._path(f"{name}-{alg}", "key")
        run(["openssl", "genpkey", *KEY_ALGS[alg], "-out", path])
        return path

    @staticmethod
    def _subject(cn, subject_email):
        subj = f"/CN={cn}"
        if subject_email:
            subj += f"/emailAddress={subject_email}"
        return subj

    def self_signed(
        self,
        email=None,
        *,
        alg="p256",
        key=None,
        san_email=True,
        subject_email=None,
        cn="peer",
        days=30,
        style="plain",
        expect_email=None,
    ):
        """A self-signed client certificate.

        email: goes into subjectAltName (rfc822Name) when san_email, else
        into the subject's emailAddress. subject_email: an extra subject
        emailAddress. key: reuse an existing key (a renewal). style "plain"
        is what `openssl req -x509` makes by default (CA:TRUE, like a user
        on the command line); "leaf" is an end-entity certificate (CA:FALSE,
        clientAuth). expect_email: the normalised email the server should
        read (defaults to email lowercased and trimmed)."""
        key = key or self.key(alg)
        cert = self._path(f"cert-{alg}", "pem")
        subj_email = subject_email if subject_email is not None else (None if san_email else email)
        cmd = [
            "openssl", "req", "-x509", "-new", "-key", key, "-out", cert,
            "-days", str(days), "-subj", self._subject(cn, subj_email),
            "-set_serial", str(int.from_bytes(os.urandom(8), "big")),
        ]
        if email and san_email:
            cmd += ["-addext", f"subjectAltName=email:{email}"]
        if style == "leaf":
            cmd += [
                "-addext", "basicConstraints=critical,CA:FALSE",
                "-addext", "keyUsage=critical,digitalSignature",
                "-addext", "extendedKeyUsage=clientAuth,serverAuth",
            ]
        run(cmd)
        if expect_email is None:
            src = email if (email and san_email) else subj_email
            expect_email = src.strip().lower() if src else None
        return Cert(cert, key, expect_email)

    # -- `openssl ca` based issuing: chosen dates, CA-issued certs ---------

    def _ca_dir(self, name):
        d = self._ca_dirs.get(name)
        if d is None:
            d = os.path.join(self.dir, f"ca-{name}")
            os.makedirs(os.path.join(d, "newcerts"))
            open(os.path.join(d, "index.txt"), "w").close()
            with open(os.path.join(d, "serial"), "w") as f:
                f.write(os.urandom(8).hex().upper() + "\n")
            with open(os.path.join(d, "openssl.cnf"), "w") as f:
                f.write(CA_CONF.format(dir=d))
            self._ca_dirs[name] = d
        return d

    def _csr(self, key, subj, san=None):
        csr = self._path("req", "csr")
        cmd = ["openssl", "req", "-new", "-key", key, "-out", csr, "-subj", subj]
        if san:
            cmd += ["-addext", f"subjectAltName={san}"]
        run(cmd)
        return csr

    def dated_self_signed(self, email, start, end, *, alg="p256"):
        """A self-signed certificate valid from `start` to `end`
        (YYYYMMDDHHMMSSZ), e.g. already expired or not yet valid."""
        key = self.key(alg)
        csr = self._csr(key, "/CN=dated", f"email:{email}")
        d = self._ca_dir("selfsign")
        cert = self._path("cert-dated", "pem")
        run([
            "openssl", "ca", "-batch", "-config", os.path.join(d, "openssl.cnf"),
            "-selfsign", "-keyfile", key, "-in", csr, "-out", cert, "-notext",
            "-preserveDN", "-startdate", start, "-enddate", end, "-extensions", "leaf",
        ])
        return Cert(cert, key, email.strip().lower())

    def ca(self, name="ca", alg="p256"):
        """A CA certificate: returns Cert (its .cert is the CA file)."""
        key = self.key(alg, name=name)
        cert = self._path(name, "pem")
        run([
            "openssl", "req", "-x509", "-new", "-key", key, "-out", cert, "-days", "30",
            "-subj", f"/CN=Matchmaker test {name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ])
        c = Cert(cert, key)
        c.ca_name = name
        self._ca_dir(name)
        return c

    def issue(self, ca, *, email=None, alg="p256", san=None, cn="peer", extensions="leaf", days=30):
        """A certificate signed by `ca` (a Cert from ca())."""
        key = self.key(alg)
        if san is None and email:
            san = f"email:{email}"
        csr = self._csr(key, f"/CN={cn}", san)
        d = self._ca_dir(ca.ca_name)
        cert = self._path(f"issued-{ca.ca_name}", "pem")
        run([
            "openssl", "ca", "-batch", "-config", os.path.join(d, "openssl.cnf"),
            "-cert", ca.cert, "-keyfile", ca.key, "-in", csr, "-out", cert, "-notext",
            "-preserveDN", "-days", str(days), "-extensions", extensions,
        ])
        return Cert(cert, key, email.strip().lower() if email else None)

    def server(self, ca):
        """The gateway's certificate: EC P-256 (so ECDHE-ECDSA suites apply),
        valid for localhost and 127.0.0.1, issued by `ca`."""
        return self.issue(ca, alg="p256", san="DNS:localhost,IP:127.0.0.1", cn="localhost", extensions="server")


# ---------------------------------------------------------------------------
# stores: PostgreSQL and Redis through deploy/local/stores.sh


class Stores:
    """A real PostgreSQL and Redis in `base` (deploy/local/stores.sh), with
    the schema applied (deploy/local/migrate.sh)."""

    def __init__(self, base):
        self.base = base
        self.pg_dir = os.path.join(base, "pg")
        self.redis_dir = os.path.join(base, "rd")
        self.pg_url = None
        self.redis_url = None
        self.pg_running = False
        self.redis_running = False

    def _stores(self, *args, timeout=120):
        require_script(STORES_SH)
        return run([STORES_SH, *args], timeout=timeout)

    @staticmethod
    def _last_line(out):
        lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
        assert lines, "stores.sh printed no URL"
        return lines[-1]

    def start(self):
        for d in (self.pg_dir, self.redis_dir):
            os.makedirs(d, exist_ok=True)
            os.chmod(d, 0o755)
        self.pg_start()
        self.redis_start()
        require_script(MIGRATE_SH)
        run([MIGRATE_SH, self.pg_url], timeout=120)
        return self

    def pg_start(self):
        self.pg_url = self._last_line(self._stores("pg-start", self.pg_dir).stdout)
        self.pg_running = True
        return self.pg_url

    def pg_stop(self):
        self.pg_running = False
        self._stores("pg-stop", self.pg_dir)

    def redis_start(self):
        self.redis_url = self._last_line(self._stores("redis-start", self.redis_dir).stdout)
        self.redis_running = True
        return self.redis_url

    def redis_stop(self):
        self.redis_running = False
        self._stores("redis-stop", self.redis_dir)

    def stop(self):
        """Stops both servers and removes their files (stores.sh clean also
        removes the /tmp helpers it may have made)."""
        errors = []
        for d in (self.pg_dir, self.redis_dir):
            try:
                self._stores("clean", d)
            except Exception as e:  # noqa: BLE001 - stop the other one too
                errors.append(e)
        self.pg_running = self.redis_running = False
        if errors:
            raise errors[0]

    @property
    def redis_sock(self):
        assert self.redis_url and self.redis_url.startswith("unix:"), self.redis_url
        return self.redis_url[len("unix:"):]

    # -- assertions helpers ------------------------------------------------

    def sql(self, query, **params):
        """Runs one query with psql; params are bound as psql variables
        (:'name' in the query, quoted by psql). Returns a list of tuples of
        strings (NULL reads as '')."""
        args = ["psql", self.pg_url, "-X", "-q", "-At", "-F", "\x1f", "-v", "ON_ERROR_STOP=1"]
        for k, v in params.items():
            args += ["-v", f"{k}={v}"]
        p = run(args, input=query.rstrip().rstrip(";") + ";\n", timeout=30)
        return [tuple(line.split("\x1f")) for line in p.stdout.splitlines()]

    def sql_value(self, query, **params):
        rows = self.sql(query, **params)
        assert len(rows) == 1 and len(rows[0]) == 1, f"expected one value, got {rows!r}"
        return rows[0][0]

    def peer(self, peer_id):
        """The peers row of peer_id as a dict, or None."""
        rows = self.sql("SELECT row_to_json(p)::text FROM peers p WHERE peer_id = :'pid'", pid=peer_id)
        return json.loads(rows[0][0]) if rows else None

    def peers_with_email(self, email):
        return [r[0] for r in self.sql("SELECT peer_id FROM peers WHERE lower(email) = lower(:'e')", e=email)]

    def events(self, peer_id, kind=None):
        if kind:
            rows = self.sql(
                "SELECT kind FROM peer_events WHERE peer_id = :'pid' AND kind = :'k'", pid=peer_id, k=kind
            )
        else:
            rows = self.sql("SELECT kind FROM peer_events WHERE peer_id = :'pid' ORDER BY at", pid=peer_id)
        return [r[0] for r in rows]

    def redis(self, *args):
        return run(["redis-cli", "-s", self.redis_sock, "--no-raw", *args], timeout=10).stdout.strip()

    def redis_raw(self, *args):
        return run(["redis-cli", "-s", self.redis_sock, "--raw", *args], timeout=10).stdout.strip()

    # Every key with a SHA-1 of its DUMP (the value, not the TTL), sorted:
    # a rejected heartbeat that extended a TTL still shows, because the
    # tracker's deadline index (a sorted set) changes with it.
    _REDIS_DIGEST_LUA = (
        "local out = {} local ks = redis.call('KEYS', '*') table.sort(ks) "
        "for _, k in ipairs(ks) do out[#out + 1] = k "
        "out[#out + 1] = redis.sha1hex(redis.call('DUMP', k) or '') end return out"
    )

    def redis_digest(self):
        """{key: sha1 of its value} for every key in Redis (TTLs left out)."""
        lines = self.redis_raw("EVAL", self._REDIS_DIGEST_LUA, "0").splitlines()
        return dict(zip(lines[0::2], lines[1::2]))

    def snapshot(self, redis=True, deep=False):
        """Every table of the public schema (as sorted row texts) and the
        Redis key count: equal snapshots mean nothing changed. deep: also
        every Redis key and value (not TTLs); redis=False: PostgreSQL only
        (for when Redis is down)."""
        rows = self.sql(
            "SELECT table_name, md5(query_to_xml(format('SELECT t::text AS r FROM %I t ORDER BY 1', table_name),"
            " true, false, '')::text) FROM information_schema.tables"
            " WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1"
        )
        snap = {"db": rows}
        if redis:
            snap["redis_keys"] = self.redis_raw("DBSIZE")
        if redis and deep:
            snap["redis"] = self.redis_digest()
        return snap

    @contextlib.contextmanager
    def unchanged(self, redis=True, deep=False):
        """Asserts that the block changes nothing in PostgreSQL or Redis
        (see snapshot() for redis and deep)."""
        before = self.snapshot(redis=redis, deep=deep)
        yield
        after = self.snapshot(redis=redis, deep=deep)
        if before != after:
            b = dict((r[0], r[1]) for r in before["db"])
            a = dict((r[0], r[1]) for r in after["db"])
            changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            rb, ra = before.get("redis", {}), after.get("redis", {})
            rchanged = sorted(k for k in set(ra) | set(rb) if ra.get(k) != rb.get(k))
            raise AssertionError(
                f"a rejected request changed the stores: tables {changed}, "
                f"redis keys {before.get('redis_keys')} -> {after.get('redis_keys')}"
                + (f", redis keys changed: {rchanged}" if rchanged else "")
            )

    # -- broadcasts (SPEC §3.1, §7) ---------------------------------------

    def broadcast(self, peer_id):
        """The broadcasts row of peer_id as a dict (candidates parsed), or None."""
        rows = self.sql("SELECT row_to_json(b)::text FROM broadcasts b WHERE peer_id = :'pid'", pid=peer_id)
        return json.loads(rows[0][0]) if rows else None

    def presence(self, peer_id):
        """What Redis holds for peer_id: {"exists", "ttl" (s, -2 absent),
        "deadline" (the score in mm:presence:deadlines, ms, or None)}."""
        key = f"mm:presence:{peer_id}"
        score = self.redis_raw("ZSCORE", "mm:presence:deadlines", peer_id)
        return {
            "exists": self.redis_raw("EXISTS", key) == "1",
            "ttl": int(self.redis_raw("TTL", key)),
            "deadline": float(score) if score else None,
        }

    def wait_presence_marker(self, timeout=5.0):
        """Waits (at most `timeout`, without failing) until a tracker has set
        mm:epoch, its marker of a Redis that kept its data (docs/architecture.md):
        until then the tracker may still write to Redis on its own (a
        restore), which a snapshot taken too early would count as a change."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.redis_raw("EXISTS", "mm:epoch") == "1":
                time.sleep(0.1)  # the restore (of what PostgreSQL holds) follows the marker
                return True
            time.sleep(0.05)
        return False

    def presence_peer_ids(self):
        """peer_ids with a live presence key."""
        keys = self.redis_raw("KEYS", "mm:presence:*").splitlines()
        return {k[len("mm:presence:"):] for k in keys if re.fullmatch(r"mm:presence:[0-9a-f]{64}", k)}

    # -- bulk loading and expiry (the reaper's tests) ----------------------

    def sql_script(self, script, timeout=120):
        """Runs a psql script from stdin (COPY ... FROM STDIN data may
        follow its COPY line); returns stdout."""
        return run(["psql", self.pg_url, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"], input=script,
                   timeout=timeout).stdout

    def redis_pipe(self, payload, timeout=300):
        """Feeds RESP (bytes, see resp()) to `redis-cli --pipe`; fails
        unless every reply was a success. Returns the number of replies."""
        p = subprocess.run(["redis-cli", "-s", self.redis_sock, "--pipe"], input=payload, capture_output=True,
                           timeout=timeout)
        out = p.stdout.decode("utf-8", "replace")
        m = re.search(r"errors: (\d+), replies: (\d+)", out)
        assert p.returncode == 0 and m and m.group(1) == "0", f"redis-cli --pipe: {out}\n{p.stderr!r}"
        return int(m.group(2))

    # Sets presence keys and their deadlines the way the tracker's ready
    # script does (trk_presence.c): value "<now ms> 127.0.0.1", score = the
    # key's expiry in unix ms, both from Redis's clock (PXAT: exactly the
    # score, however long the script runs). ARGV: id, ttl ms, ... Returns
    # the deadlines.
    _LOAD_PRESENCE_LUA = (
        "local t = redis.call('TIME') "
        "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "
        "local out = {} "
        "for i = 1, #ARGV, 2 do "
        "  local ttl = tonumber(ARGV[i + 1]) "
        "  redis.call('SET', 'mm:presence:' .. ARGV[i], string.format('%.0f', now) .. ' 127.0.0.1', 'PXAT',"
        "             string.format('%.0f', now + ttl)) "
        "  redis.call('ZADD', 'mm:presence:deadlines', string.format('%.0f', now + ttl), ARGV[i]) "
        "  out[#out + 1] = string.format('%.0f', now + ttl) "
        "end "
        "return out"
    )

    def add_broadcasts(self, ttls_ms, port):
        """Broadcasting peers without a client: {peer_id: ttl ms} gets a
        peers row, live presence with that TTL plus its deadline (Redis
        first, as a ready does: a sweep in between must not see a row
        without presence), and a broadcasts row with `port` (tests mark
        their batches by port). Returns {peer_id: deadline, unix ms}."""
        items = list(ttls_ms.items())
        deadlines = {}
        for i in range(0, len(items), 500):
            chunk = items[i:i + 500]
            args = [str(x) for pid, ttl in chunk for x in (pid, int(ttl))]
            out = self.redis_raw("EVAL", self._LOAD_PRESENCE_LUA, "0", *args).split()
            assert len(out) == len(chunk), out[:5]
            deadlines.update((pid, int(d)) for (pid, _), d in zip(chunk, out))
        peers = "".join(f"{pid}\tsyn-{pid[:20]}@example.com\t{pid}\n" for pid, _ in items)
        bcasts = "".join(f"{pid}\t{port}\t[]\t127.0.0.1\n" for pid, _ in items)
        self.sql_script(
            "BEGIN;\nCOPY peers (peer_id, email, fingerprint) FROM STDIN;\n" + peers + "\\.\n"
            "COPY broadcasts (peer_id, port, candidates, observed_address) FROM STDIN;\n" + bcasts + "\\.\n"
            "COMMIT;\n")
        return deadlines

    def broadcasts_on_port(self, port):
        return int(self.sql_value("SELECT count(*) FROM broadcasts WHERE port = :'p'", p=port))

    def last_event_id(self):
        return int(self.sql_value("SELECT coalesce(max(id), 0) FROM peer_events"))

    def offline_events(self, since_id):
        """The `offline` events after event id `since_id`: {peer_id: [event,
        ...]}, each {"reason", "expired_at" (unix s, or None when the detail
        has none or null), "has_expired_at" (the key is in the detail),
        "at" (unix s), "lag" (at - expired_at, s, or None)}."""
        rows = self.sql(
            "SELECT peer_id, coalesce(detail->>'reason', ''), coalesce(detail->>'expired_at', ''),"
            " (detail ? 'expired_at')::text, extract(epoch FROM at)::text"
            " FROM peer_events WHERE kind = 'offline' AND id > :'since' ORDER BY id", since=since_id)
        out = {}
        for pid, reason, exp, has_exp, at in rows:
            at = float(at)
            expired_at = parse_utc(exp) if exp else None
            out.setdefault(pid, []).append({
                "reason": reason, "expired_at": expired_at, "has_expired_at": has_exp == "true", "at": at,
                "lag": at - expired_at if expired_at is not None else None})
        return out

    def kinds_since(self, peer_id, since_id):
        """The kinds of peer_id's events after event id `since_id`, in order."""
        return [r[0] for r in self.sql("SELECT kind FROM peer_events WHERE peer_id = :'pid' AND id > :'since'"
                                       " ORDER BY id", pid=peer_id, since=since_id)]


def resp(*args):
    """One Redis command in RESP, for redis-cli --pipe."""
    parts = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(parts)


def random_peer_ids(n):
    return [os.urandom(32).hex() for _ in range(n)]


# ---------------------------------------------------------------------------
# processes


class PortInUse(AssertionError):
    """A process could not bind the port it was given."""


class Proc:
    """One real service process: env in, stderr to a log file, stopped by
    pid with SIGTERM (and SIGKILL only as a last resort)."""

    def __init__(self, name, path, env, workdir):
        self.name = name
        self.path = path
        self.env = env
        self.log = os.path.join(workdir, f"{name}.log")
        self.p = None
        self.exit_code = None

    def start(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("MM_")}
        env.update({k: str(v) for k, v in self.env.items() if v is not None})
        self._log_start = log_size(self.log)
        self._logf = open(self.log, "ab")
        self.p = subprocess.Popen(
            [self.path], env=env, stdin=subprocess.DEVNULL, stdout=self._logf, stderr=self._logf,
            start_new_session=True,
        )
        LIVE_PROCS.append(self)
        return self

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def wait_ready(self, url, timeout=20.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            self._check_alive_while_starting()
            try:
                status, _, body = http_get(url, timeout=1.0)
                if status == 200:
                    return
                last = f"{status} {body[:200]!r}"
            except OSError as e:
                last = repr(e)
            time.sleep(0.05)
        raise AssertionError(f"{self.name} not ready at {url} after {timeout}s (last: {last}); log:\n{tail(self.log)}")

    def _check_alive_while_starting(self):
        if self.alive():
            return
        self.p.wait()
        self._close()
        log = tail(self.log, since=self._log_start)
        cls = PortInUse if "Address already in use" in log else AssertionError
        raise cls(f"{self.name} exited with {self.p.returncode} while starting; log:\n{log}")

    def start_with_retry(self, ready, new_ports):
        """Starts and waits for `ready`; when a port picked by free_port()
        was taken in the meantime (an outgoing connection can get it), picks
        new ports with `new_ports` (None: cannot) and tries again."""
        for attempt in range(3):
            Proc.start(self)
            try:
                ready()
                return self
            except PortInUse:
                if new_ports is None or attempt == 2:
                    raise
                new_ports()
            except BaseException:
                self.terminate()
                raise
        return self

    def wait_ready_unix(self, sock, path, timeout=20.0):
        def ready():
            self._check_alive_while_starting()
            p = subprocess.run(
                ["curl", "-s", "--max-time", "1", "--unix-socket", sock, "-o", "/dev/null", "-w", "%{http_code}",
                 f"http://localhost{path}"], capture_output=True, text=True,
            )
            return p.stdout == "200"

        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not ready on {sock} after {timeout}s; log:\n{tail(self.log)}")
            time.sleep(0.05)

    def terminate(self, timeout=10.0):
        """SIGTERM by pid; returns (exit code, seconds taken). SIGKILLs and
        returns code None when it does not exit within `timeout`."""
        if self.p is None:
            return None, 0.0
        t0 = time.monotonic()
        if self.p.poll() is None:
            os.kill(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.p.pid, signal.SIGKILL)
                self.p.wait(5)
                self.exit_code = None
                self._close()
                return None, time.monotonic() - t0
        self.exit_code = self.p.returncode
        self._close()
        return self.exit_code, time.monotonic() - t0

    def _close(self):
        if self in LIVE_PROCS:
            LIVE_PROCS.remove(self)
        with contextlib.suppress(Exception):
            self._logf.close()

    def stop_checked(self, timeout=10.0):
        """Stops and asserts a clean exit (code 0 within `timeout`)."""
        was_alive = self.alive()
        code, took = self.terminate(timeout)
        if not was_alive:
            raise AssertionError(
                f"{self.name} had already exited with {code} before SIGTERM (crash?); log:\n{tail(self.log)}"
            )
        if code is None:
            raise AssertionError(f"{self.name} did not exit within {timeout}s of SIGTERM; log:\n{tail(self.log)}")
        if code != 0:
            raise AssertionError(f"{self.name} exited {code} on SIGTERM (expected 0); log:\n{tail(self.log)}")
        return took


class Tracker(Proc):
    def __init__(self, stores, workdir, name="mm-tracker", listen=None, **extra_env):
        self.port = None
        self._auto_port = listen is None
        if listen is None:
            listen = f"127.0.0.1:{free_port()}"
        if not listen.startswith("unix:"):
            self.port = int(listen.rsplit(":", 1)[1])
        self.listen = listen
        env = {
            "MM_TRACKER_LISTEN": listen,
            "MM_DATABASE_URL": stores.pg_url,
            "MM_REDIS_URL": stores.redis_url,
            "MM_THREADS": "2",
            "MM_LOG_LEVEL": "debug",
        }
        env.update(extra_env)
        super().__init__(name, binary("mm-tracker"), env, workdir)

    @property
    def url(self):
        """What the gateway's MM_TRACKER_URL should be."""
        if self.listen.startswith("unix:"):
            return self.listen
        return f"http://{self.listen}"

    def internal(self, path):
        assert self.port, "tracker listens on a unix socket"
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self):
        if self.listen.startswith("unix:"):
            return self.start_with_retry(lambda: self.wait_ready_unix(self.listen[len("unix:"):], "/readyz"), None)

        def new_ports():
            self.port = free_port()
            self.listen = self.env["MM_TRACKER_LISTEN"] = f"127.0.0.1:{self.port}"

        return self.start_with_retry(lambda: self.wait_ready(self.internal("/readyz")),
                                     new_ports if self._auto_port else None)


class Gateway(Proc):
    def __init__(self, tracker_url, server_cert, workdir, name="mm-gateway", **extra_env):
        self.port = free_port()
        self.iport = free_port()
        while self.iport == self.port:
            self.iport = free_port()
        self.server_cert = server_cert
        env = {
            "MM_GATEWAY_ADDR": "127.0.0.1",
            "MM_GATEWAY_PORT": str(self.port),
            "MM_GATEWAY_INTERNAL_LISTEN": f"127.0.0.1:{self.iport}",
            "MM_TLS_CERT_FILE": server_cert.cert,
            "MM_TLS_KEY_FILE": server_cert.key,
            "MM_TRACKER_URL": tracker_url,
            # Services this suite does not run: empty = the route answers
            # 503 (and never reaches a copy another run left on the defaults).
            "MM_BOOTSTRAP_URL": "",
            "MM_SIGNAL_URL": "",
            "MM_ADMIN_URL": "",
            "MM_THREADS": "2",
            "MM_LOG_LEVEL": "debug",
        }
        env.update(extra_env)
        super().__init__(name, binary("mm-gateway"), env, workdir)

    def url(self, path):
        return f"https://127.0.0.1:{self.port}{path}"

    def internal(self, path):
        return f"http://127.0.0.1:{self.iport}{path}"

    def start(self):
        def new_ports():
            self.port, self.iport = free_port(), free_port()
            self.env["MM_GATEWAY_PORT"] = str(self.port)
            self.env["MM_GATEWAY_INTERNAL_LISTEN"] = f"127.0.0.1:{self.iport}"

        return self.start_with_retry(lambda: self.wait_ready(self.internal("/readyz")), new_ports)


def parse_metrics(text):
    """Prometheus text -> {'name{labels}': value} ('name' alone without
    labels), labels exactly as the service writes them."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            out[key] = float(value)
    return out


class Reaper(Proc):
    """mm-reaper on a loopback port of its own (MM_REAPER_LISTEN), over
    `stores`; extra MM_* settings as keyword arguments (MM_SWEEP_INTERVAL,
    MM_REAPER_POLL_MS, MM_REAPER_BATCH, or MM_REDIS_URL for another Redis)."""

    REASONS = ("event", "deadline", "sweep")

    def __init__(self, stores, workdir, name="mm-reaper", **extra_env):
        self.port = free_port()
        env = {
            "MM_REAPER_LISTEN": f"127.0.0.1:{self.port}",
            "MM_DATABASE_URL": stores.pg_url,
            "MM_REDIS_URL": stores.redis_url,
            "MM_LOG_LEVEL": "debug",
        }
        env.update(extra_env)
        super().__init__(name, binary("mm-reaper"), env, workdir)

    def internal(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self):
        def new_ports():
            self.port = free_port()
            self.env["MM_REAPER_LISTEN"] = f"127.0.0.1:{self.port}"

        return self.start_with_retry(lambda: self.wait_ready(self.internal("/readyz")), new_ports)

    def start_expecting_exit(self, timeout=15.0):
        """Starts it when it should refuse to run: waits for it to exit
        and returns (exit code, what it logged)."""
        Proc.start(self)
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.terminate()
            raise AssertionError(f"{self.name} still runs after {timeout}s; log:\n{tail(self.log)}") from None
        self._close()
        return self.p.returncode, tail(self.log, 200, since=self._log_start)

    def kill(self):
        """SIGKILL by pid (a crash: no chance to finish anything)."""
        os.kill(self.p.pid, signal.SIGKILL)
        self.p.wait(5)
        self._close()

    def ready_status(self):
        try:
            return http_get(self.internal("/readyz"), timeout=1.0)[0]
        except OSError:
            return None

    def metrics(self):
        status, _, body = http_get(self.internal("/metrics"))
        assert status == 200, f"{self.name} /metrics: {status} {body[:200]!r}"
        return parse_metrics(body.decode())

    def reaped(self, m=None):
        """{reason: mm_reaper_reaped_total} (and "all": their sum)."""
        m = self.metrics() if m is None else m
        out = {r: int(m.get(f'mm_reaper_reaped_total{{reason="{r}"}}', 0)) for r in self.REASONS}
        out["all"] = sum(out.values())
        return out


class Bootstrap(Proc):
    """mm-bootstrap on a loopback port of its own (MM_BOOTSTRAP_LISTEN), over
    `stores`; extra MM_* settings as keyword arguments (MM_BOOTSTRAP_TTL,
    MM_BOOTSTRAP_PROBE_TIMEOUT_MS, ...). A gateway reaches it at .url
    (MM_BOOTSTRAP_URL)."""

    def __init__(self, stores, workdir, name="mm-bootstrap", **extra_env):
        self.port = free_port()
        env = {
            "MM_BOOTSTRAP_LISTEN": f"127.0.0.1:{self.port}",
            "MM_DATABASE_URL": stores.pg_url,
            "MM_REDIS_URL": stores.redis_url,
            "MM_THREADS": "2",
            "MM_LOG_LEVEL": "debug",
        }
        env.update(extra_env)
        super().__init__(name, binary("mm-bootstrap"), env, workdir)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def internal(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self):
        def new_ports():
            self.port = free_port()
            self.env["MM_BOOTSTRAP_LISTEN"] = f"127.0.0.1:{self.port}"

        return self.start_with_retry(lambda: self.wait_ready(self.internal("/readyz")), new_ports)


# ---- mm-signal: one Signal class for the signaling tests (test_signal.py)
# and the STUN tests (test_stun.py) ------------------------------------------


def free_udp_port(*avoid):
    """A UDP port that nothing holds right now on any address, IPv4 or IPv6
    (bound to the dual-stack wildcard, port 0), and not in `avoid`."""
    while True:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.bind(("::", 0))
            port = s.getsockname()[1]
        if port not in avoid:
            return port


class Signal(Proc):
    """mm-signal on a loopback port of its own (MM_SIGNAL_LISTEN), over
    `stores`, with its STUN responder on two free UDP ports (.stun_port,
    .stun_alt_port; MM_STUN_ADDR is left at its default, ::, so both
    127.0.0.1 and ::1 answer); extra MM_* settings as keyword arguments
    (MM_SESSION_TTL, MM_PUNCH_DELAY_MS, MM_MAX_PENDING_OFFERS, MM_STUN_RATE,
    MM_STUN_PORT, ...). A gateway reaches it at .url (MM_SIGNAL_URL).
    start(ready_path) waits for that path to answer 200: "/readyz" (the
    default) needs Redis and PostgreSQL; "/livez" only the process (enough
    for STUN, which needs no store)."""

    def __init__(self, stores, workdir, name="mm-signal", **extra_env):
        self.port = free_port()
        self.stun_port = int(extra_env.get("MM_STUN_PORT") or free_udp_port())
        self.stun_alt_port = int(extra_env.get("MM_STUN_ALT_PORT") or free_udp_port(self.stun_port))
        self._fixed_stun = "MM_STUN_PORT" in extra_env or "MM_STUN_ALT_PORT" in extra_env
        env = {
            "MM_SIGNAL_LISTEN": f"127.0.0.1:{self.port}",
            "MM_DATABASE_URL": stores.pg_url,
            "MM_REDIS_URL": stores.redis_url,
            "MM_STUN_PORT": str(self.stun_port),
            "MM_STUN_ALT_PORT": str(self.stun_alt_port),
            "MM_THREADS": "2",
            "MM_LOG_LEVEL": "debug",
        }
        env.update(extra_env)
        super().__init__(name, binary("mm-signal"), env, workdir)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def internal(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self, ready_path="/readyz"):
        def new_ports():
            self.port = free_port()
            self.env["MM_SIGNAL_LISTEN"] = f"127.0.0.1:{self.port}"
            if not self._fixed_stun:
                self.stun_port = free_udp_port()
                self.stun_alt_port = free_udp_port(self.stun_port)
                self.env.update(MM_STUN_PORT=str(self.stun_port), MM_STUN_ALT_PORT=str(self.stun_alt_port))

        return self.start_with_retry(lambda: self.wait_ready(self.internal(ready_path)), new_ports)

    def metrics(self):
        status, _, body = http_get(self.internal("/metrics"))
        assert status == 200, f"{self.name} /metrics: {status} {body[:200]!r}"
        return parse_metrics(body.decode())


# ---- end of the mm-signal block ------------------------------------------


class ExtraRedis:
    """A redis-server of a test's own on a unix socket in `directory`, with
    extra command-line arguments (e.g. "--rename-command", "CONFIG", "").
    Stopped by pid with stop()."""

    def __init__(self, directory, *args):
        os.makedirs(directory, exist_ok=True)
        self.dir = directory
        self.sock = os.path.join(directory, "redis.sock")
        self.url = f"unix:{self.sock}"
        self._log = open(os.path.join(directory, "redis.log"), "ab")
        self.p = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", self.sock, "--unixsocketperm", "700", "--dir", directory,
             "--save", "", "--appendonly", "no", *args],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log, start_new_session=True)
        wait_for(lambda: self.cli("PING") == "PONG", timeout=10, what=f"redis-server in {directory}")

    def cli(self, *args):
        return run(["redis-cli", "-s", self.sock, "--raw", *args], check=False, timeout=10).stdout.strip()

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        self._log.close()


# ---------------------------------------------------------------------------
# HTTP clients


class Response:
    def __init__(self, rc, status, version, headers, body, stderr=""):
        self.rc = rc
        self.status = status
        self.version = version
        self.headers = headers  # lower-case names; the last value wins
        self.body = body
        self.stderr = stderr

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise AssertionError(f"body is not JSON ({e}): {self.body[:300]!r}") from None

    def __repr__(self):
        return (
            f"<Response rc={self.rc} status={self.status} http={self.version} "
            f"ct={self.headers.get('content-type')!r} body={self.body[:300]!r} stderr={self.stderr.strip()[-300:]!r}>"
        )


def _parse_header_block(text):
    """Headers of the LAST response in a curl -D dump (skips 100-continue)."""
    blocks = [b for b in re.split(r"\r?\n\r?\n", text) if b.strip()]
    headers = {}
    if not blocks:
        return headers
    for line in blocks[-1].splitlines()[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return headers


class Curl:
    """Runs the curl CLI against a gateway. Each call is a new process and a
    new TLS connection."""

    # An OpenSSL configuration at security level 0, so that curl agrees to
    # present keys that the system default (level 2) refuses to load (RSA
    # 1024): the point is to see what the server says about them.
    WEAK_CONF = (
        "openssl_conf = openssl_init\n[openssl_init]\nssl_conf = ssl_sect\n"
        "[ssl_sect]\nsystem_default = system_default_sect\n"
        "[system_default_sect]\nCipherString = DEFAULT:@SECLEVEL=0\n"
    )

    def __init__(self, cacert, workdir):
        self.cacert = cacert
        self.workdir = workdir
        self._seq = itertools.count(1)  # next() is atomic: tests call curl from threads
        self.weak_conf = os.path.join(workdir, "seclevel0.cnf")
        with open(self.weak_conf, "w") as f:
            f.write(self.WEAK_CONF)

    def __call__(
        self,
        url,
        *,
        method="POST",
        cert=None,
        json_body=None,
        data=None,
        content_type="application/json",
        headers=(),
        http="1.1",
        extra=(),
        timeout=20,
        weak_crypto=False,
    ):
        """cert: a Cert (client certificate) or None. json_body: an object
        to send as JSON; data: raw bytes/str body. http: '1.1' or '2'.
        weak_crypto: run curl at OpenSSL security level 0 (to present an
        RSA 1024 key). Returns a Response; rc != 0 means curl failed (e.g.
        the handshake)."""
        base = os.path.join(self.workdir, f"curl{next(self._seq)}")
        body_out, hdr_out = base + ".body", base + ".hdr"
        cmd = [
            "curl", "-sS", "--max-time", str(timeout), "--cacert", self.cacert,
            "-o", body_out, "-D", hdr_out, "-w", "%{http_code} %{http_version}",
            "-X", method,
        ]
        cmd += ["--http2"] if http == "2" else ["--http1.1"]
        if cert is not None:
            cmd += ["--cert", cert.cert, "--key", cert.key]
        if json_body is not None:
            data = json.dumps(json_body)
        if data is not None:
            data_in = base + ".in"
            with open(data_in, "wb") as f:
                f.write(data.encode() if isinstance(data, str) else data)
            cmd += ["--data-binary", "@" + data_in]
            if content_type is not None:
                cmd += ["-H", f"Content-Type: {content_type}"]
            else:
                cmd += ["-H", "Content-Type:"]
        for h in headers:
            cmd += ["-H", h]
        cmd += list(extra)
        cmd.append(url)
        env = dict(os.environ, OPENSSL_CONF=self.weak_conf) if weak_crypto else None
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 10, env=env)
        status, version = 0, ""
        parts = p.stdout.split()
        if len(parts) >= 2:
            status, version = int(parts[0]), parts[1]
        hdr_text = ""
        if os.path.exists(hdr_out):
            with open(hdr_out, encoding="latin-1") as f:
                hdr_text = f.read()
        body = b""
        if os.path.exists(body_out):
            with open(body_out, "rb") as f:
                body = f.read()
        for path in (body_out, hdr_out):
            with contextlib.suppress(OSError):
                os.unlink(path)
        return Response(p.returncode, status, version, _parse_header_block(hdr_text), body, p.stderr)


def ssl_client_context(cacert, cert=None, *, min_version=None, max_version=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cacert)
    if cert is not None:
        ctx.load_cert_chain(cert.cert, cert.key)
    if min_version:
        ctx.minimum_version = min_version
    if max_version:
        ctx.maximum_version = max_version
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class TLSConn:
    """One HTTP/1.1 keep-alive connection over Python's ssl module (for
    session resumption and for many quick requests on fresh connections)."""

    def __init__(self, port, ctx, session=None, host="127.0.0.1", timeout=10, preamble=None):
        """preamble: bytes sent in the clear before the TLS handshake (a
        PROXY protocol header)."""
        raw = socket.create_connection((host, port), timeout=timeout)
        if preamble:
            raw.sendall(preamble)
        self.sock = ctx.wrap_socket(raw, server_hostname=host, session=session)
        self.conn = http.client.HTTPConnection(host, port, timeout=timeout)
        self.conn.sock = self.sock
        self.last_session = None
        self.last_reused = False

    def request(self, method, path, body=None, headers=None):
        hdrs = {"Host": "localhost"}
        if body is not None:
            if not isinstance(body, (bytes, str)):
                body = json.dumps(body)
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        self.conn.request(method, path, body=body, headers=hdrs)
        r = self.conn.getresponse()
        # The socket may be closed with the response (Connection: close):
        # keep the session (TLS 1.3 tickets have arrived by now).
        self.last_session = self.sock.session
        self.last_reused = self.sock.session_reused
        data = r.read()
        return Response(0, r.status, "1.1", {k.lower(): v for k, v in r.getheaders()}, data)

    @property
    def session(self):
        return self.sock.session or self.last_session

    @property
    def session_reused(self):
        return self.sock.session_reused if self.sock.session else self.last_reused

    def close(self):
        with contextlib.suppress(Exception):
            self.conn.close()
        with contextlib.suppress(Exception):
            self.sock.close()


# ---------------------------------------------------------------------------
# assertions

TIMESTAMP_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def assert_error(resp, status, code, field=None):
    """The SPEC §3 error shape: exactly {"error":{"code","message"}} as
    application/json, with `status` and `code`; `field` must be named in the
    message when given."""
    assert resp.rc == 0, f"curl failed: {resp!r}"
    assert resp.status == status and resp.body, f"expected {status} {code}, got {resp!r}"
    ct = resp.headers.get("content-type", "")
    assert ct.split(";")[0].strip().lower() == "application/json", f"content-type {ct!r}: {resp!r}"
    body = resp.json()
    assert isinstance(body, dict) and set(body) == {"error"}, f"error shape: {body!r}"
    err = body["error"]
    assert isinstance(err, dict) and set(err) == {"code", "message"}, f"error shape: {body!r}"
    assert err["code"] == code, f"expected code {code!r}, got {body!r} (status {resp.status})"
    assert isinstance(err["message"], str) and err["message"].strip(), f"empty message: {body!r}"
    if field:
        assert field in err["message"], f"message should name {field!r}: {body!r}"
    return err


def assert_json(resp, status):
    assert resp.rc == 0, f"curl failed: {resp!r}"
    assert resp.status == status, f"expected {status}, got {resp!r}"
    ct = resp.headers.get("content-type", "")
    assert ct.split(";")[0].strip().lower() == "application/json", f"content-type {ct!r}: {resp!r}"
    return resp.json()


def assert_registration(resp, status, cert, display_name=None):
    """A register answer (201/200) for `cert`: the SPEC §3.1 body."""
    body = assert_json(resp, status)
    for k in ("peer_id", "email", "fingerprint", "display_name", "registered_at"):
        assert k in body, f"missing {k!r}: {body!r}"
    assert body["peer_id"] == cert.peer_id, f"peer_id {body['peer_id']} != SPKI hash {cert.peer_id}"
    assert body["email"] == cert.email, f"email {body['email']!r} != {cert.email!r}"
    assert body["fingerprint"] == cert.fingerprint, f"fingerprint {body['fingerprint']} != {cert.fingerprint}"
    assert body["display_name"] == display_name, f"display_name {body['display_name']!r} != {display_name!r}"
    assert isinstance(body["registered_at"], str) and TIMESTAMP_RE.match(body["registered_at"]), body
    return body


def cleanup_dir(path):
    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------
# broadcast and discovery (SPEC §3.1)

REGISTER = "/api/relay/register"
READY = "/api/relay/broadcast/ready"
HEARTBEAT = "/api/relay/broadcast/heartbeat"
STOP = "/api/relay/broadcast/stop"
LOOKUP = "/api/relay/broadcast/lookup"
LIST = "/api/relay/broadcast/list"

# online_since: whole seconds; last_heartbeat may carry a fraction.
UTC_SECONDS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
UTC_FRACTION_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")
SCOPES = ("loopback", "link-local", "private", "public")
PEER_RECORD_KEYS = ("peer_id", "email", "display_name", "port", "online_since", "last_heartbeat", "expires_in",
                    "candidates")


def parse_utc(text):
    """Seconds since the epoch of an RFC 3339 UTC time ("...Z")."""
    import datetime

    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def register(curl, gateway, cert, display_name=None):
    """Registers `cert` (must be new) through `gateway`; returns the cert."""
    body = {} if display_name is None else {"display_name": display_name}
    assert_registration(curl(gateway.url(REGISTER), cert=cert, json_body=body), 201, cert, display_name=display_name)
    return cert


def ready(curl, gateway, cert, port=None, addresses=None, *, body=None, **kw):
    """POST broadcast/ready with {"port", "addresses"} (None: left out) or
    with `body` as given."""
    if body is None:
        body = {}
        if port is not None:
            body["port"] = port
        if addresses is not None:
            body["addresses"] = addresses
    return curl(gateway.url(READY), cert=cert, json_body=body, **kw)


def heartbeat(curl, gateway, cert, **kw):
    return curl(gateway.url(HEARTBEAT), cert=cert, **kw)


def stop(curl, gateway, cert, **kw):
    return curl(gateway.url(STOP), cert=cert, **kw)


def _query(params):
    import urllib.parse

    return "&".join(f"{urllib.parse.quote(str(k), safe='')}={urllib.parse.quote(str(v), safe='')}"
                    for k, v in params if v is not None)


def lookup(curl, gateway, cert, email=None, peer_id=None, *, query=None, **kw):
    """GET broadcast/lookup?email=|peer_id= (query: a raw query string)."""
    if query is None:
        query = _query([("email", email), ("peer_id", peer_id)])
    return curl(gateway.url(f"{LOOKUP}?{query}" if query else LOOKUP), method="GET", cert=cert, **kw)


def list_page(curl, gateway, cert, limit=None, after=None, *, query=None, **kw):
    """GET broadcast/list?limit=&after= (query: a raw query string)."""
    if query is None:
        query = _query([("limit", limit), ("after", after)])
    return curl(gateway.url(f"{LIST}?{query}" if query else LIST), method="GET", cert=cert, **kw)


def assert_ready(resp, cert, *, ttl=3600, interval=None, observed="127.0.0.1"):
    """A 200 ready answer: {"peer_id","expires_in","heartbeat_interval",
    "observed_address"}; heartbeat_interval within [0.9 * interval,
    interval] (interval defaults to ttl / 2)."""
    body = assert_json(resp, 200)
    for k in ("peer_id", "expires_in", "heartbeat_interval", "observed_address"):
        assert k in body, f"ready answer without {k!r}: {body!r}"
    assert body["peer_id"] == cert.peer_id, body
    assert body["expires_in"] == ttl and type(body["expires_in"]) is int, f"expires_in should be {ttl}: {body!r}"
    interval = ttl / 2 if interval is None else interval
    hi = body["heartbeat_interval"]
    assert type(hi) in (int, float) and 0.9 * interval - 1e-9 <= hi <= interval, (
        f"heartbeat_interval {hi!r} not within [{0.9 * interval}, {interval}]: {body!r}")
    if observed is not None:
        assert body["observed_address"] == observed, f"observed_address should be {observed!r}: {body!r}"
    return body


def cand(ip, port, scope, source="reported"):
    return {"ip": ip, "port": port, "scope": scope, "source": source}


def assert_peer_record(rec, cert, *, port=None, display_name=None, ttl=3600, candidates=None):
    """One peer record (SPEC §3.1) for `cert`; `candidates` (a list) must be
    exactly equal when given."""
    assert isinstance(rec, dict), f"a peer record is an object: {rec!r}"
    missing = [k for k in PEER_RECORD_KEYS if k not in rec]
    assert not missing, f"peer record without {missing}: {rec!r}"
    assert rec["peer_id"] == cert.peer_id, rec
    assert rec["email"] == cert.email, rec
    assert rec["display_name"] == display_name, f"display_name should be {display_name!r}: {rec!r}"
    if port is not None:
        assert rec["port"] == port, rec
    assert isinstance(rec["online_since"], str) and UTC_SECONDS_RE.match(rec["online_since"]), (
        f"online_since should be YYYY-MM-DDTHH:MM:SSZ: {rec!r}")
    assert isinstance(rec["last_heartbeat"], str) and UTC_FRACTION_RE.match(rec["last_heartbeat"]), (
        f"last_heartbeat should be RFC 3339 UTC: {rec!r}")
    assert parse_utc(rec["last_heartbeat"]) >= parse_utc(rec["online_since"]), rec
    assert type(rec["expires_in"]) is int and 0 < rec["expires_in"] <= ttl, f"expires_in not in (0, {ttl}]: {rec!r}"
    assert isinstance(rec["candidates"], list) and rec["candidates"], f"no candidates: {rec!r}"
    for c in rec["candidates"]:
        assert isinstance(c, dict) and set(c) == {"ip", "port", "scope", "source"}, f"candidate shape: {c!r}"
        assert c["scope"] in SCOPES and c["source"] in ("reported", "observed"), c
        assert type(c["port"]) is int and 1 <= c["port"] <= 65535, c
    if candidates is not None:
        assert rec["candidates"] == candidates, (
            f"candidates\n  got      {rec['candidates']!r}\n  expected {candidates!r}")
    return rec


def walk_list(curl, gateway, cert, limit=None, between_pages=None, max_pages=1000):
    """Follows `next` from the first page to the end; between_pages(n, pages)
    runs after page n (1-based). Returns the pages' bodies."""
    pages, after = [], None
    while True:
        body = assert_json(list_page(curl, gateway, cert, limit=limit, after=after), 200)
        assert isinstance(body, dict) and set(body) >= {"peers", "next"}, f"list answer shape: {body!r}"
        assert isinstance(body["peers"], list), body
        if limit is not None:
            assert len(body["peers"]) <= limit, f"{len(body['peers'])} peers on a page of limit {limit}"
        pages.append(body)
        if body["next"] is None:
            return pages
        assert isinstance(body["next"], str) and body["next"], f"next must be a string or null: {body['next']!r}"
        assert len(pages) < max_pages, "list never ends"
        after = body["next"]
        if between_pages is not None:
            between_pages(len(pages), pages)


def proxy_preamble(src_ip, src_port=40404):
    """A PROXY protocol v1 header claiming the connection comes from src_ip."""
    if ":" in src_ip:
        return f"PROXY TCP6 {src_ip} ::1 {src_port} 443\r\n".encode()
    return f"PROXY TCP4 {src_ip} 127.0.0.1 {src_port} 443\r\n".encode()


def proxied(gateway, cacert, cert, method, path, body=None, *, src_ip, src_port=40404):
    """One request on a new connection that starts with a PROXY header (for a
    gateway with MM_TRUST_PROXY_PROTOCOL=1)."""
    conn = TLSConn(gateway.port, ssl_client_context(cacert, cert), preamble=proxy_preamble(src_ip, src_port))
    try:
        return conn.request(method, path, body)
    finally:
        conn.close()


class Stack:
    """Own stores + tracker + gateway (for tests that stop or flush a store,
    or need special tracker settings on stores nobody else uses), and an
    mm-reaper too when reaper_env is given (a dict, may be empty). A test may
    replace .reaper (after a kill); close() stops whatever .reaper is then.
    Likewise an mm-bootstrap, routed to by the gateway, when bootstrap_env
    is given."""

    def __init__(self, run_dir, server_cert, tag, tracker_env=None, gateway_env=None, reaper_env=None,
                 bootstrap_env=None):
        self.stores = Stores(os.path.join(run_dir, tag))
        self.tracker = self.gateway = self.reaper = self.bootstrap = None
        self._args = (run_dir, server_cert, tag, tracker_env or {}, gateway_env or {}, reaper_env)
        self._bootstrap_env = bootstrap_env

    def __enter__(self):
        run_dir, server_cert, tag, tenv, genv, renv = self._args
        try:
            self.stores.start()
            self.tracker = Tracker(self.stores, run_dir, name=f"mm-tracker-{tag}", **tenv).start()
            if self._bootstrap_env is not None:
                self.bootstrap = Bootstrap(self.stores, run_dir, name=f"mm-bootstrap-{tag}",
                                           **self._bootstrap_env).start()
                genv = {"MM_BOOTSTRAP_URL": self.bootstrap.url, **genv}
            self.gateway = Gateway(self.tracker.url, server_cert, run_dir, name=f"mm-gateway-{tag}", **genv).start()
            self.stores.wait_presence_marker()
            if renv is not None:
                self.reaper = Reaper(self.stores, run_dir, name=f"mm-reaper-{tag}", **renv).start()
        except BaseException:
            self.close(check=False)
            raise
        return self

    def close(self, check=True):
        errors = []
        for p in (self.reaper, self.gateway, self.bootstrap, self.tracker):
            if p is None or p.p is None:
                continue
            try:
                if check:
                    p.stop_checked()  # also fails when it had crashed
                else:
                    p.terminate()
            except AssertionError as e:
                errors.append(str(e))
        self.stores.stop()
        if check:
            assert not errors, "\n".join(errors)

    def __exit__(self, et, ev, tb):
        self.close(check=et is None)
        return False
