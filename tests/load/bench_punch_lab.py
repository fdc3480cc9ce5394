#!/usr/bin/env python3
"""Benchmark: `mm punch` through real NATs, in the lab of tests/e2e/lab.py
(network namespaces: c1 behind r1 and c2 behind r2, both endpoint-
independent MASQUERADE with a home router's firewall; the real suite in
srv, as tests/e2e/labstack.py starts it).

Cases, MMLOAD_PUNCH_RUNS (--runs, 50) punches each, one after another,
c1 -> c2 (c2 runs `mm up --allow c1`, c1 runs `mm up` too):
  1. EIM <-> EIM, no loss;
  2. EIM <-> EIM with --loss (30) % of the packets r1 forwards dropped,
     both directions (nft `numgen random mod 100 < 30 drop`): the
     signaling's HTTPS suffers as much as the punch packets.
Per case: successes (exit 0 and "ok": true), the failures' error codes,
p50/p95 of `time_ms` (the agent's own figure: from the command's start
to the first authenticated reply) and of the wall time of the whole `mm
punch` process, plus the load average. Percentiles are of successful
punches only.

Prints "skipped: REASON" and exits 0 where the lab cannot be built (not
root, namespaces refused). Exits 1 when the suite does not start, a
daemon dies, or a punch of the lossless case fails.

Run through tests/load/bench_punch_lab.sh (tests/load/run-all.sh punch),
or directly as root: MM_BUILD_DIR=$PWD/build /usr/bin/python3 tests/load/bench_punch_lab.py
"""

import argparse
import collections
import math
import os
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

import lab as labmod  # noqa: E402
import labstack  # noqa: E402  (puts tests/integration on sys.path)
import mm  # noqa: E402
import pytest  # noqa: E402  (mm.binary() reports a missing binary with pytest.fail)


def log(text):
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def percentile(values, p):
    """Nearest-rank percentile of `values` (None when empty)."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def fmt(v):
    return "-" if v is None else f"{v:.0f}"


class Case:
    def __init__(self, name):
        self.name = name
        self.ok = 0
        self.runs = 0
        self.time_ms = []
        self.wall_ms = []
        self.failures = collections.Counter()
        self.examples = {}  # failure code -> one output
        self.drops = None
        self.steps = collections.defaultdict(list)  # step -> its end (ms from the start) in each success
        self.attempts = collections.Counter()

    def steps_row(self):
        """Where the time went: the median end of each step of the attempt that won."""
        order = ["stun", "offer", "answer", "probe_start", "path"]
        return (f"  {self.name:<28} " + "  ".join(f"{k} {fmt(percentile(self.steps[k], 50))}" for k in order if self.steps[k])
                + "   attempts " + ", ".join(f"{n}: {c}" for n, c in sorted(self.attempts.items())))

    def row(self):
        fails = ", ".join(f"{c} x{n}" for c, n in self.failures.most_common()) or "-"
        return (f"  {self.name:<28} {self.ok:>3}/{self.runs:<3} {100 * self.ok / max(self.runs, 1):5.1f}%   "
                f"{fmt(percentile(self.time_ms, 50)):>6} {fmt(percentile(self.time_ms, 95)):>6}   "
                f"{fmt(percentile(self.wall_ms, 50)):>6} {fmt(percentile(self.wall_ms, 95)):>6}   {fails}")


def run_case(case, agent, target, runs, timeout, daemons):
    for i in range(runs):
        t0 = time.monotonic()
        try:
            r = agent.mm("punch", target.email, timeout=timeout)
        except Exception as e:  # noqa: BLE001 - a hung punch is a failure of the run, not of the benchmark
            code, r = "timeout", e
        else:
            code = None if (r.rc == 0 and r.json and r.json.get("ok") is True) else (r.code or f"exit {r.rc}")
        wall = (time.monotonic() - t0) * 1000
        case.runs += 1
        if code is None:
            case.ok += 1
            case.wall_ms.append(wall)
            if isinstance(r.json.get("time_ms"), (int, float)):
                case.time_ms.append(r.json["time_ms"])
            for k, v in (r.json.get("steps_ms") or {}).items():
                case.steps[k].append(v)
            case.attempts[r.json.get("attempts")] += 1
        else:
            case.failures[code] += 1
            case.examples.setdefault(code, repr(r)[:600])
        dead = [d.name for d in daemons if not d.alive()]
        if dead:
            raise RuntimeError(f"{', '.join(dead)} died during {case.name}, run {i + 1}")
        if (i + 1) % 10 == 0:
            log(f"{case.name}: {i + 1}/{runs} ({case.ok} ok)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=int(os.environ.get("MMLOAD_PUNCH_RUNS", 50)))
    ap.add_argument("--loss", type=int, default=int(os.environ.get("MMLOAD_PUNCH_LOSS", 30)))
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds before one mm punch counts as hung")
    ap.add_argument("--keep", action="store_true", default=os.environ.get("MMLOAD_KEEP") == "1")
    args = ap.parse_args()

    lab = labmod.Lab(log=log)
    try:
        lab.build()
    except labmod.LabUnavailable as e:
        lab.close()
        print(f"bench_punch_lab: skipped: {e}")
        return 0
    run_dir = mm.short_tmpdir("mmpl")
    cases = [Case("EIM <-> EIM, no loss"), Case(f"EIM <-> EIM, {args.loss}% loss on r1")]
    status = 0
    try:
        log(f"lab {lab.prefix} built in {lab.build_seconds:.2f} s; starting the suite in srv")
        with labstack.LabStack(lab, run_dir) as st:
            a1, a2 = st.agent("bench1", "c1"), st.agent("bench2", "c2")
            d1 = st.up(a1, allow=[a2.email])
            d2 = st.up(a2, allow=[a1.email])
            try:
                log(f"{cases[0].name}: {args.runs} punches c1 -> c2")
                run_case(cases[0], a1, a2, args.runs, args.timeout, (d1, d2))
                if cases[0].ok < args.runs:
                    status = 1  # judged below; set now so that the run directory (logs) is kept
                log(f"{cases[1].name}: {args.runs} punches c1 -> c2")
                with lab.loss("r1", args.loss):
                    run_case(cases[1], a1, a2, args.runs, args.timeout, (d1, d2))
                    cases[1].drops = lab.loss_drops("r1")
            finally:
                for d in (d2, d1):
                    try:
                        d.stop()
                    except AssertionError as e:
                        log(str(e))
                        status = 1
    except (Exception, pytest.fail.Exception) as e:  # noqa: BLE001 - report, clean up, exit 1
        log(f"FAIL: {e}")
        status = 1
    finally:
        lab.close()
        left = lab.leftovers()
        if left:
            log(f"FAIL: namespaces left behind: {left}")
            status = 1
        if args.keep or status:
            log(f"kept {run_dir}")
        else:
            mm.cleanup_dir(run_dir)

    print()
    print(f"mm punch through the NAT lab: c1 (10.0.1.2 behind r1) -> c2 (10.0.2.2 behind r2), both NATs "
          f"endpoint-independent, {args.runs} punches per case, one at a time")
    print(f"  {'case':<28} {'ok':>7} {'rate':>6}   {'time_ms p50/p95':>13}   {'wall ms p50/p95':>13}   failures")
    for c in cases:
        print(c.row())
    print("  median end of each step of the winning attempt (ms from the command's start):")
    for c in cases:
        print(c.steps_row())
    if cases[1].drops is not None:
        print(f"  r1's loss rule dropped {cases[1].drops} packets during case 2")
    for c in cases:
        for code, example in c.examples.items():
            print(f"  {c.name}, first {code}: {example}")
    print("  time_ms: the agent's own (command start -> first authenticated reply); wall: the whole mm process")
    print(f"  load average at the end: {' '.join(open('/proc/loadavg').read().split()[:3])}")
    if cases[0].ok < args.runs:
        print(f"  FAIL: {args.runs - cases[0].ok} of {args.runs} punches without loss did not succeed")
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
