#!/usr/bin/python3
"""Offer -> inbox delivery latency with many waiting long-polls (the client
of tests/load/bench_signal_latency.sh; Python standard library only).

Opens one connection per target identity and keeps a long-poll
(GET /inbox?wait=W) waiting on each; once all are waiting (mm-signal's
mm_signal_long_polls gauge says so), sends offers at a steady rate, each to
a target whose poll is waiting and has no offer outstanding, and measures,
per offer, the time from just before the offer request is written to the
moment the target's poll answer has been read. A target re-polls at once
after each answer, so the number of waiting polls stays at the target.

Two ways in:
  --direct HOST:PORT   mm-signal's internal listener, with the X-MM-* headers
                       the gateway would add (mm-signal trusts them there);
                       --poll-direct HOST:PORT sends the long-polls to
                       another copy, so every delivery crosses copies
  --gateway HOST:PORT  the public TLS listener, each target with its own
                       client certificate (--pki DIR: NAME.crt/NAME.key and
                       the CA in DIR/server.crt), HTTP/1.1

Prints one JSON line with the numbers.
"""

import argparse
import asyncio
import json
import random
import ssl
import statistics
import sys
import time
import urllib.request


class Conn:
    """One HTTP/1.1 keep-alive connection."""

    def __init__(self, host, port, ssl_ctx=None, headers=None):
        self.host, self.port, self.ssl_ctx = host, port, ssl_ctx
        self.headers = headers or {}
        self.reader = self.writer = None

    async def open(self):
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, ssl=self.ssl_ctx, server_hostname="localhost" if self.ssl_ctx else None)

    def send(self, method, path, body=None):
        data = b"" if body is None else json.dumps(body).encode()
        lines = [f"{method} {path} HTTP/1.1", "Host: localhost"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + data)

    async def response(self):
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("connection closed")
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            k, _, v = line.decode("latin-1").partition(":")
            if k.strip().lower() == "content-length":
                length = int(v.strip())
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    async def request(self, method, path, body=None):
        self.send(method, path, body)
        return await self.response()


def percentile(values, p):
    s = sorted(values)
    if not s:
        return None
    i = max(0, min(len(s) - 1, int(len(s) * p / 100.0 + 0.999999) - 1))
    return s[i]


def long_polls_waiting(metrics_url):
    with urllib.request.urlopen(metrics_url, timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("mm_signal_long_polls "):
                return int(float(line.split()[1]))
    return 0


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--direct")
    ap.add_argument("--poll-direct", help="direct mode: where the long-polls go (default: --direct)")
    ap.add_argument("--gateway")
    ap.add_argument("--pki", help="gateway mode: DIR with server.crt and t<i>.crt/.key, offerer.crt/.key")
    ap.add_argument("--targets", required=True, help="file: one target peer_id a line (line i is t<i>)")
    ap.add_argument("--offerer", help="direct mode: the offerer's peer_id")
    ap.add_argument("--metrics", action="append", required=True, help="mm-signal /metrics URL (one per copy)")
    ap.add_argument("--offers", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=100.0, help="offers per second")
    ap.add_argument("--wait", type=int, default=30)
    ap.add_argument("--offer-conns", type=int, default=8)
    args = ap.parse_args()

    targets = [ln.strip() for ln in open(args.targets) if ln.strip()]
    n = len(targets)
    mode = "direct" if args.direct else "gateway"
    host, port = (args.direct or args.gateway).rsplit(":", 1)
    port = int(port)

    phost, pport = (args.poll_direct or args.direct or args.gateway).rsplit(":", 1)
    pport = int(pport)

    def target_conn(i):
        if mode == "direct":
            return Conn(phost, pport, headers={"X-MM-Peer-Id": targets[i], "X-MM-Client-Addr": "127.0.0.1:1"})
        ctx = ssl.create_default_context(cafile=f"{args.pki}/server.crt")
        ctx.load_cert_chain(f"{args.pki}/t{i}.crt", f"{args.pki}/t{i}.key")
        ctx.set_alpn_protocols(["http/1.1"])
        return Conn(host, port, ssl_ctx=ctx)

    def offerer_conn():
        if mode == "direct":
            return Conn(host, port, headers={"X-MM-Peer-Id": args.offerer, "X-MM-Client-Addr": "127.0.0.1:1"})
        ctx = ssl.create_default_context(cafile=f"{args.pki}/server.crt")
        ctx.load_cert_chain(f"{args.pki}/offerer.crt", f"{args.pki}/offerer.key")
        ctx.set_alpn_protocols(["http/1.1"])
        return Conn(host, port, ssl_ctx=ctx)

    prefix = "" if mode == "direct" else "/api/signal"
    sent_at = {}  # target index -> monotonic time the offer was sent
    waiting = set()  # target indexes whose poll is waiting
    latencies, errors, empty_polls = [], [], [0]
    delivered = asyncio.Event()
    done = [False]

    async def poller(i):
        c = target_conn(i)
        try:
            await c.open()
        except OSError as e:
            errors.append(f"connect t{i}: {e}")
            return
        while not done[0]:
            c.send("GET", f"{prefix}/inbox?wait={args.wait}")
            waiting.add(i)
            try:
                status, body = await c.response()
            except (OSError, ConnectionError, asyncio.IncompleteReadError) as e:
                waiting.discard(i)
                errors.append(f"poll t{i}: {e}")
                return
            now = time.monotonic()
            waiting.discard(i)
            if status != 200:
                errors.append(f"poll t{i}: {status} {body[:100]!r}")
                await asyncio.sleep(0.5)
                continue
            offers = json.loads(body)["offers"]
            if not offers:
                empty_polls[0] += 1
                continue
            t = sent_at.pop(i, None)
            if t is not None:
                latencies.append((now - t) * 1000.0)
                delivered.set()
        c.writer.close()

    # 1. every target long-polls
    t0 = time.monotonic()
    tasks = [asyncio.create_task(poller(i)) for i in range(n)]
    deadline = time.monotonic() + 120
    while True:
        await asyncio.sleep(0.25)
        server_side = sum(long_polls_waiting(u) for u in args.metrics)
        if server_side >= n and len(waiting) >= n:
            break
        if time.monotonic() > deadline or len(errors) > n // 10:
            print(json.dumps({"error": "the long-polls did not all start", "waiting_server": server_side,
                              "waiting_client": len(waiting), "errors": errors[:5]}))
            return 1
    setup_s = time.monotonic() - t0
    waiting_at_start = sum(long_polls_waiting(u) for u in args.metrics)

    # 2. offers at a steady rate, each to a waiting target with none outstanding
    conns = [offerer_conn() for _ in range(args.offer_conns)]
    for c in conns:
        await c.open()
    free = asyncio.Queue()
    for c in conns:
        free.put_nowait(c)
    offer_ms, offer_bad = [], []

    async def one_offer(i):
        c = await free.get()
        body = {"to": targets[i], "candidates": [{"ip": "192.168.1.2", "port": 40000, "type": "host"}]}
        t = time.monotonic()
        sent_at[i] = t
        try:
            status, rbody = await c.request("POST", f"{prefix}/offer", body)
        except (OSError, ConnectionError, asyncio.IncompleteReadError) as e:
            offer_bad.append(str(e))
            sent_at.pop(i, None)
            return
        finally:
            free.put_nowait(c)
        offer_ms.append((time.monotonic() - t) * 1000.0)
        if status != 201:
            sent_at.pop(i, None)
            offer_bad.append(f"{status} {rbody[:120]!r}")

    interval = 1.0 / args.rate
    start = time.monotonic()
    offer_tasks = []
    for k in range(args.offers):
        next_at = start + k * interval
        delay = next_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        candidates = [i for i in random.sample(range(n), min(n, 64)) if i in waiting and i not in sent_at]
        if not candidates:
            candidates = [i for i in waiting if i not in sent_at]
        if not candidates:
            await asyncio.sleep(0.01)
            continue
        offer_tasks.append(asyncio.create_task(one_offer(candidates[0])))
    await asyncio.gather(*offer_tasks)
    settle = time.monotonic() + 5
    while sent_at and time.monotonic() < settle:
        await asyncio.sleep(0.05)
    offers_s = time.monotonic() - start
    waiting_at_end = sum(long_polls_waiting(u) for u in args.metrics)
    done[0] = True
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    out = {
        "mode": mode + (" (crossed: polls and offers on different copies)" if args.poll_direct else ""),
        "long_polls": n,
        "waiting_at_start": waiting_at_start,
        "waiting_at_end": waiting_at_end,
        "setup_s": round(setup_s, 1),
        "offers_sent": len(offer_ms) + len(offer_bad),
        "offers_ok": len(offer_ms),
        "offers_failed": len(offer_bad),
        "offer_errors": offer_bad[:3],
        "delivered": len(latencies),
        "undelivered": len(sent_at),
        "rate": args.rate,
        "duration_s": round(offers_s, 1),
        "delivery_ms": {
            "p50": round(percentile(latencies, 50), 2) if latencies else None,
            "p90": round(percentile(latencies, 90), 2) if latencies else None,
            "p99": round(percentile(latencies, 99), 2) if latencies else None,
            "max": round(max(latencies), 2) if latencies else None,
            "mean": round(statistics.mean(latencies), 2) if latencies else None,
        },
        "offer_request_ms": {
            "p50": round(percentile(offer_ms, 50), 2) if offer_ms else None,
            "p99": round(percentile(offer_ms, 99), 2) if offer_ms else None,
        },
        "poll_errors": errors[:3],
        "poll_error_count": len(errors),
        "empty_polls": empty_polls[0],
    }
    print(json.dumps(out))
    return 0 if latencies and not offer_bad and not sent_at and not errors else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
