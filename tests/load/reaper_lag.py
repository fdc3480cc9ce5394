"""Data, event capture and report for tests/load/bench_reaper_lag.sh (run by
it, never alone).

  reaper_lag.py gen DIR NAME COUNT T0_MS SPREAD_MS PORT
      COUNT broadcasting peers (random peer ids) whose presence ends at a
      random time in [T0_MS, T0_MS + SPREAD_MS) (unix ms), written as the
      tracker's ready would leave them: DIR/NAME.resp (Redis protocol for
      redis-cli --pipe: SET mm:presence:<id> "<now ms> 127.0.0.1" PXAT
      <end> and ZADD mm:presence:deadlines <end> <id>, the format of
      services/tracker/trk_presence.c), DIR/NAME.peers.tsv and
      DIR/NAME.broadcasts.tsv (COPY text format; broadcasts.port = PORT
      marks the batch), DIR/NAME.ids ("<id> <end ms>" lines).

  reaper_lag.py stamp SOCKET OUT
      runs `redis-cli -s SOCKET --csv psubscribe __keyevent@0__:expired`
      and writes each line to OUT with its arrival time ("<unix s> <line>")
      until SIGTERM.

  reaper_lag.py report LABEL WINDOW_S IDS EVENTS STAMPS REAPER_LOG
      one scenario's numbers as "key=value" lines for the shell: from IDS
      (gen), EVENTS (psql COPY of the offline events: peer_id, at in unix
      ms, reason, expired_at in unix ms or empty), STAMPS (stamp, of the
      twin Redis that nobody reads: its events are Redis's alone) and the
      reaper's log (when its sweeps ran: the lag of peers whose TTL ended
      during one is shown apart).
"""
import os
import signal
import subprocess
import sys
import time


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def gen(d, name, count, t0, spread, port):
    import random

    rnd = random.SystemRandom()
    now = int(time.time() * 1000)
    value = f"{now} 127.0.0.1"
    with open(os.path.join(d, f"{name}.resp"), "wb") as r, \
            open(os.path.join(d, f"{name}.peers.tsv"), "w") as p, \
            open(os.path.join(d, f"{name}.broadcasts.tsv"), "w") as b, \
            open(os.path.join(d, f"{name}.ids"), "w") as ids:
        zadd = []
        for _ in range(count):
            pid = os.urandom(32).hex()
            end = t0 + int(rnd.random() * spread)
            r.write(resp("SET", f"mm:presence:{pid}", value, "PXAT", end))
            zadd += [end, pid]
            if len(zadd) >= 2000:
                r.write(resp("ZADD", "mm:presence:deadlines", *zadd))
                zadd = []
            p.write(f"{pid}\tb-{pid[:24]}@bench.example\t{pid}\n")
            b.write(f"{pid}\t{port}\t[]\t127.0.0.1\n")
            ids.write(f"{pid} {end}\n")
        if zadd:
            r.write(resp("ZADD", "mm:presence:deadlines", *zadd))


def stamp(sock, out):
    p = subprocess.Popen(["redis-cli", "-s", sock, "--csv", "psubscribe", "__keyevent@0__:expired"],
                         stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)

    def stop(*_):
        p.terminate()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    with open(out, "w") as f:
        for line in p.stdout:
            f.write(f"{time.time():.6f} {line.decode('utf-8', 'replace').rstrip()}\n")


def pct(sorted_values, q):
    """Nearest rank; None for an empty list."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, -(-int(q * 1000 * len(sorted_values)) // 1000) - 1))
    return sorted_values[k]


def sweeps(log_path):
    """[(start ms, end ms)] of the sweeps the reaper logged."""
    import datetime
    import json
    import re

    out = []
    with open(log_path, errors="replace") as f:
        for line in f:
            if "sweep: checked" not in line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            m = re.search(r" in (\d+) ms", rec.get("msg", ""))
            if not m:
                continue
            end = datetime.datetime.fromisoformat(rec["ts"].replace("Z", "+00:00")).timestamp() * 1000
            out.append((end - int(m.group(1)), end))
    return out


def report(label, window, ids_path, events_path, stamps_path, log_path):
    window = float(window)
    busy = sweeps(log_path)
    ends = {}
    with open(ids_path) as f:
        for line in f:
            pid, end = line.split()
            ends[pid] = int(end)
    # the reaper: one offline event per peer, its time vs the TTL's end
    lags, reasons, dup, wrong_exp, null_exp, max_dev = [], {}, 0, 0, 0, 0
    in_sweep, no_sweep = [], []
    seen = set()
    with open(events_path) as f:
        for line in f:
            pid, at, reason, exp = (line.rstrip("\n").split("\t") + [""] * 4)[:4]
            if pid not in ends:
                continue
            if pid in seen:
                dup += 1
                continue
            seen.add(pid)
            lags.append((int(at) - ends[pid]) / 1000.0)
            (in_sweep if any(a <= ends[pid] <= b for a, b in busy) else no_sweep).append(lags[-1])
            reasons[reason] = reasons.get(reason, 0) + 1
            if exp in ("", "\\N"):
                null_exp += 1
            else:
                dev = abs(int(float(exp)) - ends[pid])
                max_dev = max(max_dev, dev)
                wrong_exp += dev > 1
    lags.sort()
    # Redis alone: the twin's events for the same keys
    alone = {}
    with open(stamps_path) as f:
        for line in f:
            t, _, rest = line.partition(" ")
            key = rest.rsplit(",", 1)[-1].strip().strip('"')
            if key.startswith("mm:presence:"):
                pid = key[len("mm:presence:"):]
                if pid in ends and pid not in alone:
                    alone[pid] = float(t)
    rlags = sorted((alone[pid] - ends[pid] / 1000.0) for pid in alone)
    within = [x for x in rlags if x <= window]
    n = len(ends)

    def fmt(v):
        return "-" if v is None else f"{v:.3f}"

    def rfmt(q):
        # a peer whose event never came (within the window) ranks last
        k = max(0, -(-int(q * 1000 * n) // 1000) - 1)
        return f"{within[k]:.3f}" if k < len(within) else f">{window:.0f}"

    out = {
        "label": label, "expired": n, "reaped": len(lags), "missing": n - len(lags), "dup": dup,
        "wrong_expired_at": wrong_exp, "null_expired_at": null_exp, "max_expired_at_dev_ms": max_dev,
        "p50": fmt(pct(lags, 0.50)), "p99": fmt(pct(lags, 0.99)), "max": fmt(lags[-1] if lags else None),
        "over2": sum(1 for x in lags if x > 2.0), "over1": sum(1 for x in lags if x > 1.0),
        "in_sweep": len(in_sweep), "in_sweep_p99": fmt(pct(sorted(in_sweep), 0.99)),
        "in_sweep_max": fmt(max(in_sweep) if in_sweep else None),
        "no_sweep": len(no_sweep), "no_sweep_p99": fmt(pct(sorted(no_sweep), 0.99)),
        "no_sweep_max": fmt(max(no_sweep) if no_sweep else None),
        "reasons": ",".join(f"{k}={v}" for k, v in sorted(reasons.items())) or "-",
        "redis_within": len(within), "redis_p50": rfmt(0.50), "redis_p99": rfmt(0.99),
        "redis_max": f"{within[-1]:.3f}" if len(within) == n and within else f">{window:.0f}",
        "redis_seen": len(rlags),
    }
    for k, v in out.items():
        print(f"{k}={v}")


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "gen" and len(argv) == 8:
        gen(argv[2], argv[3], int(argv[4]), int(argv[5]), int(argv[6]), int(argv[7]))
    elif cmd == "stamp" and len(argv) == 4:
        stamp(argv[2], argv[3])
    elif cmd == "report" and len(argv) == 8:
        report(*argv[2:8])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
