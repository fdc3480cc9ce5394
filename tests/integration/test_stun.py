"""mm-signal's STUN Binding responder (SPEC §3.3), from the outside: real
third-party clients (coturn's turnutils_stunclient, RFC 8489; Debian's
`stun`, the RFC 3489 client of the Vovida stund project) and raw datagrams
from Python, over 127.0.0.1 and ::1, on both ports.

The responder answers whatever copy of mm-signal the test starts; it needs
no store, so these tests wait for /livez rather than /readyz.
"""

import os
import re
import shutil
import socket
import struct
import subprocess
import time
import zlib

import pytest

import mm

COOKIE = 0x2112A442
BINDING_REQUEST, BINDING_SUCCESS, BINDING_ERROR, BINDING_INDICATION = 0x0001, 0x0101, 0x0111, 0x0011
MAPPED, CHANGE_REQUEST, XOR_MAPPED, SOFTWARE, FINGERPRINT = 0x0001, 0x0003, 0x0020, 0x8022, 0x8028
ERROR_CODE, UNKNOWN_ATTRIBUTES = 0x0009, 0x000A

# RFC 5769 §2.1, the sample request (short-term credentials, ICE attributes).
RFC5769_REQUEST = bytes.fromhex(
    "000100582112a442b7e7a701bc34d686fa87dfae802200105354554e2074657374"
    "20636c69656e74002400046e0001ff80290008932ff9b151263b36000600096576"
    "746a3a68367659202020000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571"
    "a280280004e57a3bcf"
)


# ---------------------------------------------------------------------------
# a small STUN codec for the assertions (independent of the C one)


def attr(atype, value):
    pad = (-len(value)) % 4
    return struct.pack("!HH", atype, len(value)) + value + b"\0" * pad


def message(mtype, attrs=b"", txid=None, cookie=COOKIE, fingerprint=False):
    txid = txid if txid is not None else os.urandom(12)
    body = attrs
    if fingerprint:
        head = struct.pack("!HHI", mtype, len(body) + 8, cookie) + txid
        crc = zlib.crc32(head + body) ^ 0x5354554E
        body += attr(FINGERPRINT, struct.pack("!I", crc))
    return struct.pack("!HHI", mtype, len(body), cookie) + txid + body


def classic_request(txid16, attrs=b""):
    return struct.pack("!HH", BINDING_REQUEST, len(attrs)) + txid16 + attrs


def parse(data):
    """-> (type, cookie, txid (12 bytes), [(type, value)]); checks the
    framing and FINGERPRINT strictly."""
    assert len(data) >= 20, data
    mtype, length, cookie = struct.unpack("!HHI", data[:8])
    assert length == len(data) - 20 and length % 4 == 0, (length, len(data))
    attrs, off = [], 20
    while off < len(data):
        atype, alen = struct.unpack("!HH", data[off:off + 4])
        value = data[off + 4:off + 4 + alen]
        assert len(value) == alen
        if atype == FINGERPRINT:
            assert off + 8 == len(data), "FINGERPRINT must be last"
            assert struct.unpack("!I", value)[0] == zlib.crc32(data[:off]) ^ 0x5354554E, "bad FINGERPRINT"
        attrs.append((atype, value))
        off += 4 + alen + (-alen % 4)
    return mtype, cookie, data[8:20], attrs


def get(attrs, atype):
    return next((v for t, v in attrs if t == atype), None)


def decode_address(value, xor_with=None):
    family, port = value[1], struct.unpack("!H", value[2:4])[0]
    raw = value[4:]
    if xor_with is not None:
        port ^= COOKIE >> 16
        raw = bytes(a ^ b for a, b in zip(raw, xor_with))
    if family == 1:
        assert len(raw) == 4
        return socket.inet_ntop(socket.AF_INET, raw), port
    assert family == 2 and len(raw) == 16
    return socket.inet_ntop(socket.AF_INET6, raw), port


def xor_mapped(msg_txid, value):
    return decode_address(value, struct.pack("!I", COOKIE) + msg_txid)


class Client:
    """A UDP socket on 127.0.0.1 or ::1 talking to one STUN port."""

    def __init__(self, host, port):
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.server = (host, port)
        self.sock = socket.socket(self.family, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.local = self.sock.getsockname()[:2]

    def send(self, data, to=None):
        self.sock.sendto(data, to or self.server)

    def recv(self, timeout=2.0):
        """-> (data, sender) or (None, None) after `timeout`."""
        self.sock.settimeout(timeout)
        try:
            data, sender = self.sock.recvfrom(4096)
            return data, sender[:2]
        except socket.timeout:
            return None, None

    def ask(self, data, timeout=2.0):
        self.send(data)
        return self.recv(timeout)

    def close(self):
        self.sock.close()


def have_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def need_ipv6():
    if not have_ipv6_loopback():
        pytest.skip("this machine has no ::1 (IPv6 disabled): the IPv6 STUN checks cannot run here")


def need_tool(name, package):
    if shutil.which(name) is None:
        pytest.fail(f"{name} is missing: apt-get install {package} (deploy/local/packages.txt lists it)", pytrace=False)


@pytest.fixture(scope="module")
def stun(stores, run_dir):
    """One mm-signal for the module, its rate limit out of the way."""
    s = mm.Signal(stores, run_dir, name="mm-signal-stun", MM_STUN_RATE="100000", MM_STUN_BURST="100000")
    try:
        s.start("/livez")
        yield s
    finally:
        s.stop_checked()


def dropped(m, reason):
    return int(m.get(f'mm_stun_dropped_total{{reason="{reason}"}}', 0))


# ---------------------------------------------------------------------------
# third-party clients


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_turnutils_stunclient_gets_its_address_on_both_ports(stun, host):
    need_tool("turnutils_stunclient", "coturn")
    if ":" in host:
        need_ipv6()
    for port in (stun.stun_port, stun.stun_alt_port):
        p = mm.run(["turnutils_stunclient", "-p", str(port), host], timeout=15, check=False)
        out = p.stdout + p.stderr
        assert p.returncode == 0, out
        m = re.search(r"UDP reflexive addr: (\S+):(\d+)", out)
        assert m, f"no reflexive address in turnutils_stunclient's output:\n{out}"
        assert m.group(1) == host, out
        assert 1 <= int(m.group(2)) <= 65535
        assert "error" not in out.lower(), out


def test_rfc3489_stun_client_gets_its_address(stun):
    """Debian's `stun` (RFC 3489: no magic cookie) from a chosen source
    port, so the mapped port is known too."""
    need_tool("stun", "stun-client")
    for port in (stun.stun_port, stun.stun_alt_port):
        src = mm.free_udp_port()
        p = mm.run(["stun", f"127.0.0.1:{port}", "1", "-v", "-p", str(src)], timeout=15, check=False)
        out = p.stdout + p.stderr
        assert "Got a response" in out, out
        assert f"MappedAddress = 127.0.0.1:{src}" in out, out


def test_rfc3489_nat_discovery_change_port_from_the_other_port(stun):
    """The full RFC 3489 discovery: test I (plain) and III (change port)
    are answered, III from the second port; test II (change IP) is not,
    since the responder has one address."""
    need_tool("stun", "stun-client")
    p = mm.run(["stun", f"127.0.0.1:{stun.stun_port}", "-v"], timeout=60, check=False)
    out = p.stdout + p.stderr
    assert re.search(r"test I = 1", out), out
    assert re.search(r"test II = 0", out), out
    assert re.search(r"test III = 1", out), out
    assert "MappedAddress = 127.0.0.1:" in out, out


# ---------------------------------------------------------------------------
# raw datagrams


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_rfc5769_sample_request_is_answered(stun, host):
    if ":" in host:
        need_ipv6()
    c = Client(host, stun.stun_port)
    try:
        data, sender = c.ask(RFC5769_REQUEST)
        assert data is not None, "no answer to the RFC 5769 sample request"
        assert sender == (host, stun.stun_port)
        mtype, cookie, txid, attrs = parse(data)
        assert (mtype, cookie, txid) == (BINDING_SUCCESS, COOKIE, RFC5769_REQUEST[8:20])
        assert len(data) <= len(RFC5769_REQUEST) + 64
        assert xor_mapped(txid, get(attrs, XOR_MAPPED)) == c.local
        assert decode_address(get(attrs, MAPPED)) == c.local
        assert get(attrs, SOFTWARE) == b"matchmaker"
        assert attrs[-1][0] == FINGERPRINT
    finally:
        c.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_smallest_request_reply_within_64_bytes(stun, host):
    """A bare 20-byte request: IPv4 gets XOR-MAPPED-ADDRESS, SOFTWARE,
    MAPPED-ADDRESS and FINGERPRINT (68 bytes); IPv6 would need 92 > 84, so
    MAPPED-ADDRESS is left out. With a FINGERPRINT (28 bytes) IPv6 gets it."""
    if ":" in host:
        need_ipv6()
    c = Client(host, stun.stun_alt_port)
    try:
        for req in (message(BINDING_REQUEST), message(BINDING_REQUEST, fingerprint=True)):
            data, _ = c.ask(req)
            assert data is not None
            assert len(data) <= len(req) + 64, (len(req), len(data))
            mtype, _, txid, attrs = parse(data)
            assert mtype == BINDING_SUCCESS and txid == req[8:20]
            assert xor_mapped(txid, get(attrs, XOR_MAPPED)) == c.local
            assert get(attrs, SOFTWARE) == b"matchmaker"
            has_mapped = get(attrs, MAPPED) is not None
            assert has_mapped == (c.family == socket.AF_INET or len(req) >= 28), (len(req), attrs)
    finally:
        c.close()


def test_classic_request_gets_mapped_address_only(stun):
    c = Client("127.0.0.1", stun.stun_port)
    try:
        txid16 = b"\xde\xad\xbe\xef" + os.urandom(12)
        data, _ = c.ask(classic_request(txid16, attr(CHANGE_REQUEST, b"\0\0\0\0")))
        assert data is not None
        mtype, length = struct.unpack("!HH", data[:4])
        assert mtype == BINDING_SUCCESS and data[4:20] == txid16
        assert length == len(data) - 20 == 12
        assert struct.unpack("!HH", data[20:24]) == (MAPPED, 8)
        assert decode_address(data[24:32]) == c.local
    finally:
        c.close()


def test_malformed_and_other_messages_get_no_answer(stun):
    """Nothing but well-formed Binding requests is answered (SPEC §3.3)."""
    good = message(BINDING_REQUEST, fingerprint=True)
    bad_fp = bytearray(good)
    bad_fp[-1] ^= 1
    odd = message(BINDING_REQUEST, attr(SOFTWARE, b"abc"))[:-1]  # header length no longer matches
    malformed = [
        b"",
        b"\x00",
        os.urandom(19),
        b"GET / HTTP/1.1\r\n\r\n",
        good[:24],
        good + b"\0\0\0\0",
        bytes(bad_fp),
        odd,
        struct.pack("!HHI", BINDING_REQUEST, 8, COOKIE) + os.urandom(12) + struct.pack("!HH", SOFTWARE, 40) + b"abcd",
        b"\xc0" + good[1:],  # top bits of the type set
        os.urandom(1200),
    ]
    not_binding = [
        message(BINDING_INDICATION),
        message(BINDING_SUCCESS, fingerprint=True),
        message(BINDING_ERROR),
        message(0x0003, fingerprint=True),  # TURN Allocate
        message(0x0002),  # RFC 3489 Shared Secret request
    ]
    before = stun.metrics()
    c = Client("127.0.0.1", stun.stun_port)
    try:
        for d in malformed + not_binding:
            c.send(d)
        data, _ = c.recv(timeout=1.0)
        assert data is None, f"answered something that is not a Binding request: {data!r}"
        data, _ = c.ask(good)  # and the port still works
        assert data is not None and parse(data)[2] == good[8:20]
    finally:
        c.close()
    after = stun.metrics()
    assert dropped(after, "malformed") - dropped(before, "malformed") >= len(malformed)
    assert dropped(after, "not_binding") - dropped(before, "not_binding") == len(not_binding)
    assert after["mm_stun_requests_total"] - before["mm_stun_requests_total"] >= len(malformed) + len(not_binding) + 1
    assert after["mm_stun_responses_total"] - before["mm_stun_responses_total"] >= 1


def test_unknown_comprehension_required_attribute_gets_420(stun):
    c = Client("127.0.0.1", stun.stun_port)
    try:
        req = message(BINDING_REQUEST, attr(0x7FFE, b"x") + attr(0x8FFF, b"optional"), fingerprint=True)
        data, _ = c.ask(req)
        assert data is not None
        assert len(data) <= len(req) + 64
        mtype, _, txid, attrs = parse(data)
        assert mtype == BINDING_ERROR and txid == req[8:20]
        code = get(attrs, ERROR_CODE)
        assert code[2] * 100 + code[3] == 420
        assert get(attrs, UNKNOWN_ATTRIBUTES) == struct.pack("!H", 0x7FFE)
        # RESPONSE-ADDRESS would aim the answer elsewhere: not done, 420 too
        req = message(BINDING_REQUEST, attr(0x0002, b"\0\1\0\1\x7f\0\0\1"))
        data, _ = c.ask(req)
        assert parse(data)[0] == BINDING_ERROR
    finally:
        c.close()


def test_change_request(stun):
    """CHANGE-REQUEST "change port" is answered from the other port; "change
    IP" cannot be done with one address: 420 naming CHANGE-REQUEST."""
    c = Client("127.0.0.1", stun.stun_port)
    try:
        data, sender = c.ask(message(BINDING_REQUEST, attr(CHANGE_REQUEST, b"\0\0\0\2")))
        assert data is not None and sender == ("127.0.0.1", stun.stun_alt_port)
        assert parse(data)[0] == BINDING_SUCCESS
        c2 = Client("127.0.0.1", stun.stun_alt_port)
        try:
            data, sender = c2.ask(message(BINDING_REQUEST, attr(CHANGE_REQUEST, b"\0\0\0\2")))
            assert data is not None and sender == ("127.0.0.1", stun.stun_port)
        finally:
            c2.close()
        data, sender = c.ask(message(BINDING_REQUEST, attr(CHANGE_REQUEST, b"\0\0\0\6")))
        mtype, _, _, attrs = parse(data)
        assert mtype == BINDING_ERROR and get(attrs, UNKNOWN_ATTRIBUTES) == struct.pack("!H", CHANGE_REQUEST)
    finally:
        c.close()


def test_reply_leaves_from_the_address_the_request_went_to(stun):
    """Bound to the wildcard, the responder answers from the request's
    destination: 127.0.0.2 is as local as 127.0.0.1 on Linux, but a reply
    routed by the kernel alone would come from 127.0.0.1."""
    c = Client("127.0.0.1", stun.stun_port)
    try:
        c.send(message(BINDING_REQUEST), to=("127.0.0.2", stun.stun_port))
        data, sender = c.recv()
        assert data is not None
        assert sender == ("127.0.0.2", stun.stun_port)
    finally:
        c.close()


def test_rate_limit_per_source_ip(start_signal):
    s = start_signal(name="mm-signal-rl", ready_path="/livez", MM_STUN_RATE="1", MM_STUN_BURST="5")
    c = Client("127.0.0.1", s.stun_port)
    try:
        reqs = [message(BINDING_REQUEST) for _ in range(20)]
        for r in reqs:
            c.send(r)
        answered = 0
        while True:
            data, _ = c.recv(timeout=0.5)
            if data is None:
                break
            answered += 1
        assert 5 <= answered <= 6, f"{answered} of 20 answered with a burst of 5 and 1/s"
        m = s.metrics()
        assert dropped(m, "rate_limited") >= 14
        # another source IP has its own bucket (and the other port shares this one)
        if have_ipv6_loopback():
            c6 = Client("::1", s.stun_alt_port)
            try:
                assert c6.ask(message(BINDING_REQUEST))[0] is not None
            finally:
                c6.close()
        # the bucket refills at 1/s
        time.sleep(1.2)
        assert c.ask(message(BINDING_REQUEST))[0] is not None
    finally:
        c.close()


def test_stun_port_held_by_another_process_is_refused(stun, stores, run_dir):
    """SO_REUSEPORT would let a second copy silently share the port (and
    half the traffic): the responder checks first and refuses to start."""
    s = mm.Signal(stores, run_dir, name="mm-signal-dup", MM_STUN_PORT=str(stun.stun_port), MM_STUN_ALT_PORT="0")
    mm.Proc.start(s)
    try:
        s.p.wait(15)
    except subprocess.TimeoutExpired:
        s.terminate()
        raise AssertionError(f"a second mm-signal started on UDP {stun.stun_port}; log:\n{mm.tail(s.log)}") from None
    s._close()
    log = mm.tail(s.log, 50, since=s._log_start)
    assert s.p.returncode != 0
    assert "Address already in use" in log and str(stun.stun_port) in log, log


def test_bad_stun_settings_stop_the_process(stores, run_dir):
    for env, needle in (
        ({"MM_STUN_ADDR": "not-an-ip"}, "MM_STUN_ADDR"),
        ({"MM_STUN_PORT": "70000"}, "MM_STUN_PORT"),
        ({"MM_STUN_PORT": "4000", "MM_STUN_ALT_PORT": "4000"}, "MM_STUN_ALT_PORT"),
    ):
        s = mm.Signal(stores, run_dir, name="mm-signal-bad", **env)
        mm.Proc.start(s)
        try:
            s.p.wait(15)
        except subprocess.TimeoutExpired:
            s.terminate()
            raise AssertionError(f"mm-signal started with {env}") from None
        s._close()
        assert s.p.returncode != 0
        assert needle in mm.tail(s.log, 50, since=s._log_start)
