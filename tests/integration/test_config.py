"""SPEC §6 / STYLE rule 9: configuration is MM_* environment variables;
--help lists them and exits 0; a bad value stops the process at once with a
message naming the variable."""

import os
import subprocess

import pytest

import mm


def _run(name, args=(), env=None, timeout=10):
    """Runs a binary that should exit by itself; fails (after killing it by
    pid) when it is still running after `timeout` seconds."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("MM_")}
    full.update(env or {})
    p = subprocess.Popen([mm.binary(name), *args], env=full, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        pytest.fail(f"{name} {args} with {env} still ran after {timeout}s; stderr: {err[-2000:]}")
    return p.returncode, out, err


@pytest.mark.parametrize(
    "name,must_list",
    [
        ("mm-gateway", ["MM_RATE_LIMIT", "MM_RATE_BURST", "MM_GATEWAY_PORT", "MM_TLS_CERT_FILE", "MM_TLS_KEY_FILE",
                        "MM_TRACKER_URL", "MM_CLIENT_CA_FILE", "MM_TRUST_PROXY_PROTOCOL", "MM_ADMIN_PEER_IDS"]),
        ("mm-tracker", ["MM_DATABASE_URL", "MM_REDIS_URL", "MM_TRACKER_LISTEN", "MM_THREADS"]),
    ],
)
def test_help_lists_variables(name, must_list):
    code, out, err = _run(name, ["--help"])
    assert code == 0, f"--help exited {code}: {err}"
    text = out + err
    missing = [v for v in must_list if v not in text]
    assert not missing, f"{name} --help does not mention {missing}:\n{text}"


@pytest.mark.parametrize("name", ["mm-gateway", "mm-tracker"])
def test_unknown_argument_is_refused(name):
    code, out, err = _run(name, ["--no-such-option"])
    assert code != 0


GATEWAY_BAD = [
    ("MM_GATEWAY_PORT", "70000"),
    ("MM_GATEWAY_PORT", "abc"),
    ("MM_GATEWAY_PORT", "0"),
    ("MM_RATE_LIMIT", "abc"),
    ("MM_RATE_LIMIT", "-5"),
    ("MM_RATE_BURST", "12x"),
    ("MM_TRUST_PROXY_PROTOCOL", "maybe"),
    ("MM_THREADS", "many"),
]


@pytest.mark.parametrize("var,value", GATEWAY_BAD, ids=[f"{v}={x}" for v, x in GATEWAY_BAD])
def test_gateway_bad_value_names_the_variable(server_cert, var, value):
    env = {
        "MM_GATEWAY_ADDR": "127.0.0.1",
        "MM_GATEWAY_PORT": str(mm.free_port()),
        "MM_GATEWAY_INTERNAL_LISTEN": f"127.0.0.1:{mm.free_port()}",
        "MM_TLS_CERT_FILE": server_cert.cert,
        "MM_TLS_KEY_FILE": server_cert.key,
        "MM_TRACKER_URL": "http://127.0.0.1:1",
    }
    env[var] = value
    code, out, err = _run("mm-gateway", env=env)
    assert code != 0, f"{var}={value} was accepted"
    assert var in err, f"stderr does not name {var}: {err!r}"


@pytest.mark.parametrize("var", ["MM_TLS_CERT_FILE", "MM_TLS_KEY_FILE", "MM_CLIENT_CA_FILE"])
def test_gateway_missing_file_names_the_variable(server_cert, run_dir, var):
    env = {
        "MM_GATEWAY_ADDR": "127.0.0.1",
        "MM_GATEWAY_PORT": str(mm.free_port()),
        "MM_GATEWAY_INTERNAL_LISTEN": f"127.0.0.1:{mm.free_port()}",
        "MM_TLS_CERT_FILE": server_cert.cert,
        "MM_TLS_KEY_FILE": server_cert.key,
        "MM_TRACKER_URL": "http://127.0.0.1:1",
    }
    missing = os.path.join(run_dir, "does-not-exist.pem")
    env[var] = missing
    code, out, err = _run("mm-gateway", env=env)
    assert code != 0, f"{var}={missing} was accepted"
    assert var in err or missing in err, f"stderr names neither {var} nor the file: {err!r}"


def test_gateway_without_certificate_names_the_variable():
    env = {"MM_GATEWAY_PORT": str(mm.free_port()), "MM_GATEWAY_INTERNAL_LISTEN": f"127.0.0.1:{mm.free_port()}"}
    code, out, err = _run("mm-gateway", env=env)
    assert code != 0
    assert "MM_TLS_CERT_FILE" in err, err


def test_gateway_bad_service_url_names_it(server_cert):
    env = {
        "MM_GATEWAY_ADDR": "127.0.0.1",
        "MM_GATEWAY_PORT": str(mm.free_port()),
        "MM_GATEWAY_INTERNAL_LISTEN": f"127.0.0.1:{mm.free_port()}",
        "MM_TLS_CERT_FILE": server_cert.cert,
        "MM_TLS_KEY_FILE": server_cert.key,
        "MM_TRACKER_URL": "ftp://nowhere",
    }
    code, out, err = _run("mm-gateway", env=env)
    assert code != 0, "MM_TRACKER_URL=ftp://nowhere was accepted"
    assert "MM_TRACKER_URL" in err or "mm-tracker" in err, err


TRACKER_BAD = [
    ("MM_THREADS", "abc"),
    ("MM_THREADS", "-1"),
    ("MM_TRACKER_LISTEN", "127.0.0.1:99999"),
    ("MM_TRACKER_LISTEN", "nonsense"),
]


@pytest.mark.parametrize("var,value", TRACKER_BAD, ids=[f"{v}={x}" for v, x in TRACKER_BAD])
def test_tracker_bad_value_names_the_variable(var, value):
    env = {
        "MM_TRACKER_LISTEN": f"127.0.0.1:{mm.free_port()}",
        "MM_DATABASE_URL": "postgresql:///none?host=/nonexistent",
        "MM_REDIS_URL": "unix:/nonexistent/redis.sock",
    }
    env[var] = value
    code, out, err = _run("mm-tracker", env=env)
    assert code != 0, f"{var}={value} was accepted"
    assert var in err, f"stderr does not name {var}: {err!r}"


def test_tracker_bad_redis_url_names_it():
    env = {
        "MM_TRACKER_LISTEN": f"127.0.0.1:{mm.free_port()}",
        "MM_DATABASE_URL": "postgresql:///none?host=/nonexistent",
        "MM_REDIS_URL": "mongodb://localhost",
    }
    code, out, err = _run("mm-tracker", env=env)
    assert code != 0, "MM_REDIS_URL=mongodb://localhost was accepted"
    assert "MM_REDIS_URL" in err, err
