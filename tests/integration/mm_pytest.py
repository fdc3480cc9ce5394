"""The pytest plumbing both suites share (tests/integration and the NAT lab
in tests/e2e): a failing test shows what every live process logged while it
ran, no process may die during a test (SPEC §8), and each run has its own
short temp dir, kept when a test failed. A conftest uses it with

    from mm_pytest import pytest_runtest_makereport, pytest_terminal_summary  # noqa: F401
    run_dir, _processes_survive = mm_pytest.fixtures("mmt", "integration")
"""

import os

import pytest

import mm

_KEPT = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        # What each live process logged during this test (all of it for
        # processes the test started itself), at most the last 30 lines.
        offsets = getattr(item, "_mm_log_offsets", {})
        for p in list(mm.LIVE_PROCS):
            text = mm.tail(p.log, 30, since=offsets.get(p.log, 0))
            if text.strip():
                rep.sections.append((f"log during the test: {p.name} (pid {p.p.pid}, {p.log})", text))


def pytest_terminal_summary(terminalreporter):
    for label, d in _KEPT:
        terminalreporter.write_line(f"{label} run directory kept (logs, certificates): {d}")


def fixtures(prefix, label):
    """The session's run_dir fixture (a temp dir named `prefix`...) and the
    autouse fixture that fails a test during which a live process died."""

    @pytest.fixture(scope="session")
    def run_dir(request):
        """The run's own short temp dir; kept when a test failed."""
        d = mm.short_tmpdir(prefix)
        yield d
        if request.session.testsfailed or os.environ.get("MM_KEEP_TMP"):
            _KEPT.append((label, d))
        else:
            mm.cleanup_dir(d)

    @pytest.fixture(autouse=True)
    def processes_survive(request):
        """No process may crash on any input (SPEC §8): after every test,
        every process still registered as live must still run. Also notes
        where each log stood when the test began, for the failure report."""
        request.node._mm_log_offsets = {p.log: mm.log_size(p.log) for p in mm.LIVE_PROCS}
        yield
        dead = [p for p in mm.LIVE_PROCS if not p.alive()]
        for p in dead:
            mm.LIVE_PROCS.remove(p)
        assert not dead, "; ".join(
            f"{p.name} died during this test (exit {p.p.returncode}); log:\n{mm.tail(p.log)}" for p in dead
        )

    return run_dir, processes_survive
