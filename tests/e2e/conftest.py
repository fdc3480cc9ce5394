"""Fixtures of the end-to-end tests: the NAT lab (tests/e2e/lab.py) and the
real suite inside it (tests/e2e/labstack.py), one of each per module.

Run (as root): MM_BUILD_DIR=$PWD/build /usr/bin/python3 -m pytest -q tests/e2e
Where the lab cannot be built (not root, namespaces or netfilter refused by
the kernel) every test is skipped with the reason; it never passes silently.
Set MM_KEEP_TMP=1 to keep the run directory (logs, certificates, store
files); it is kept anyway when a test failed.
"""

import os
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))

import lab as labmod  # noqa: E402
import labstack  # noqa: E402
import mm_pytest  # noqa: E402
from mm_pytest import pytest_runtest_makereport, pytest_terminal_summary  # noqa: E402, F401


run_dir, _lab_processes_survive = mm_pytest.fixtures("mme", "e2e")


@pytest.fixture(scope="module")
def lab():
    """The topology of lab.py, built for the module and removed after it
    (checked: no namespace of this run's prefix is left)."""
    lb = labmod.Lab()
    try:
        lb.build()
    except labmod.LabUnavailable as e:
        lb.close()
        pytest.skip(f"skipped: {e}")
    except BaseException:
        lb.close()
        raise
    try:
        yield lb
    finally:
        lb.close()
    left = lb.leftovers()
    assert not left, f"namespaces left after the lab closed: {left}"


@pytest.fixture(scope="module")
def stack(lab, run_dir):
    """Stores, mm-tracker, mm-signal (STUN on 3478/3479) and mm-gateway
    (0.0.0.0, reached at https://203.0.113.1:PORT) in srv; this test
    process stays in srv meanwhile."""
    with labstack.LabStack(lab, tempfile.mkdtemp(prefix="lab", dir=run_dir)) as st:
        yield st
