"""Shared fixtures of the integration suite: one PostgreSQL + Redis, one
mm-tracker and one mm-gateway for the whole session (tests use unique emails
and fresh keys, so they do not interfere); tests that need special settings
start their own gateway through `start_gateway`.

Run: MM_BUILD_DIR=$PWD/build /usr/bin/python3 -m pytest -q tests/integration
Set MM_KEEP_TMP=1 to keep the run directory (logs, certificates, store
files); it is kept anyway when a test failed.
"""

import os

import pytest

import mm
import mm_pytest
from mm_pytest import pytest_runtest_makereport, pytest_terminal_summary  # noqa: F401


run_dir, _shared_processes_survive = mm_pytest.fixtures("mmt", "integration")


@pytest.fixture(scope="session")
def certs(run_dir):
    return mm.CertFactory(os.path.join(run_dir, "c"))


@pytest.fixture(scope="session")
def server_ca(certs):
    """The CA the gateway's certificate chains to (clients pin it)."""
    return certs.ca("srvca")


@pytest.fixture(scope="session")
def server_cert(certs, server_ca):
    return certs.server(server_ca)


@pytest.fixture(scope="session")
def curl(server_ca, run_dir):
    d = os.path.join(run_dir, "h")
    os.makedirs(d, exist_ok=True)
    return mm.Curl(server_ca.cert, d)


@pytest.fixture
def peer(certs):
    """Makes a fresh client identity: peer(alg='p256', email=None, **kw).
    The email defaults to a unique one."""

    def make(alg="p256", email=None, **kw):
        return certs.self_signed(email or mm.uniq_email(), alg=alg, **kw)

    return make


@pytest.fixture(scope="session")
def stores(run_dir):
    s = mm.Stores(os.path.join(run_dir, "s"))
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="session")
def tracker(stores, run_dir):
    t = mm.Tracker(stores, run_dir)
    try:
        t.start()
        stores.wait_presence_marker()
        yield t
    finally:
        t.stop_checked()


@pytest.fixture(scope="session")
def gateway(tracker, server_cert, run_dir):
    g = mm.Gateway(tracker.url, server_cert, run_dir)
    try:
        g.start()
        yield g
    finally:
        g.stop_checked()


@pytest.fixture
def start_gateway(tracker, server_cert, run_dir):
    """Starts an extra gateway in front of the shared tracker (or of
    `tracker=`, another mm.Tracker) with extra MM_* settings:
    start_gateway(MM_RATE_LIMIT=1, ...). Stopped (and checked for a clean
    exit) after the test."""
    started = []

    def start(name="mm-gateway-x", tracker=tracker, **env):
        g = mm.Gateway(tracker.url, server_cert, run_dir, name=f"{name}{len(started) + 1}", **env)
        started.append(g)
        return g.start()

    yield start
    errors = []
    for g in started:
        try:
            g.stop_checked()
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, "\n".join(errors)


@pytest.fixture
def start_tracker(stores, run_dir):
    """Starts an extra tracker on the shared stores with extra MM_* settings:
    start_tracker(MM_PRESENCE_TTL=600). Stopped (and checked for a clean
    exit) after the test. Mind that its presence keys live in the shared
    Redis: never leave one there that expires during the session."""
    started = []

    def start(name="mm-tracker-x", **env):
        t = mm.Tracker(stores, run_dir, name=f"{name}{len(started) + 1}", **env)
        started.append(t)
        return t.start()

    yield start
    errors = []
    for t in started:
        try:
            t.stop_checked()
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, "\n".join(errors)


# ---- mm-signal (added by the STUN part) ------------------------------------


@pytest.fixture
def start_signal(stores, run_dir):
    """Starts an mm-signal on the shared stores with extra MM_* settings:
    start_signal(MM_STUN_RATE=1, ready_path="/livez"). Stopped (and checked
    for a clean exit) after the test."""
    started = []

    def start(name="mm-signal-x", ready_path="/readyz", **env):
        s = mm.Signal(stores, run_dir, name=f"{name}{len(started) + 1}", **env)
        started.append(s)
        return s.start(ready_path)

    yield start
    errors = []
    for s in started:
        if s.p is None or not s.alive() and s.exit_code is not None:
            continue
        try:
            s.stop_checked()
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, "\n".join(errors)


# ---- end of the mm-signal block --------------------------------------------


@pytest.fixture
def registered(certs, curl, gateway):
    """Makes a fresh identity registered through the shared gateway:
    registered(display_name=None, alg='p256', email=None)."""

    def make(display_name=None, alg="p256", email=None):
        return mm.register(curl, gateway, certs.self_signed(email or mm.uniq_email(), alg=alg),
                           display_name=display_name)

    return make


@pytest.fixture
def daemons():
    """Daemons a test starts; any still running at the end is stopped (and must exit 0)."""
    started = []
    yield started
    errors = []
    for d in started:
        if d.alive():
            try:
                d.stop()
            except AssertionError as e:
                errors.append(str(e))
        else:
            d._close()
    assert not errors, "\n".join(errors)
