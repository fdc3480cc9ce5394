"""Test data for tests/load/broadcast_vs_stdiscosrv.sh (run by it, never alone).

  broadcast_gen.py devid CERT.pem
      the Syncthing device ID of a certificate: base32 of the SHA-256 of
      its DER, a Luhn mod-32 check character after each 13, groups of 7

  broadcast_gen.py mm FIRST COUNT DIR CANDIDATES PORT OBSERVED TTL
      COUNT Matchmaker peers numbered FIRST.. as registration and ready
      would leave them, for bulk loading: DIR/peers.tsv, DIR/broadcasts.tsv,
      DIR/events.tsv (COPY text format: a 'registered' and an 'online'
      event each, the details the tracker writes), DIR/presence.resp (Redis
      protocol for redis-cli --pipe: SET mm:presence:<id> "<ms> OBSERVED"
      EX TTL and ZADD mm:presence:deadlines), and their peer_ids appended
      to DIR/ids. CANDIDATES is the JSON a real ready stored.

  broadcast_gen.py std FIRST COUNT HOST PORT CERT KEY ADDRESS IDS
      COUNT devices numbered FIRST.. announced to stdiscosrv through its
      replication listener (what a peer discovery server sends it: one TLS
      connection from an allowed device, 4-byte length + ReplicationRecord
      protobuf each, stored with the same merge as an announce), ADDRESS
      expiring in 2 h like an announce's; their IDs appended to IDS.

Peer ids and device ids are SHA-256 of "mmload peer N" / "mmload device N",
so the same numbers always give the same ids.
"""
import base64
import hashlib
import os
import socket
import ssl
import struct
import sys
import time

B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def luhn32(s):
    # lib/protocol/luhn.go of Syncthing
    factor, total = 1, 0
    for ch in s:
        add = factor * B32.index(ch)
        factor = 1 if factor == 2 else 2
        total += add // 32 + add % 32
    return B32[(32 - total % 32) % 32]


def device_id(digest):
    s = base64.b32encode(digest).decode().rstrip("=")
    s = "".join(s[i:i + 13] + luhn32(s[i:i + 13]) for i in range(0, 52, 13))
    return "-".join(s[i:i + 7] for i in range(0, 56, 7))


def cert_der(path):
    with open(path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def gen_mm(first, count, d, candidates, port, observed, ttl):
    now_ms = int(time.time() * 1000)
    with open(os.path.join(d, "peers.tsv"), "w") as peers, \
            open(os.path.join(d, "broadcasts.tsv"), "w") as bcasts, \
            open(os.path.join(d, "events.tsv"), "w") as events, \
            open(os.path.join(d, "presence.resp"), "wb") as presence, \
            open(os.path.join(d, "ids"), "a") as ids:
        for i in range(first, first + count):
            pid = hashlib.sha256(b"mmload peer %d" % i).hexdigest()
            fp = hashlib.sha256(b"mmload certificate %d" % i).hexdigest()
            email = "bulk%d@bench.example" % i
            peers.write("%s\t%s\t%s\n" % (pid, email, fp))
            bcasts.write("%s\t%d\t%s\t%s\n" % (pid, port, candidates, observed))
            events.write('%s\tregistered\t{"email": "%s", "fingerprint": "%s"}\n' % (pid, email, fp))
            events.write('%s\tonline\t{"port": %d, "observed": "%s"}\n' % (pid, port, observed))
            presence.write(resp("SET", "mm:presence:" + pid, "%d %s" % (now_ms, observed), "EX", str(ttl)))
            presence.write(resp("ZADD", "mm:presence:deadlines", str(now_ms + ttl * 1000), pid))
            ids.write(pid + "\n")


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_bytes(num, b):
    return varint(num << 3 | 2) + varint(len(b)) + b


def field_int(num, v):
    return varint(num << 3) + varint(v)


def gen_std(first, count, host, port, cert, key, address, ids_path):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(cert, key)
    now_ns = time.time_ns()
    expires = now_ns + 2 * 3600 * 10**9  # addressExpiryTime of stdiscosrv
    addr = field_bytes(1, address.encode()) + field_int(2, expires)
    with socket.create_connection((host, port)) as raw, ctx.wrap_socket(raw) as tls, open(ids_path, "a") as ids:
        buf = []
        for i in range(first, first + count):
            dev = device_id(hashlib.sha256(b"mmload device %d" % i).digest())
            rec = field_bytes(1, dev.encode()) + field_bytes(2, addr) + field_int(3, now_ns)
            buf.append(struct.pack(">I", len(rec)) + rec)
            ids.write(dev + "\n")
            if len(buf) == 1000:
                tls.sendall(b"".join(buf))
                buf = []
        if buf:
            tls.sendall(b"".join(buf))
        tls.unwrap()


def main(argv):
    cmd = argv[1]
    if cmd == "devid":
        print(device_id(hashlib.sha256(cert_der(argv[2])).digest()))
    elif cmd == "mm":
        first, count, d, candidates, port, observed, ttl = argv[2:9]
        gen_mm(int(first), int(count), d, candidates, int(port), observed, int(ttl))
    elif cmd == "std":
        first, count, host, port, cert, key, address, ids = argv[2:10]
        gen_std(int(first), int(count), host, int(port), cert, key, address, ids)
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main(sys.argv)
