"""Does an open dashboard cost the proxy anything? Passthrough req/s with and without a browser
fetching `/headroom/` every second (bench_proxy.py's workload and load generator).

    .venv/bin/python scripts/bench_dashboard.py            # 2000 requests x 6 rounds, ABBA
    .venv/bin/python scripts/bench_dashboard.py --quick    # smoke run
    .venv/bin/python scripts/bench_dashboard.py --sessions 300 --interval 1

One Headroom mitmdump (`headroom_compress=off`: the passthrough path), the fake upstream in a
child process, `--concurrency` keep-alive connections sending the ~50 KB Claude-Code-shaped
request. Rounds alternate: "closed" (nothing else) and "open" (a client in its own process
fetches the overview page every `--interval` seconds, like a refreshing browser tab; `--scrape`
adds the JSON overview and /metrics to each fetch). Before measuring, `--sessions` extra sessions
are sent so the page has that many rows to render. Prints req/s per round and the medians, the page's fetch time under load,
and the proxy's CPU per request.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "scripts"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import bench_proxy as bp  # noqa: E402

from tests.e2e.proxy import Mitmdump  # noqa: E402


POLL = r"""
import json, select, sys, time, urllib.request
url, interval, paths = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
times, sizes, errors = [], {}, []
while True:  # until the parent closes our stdin
    t0 = time.perf_counter()
    for path in paths:
        try:
            with urllib.request.urlopen(url + path, timeout=30) as r:
                sizes[path] = len(r.read())
        except Exception as e:
            errors.append(f"{path}: {type(e).__name__}")
    times.append(time.perf_counter() - t0)
    if select.select([sys.stdin], [], [], max(0.0, interval - (time.perf_counter() - t0)))[0]:
        break
print(json.dumps({"times": times, "sizes": sizes, "errors": errors}), flush=True)
"""


class Poller:
    """A refreshing dashboard tab (and a scraper) in a process of its own, like a browser: GETs
    every `interval` seconds, so it takes no CPU from the load generator's threads."""

    def __init__(self, port: int, interval: float, paths: list[str]) -> None:
        self.args = [sys.executable, "-c", POLL, f"http://127.0.0.1:{port}", str(interval),
                     *paths]
        self.times: list[float] = []
        self.sizes: dict[str, int] = {}
        self.errors: list[str] = []

    def __enter__(self) -> Poller:
        self.proc = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        return self

    def __exit__(self, *exc) -> None:
        self.proc.stdin.close()
        out = self.proc.stdout.read()
        self.proc.wait(timeout=60)
        if out.strip():
            got = json.loads(out)
            self.times, self.sizes, self.errors = got["times"], got["sizes"], got["errors"]
        else:
            self.errors.append(f"poller exited {self.proc.returncode} without figures")


def extra_sessions(port: int, host: str, n: int) -> None:
    body = bp._dumps({"model": bp.MODEL, "max_tokens": 1, "stream": False,
                      "system": "You are Claude Code.\n<env>\nWorking directory: /home/b/p\n",
                      "messages": [{"role": "user", "content": "ping"}]})
    s = bp.connect(port)
    try:
        for i in range(n):
            head = bp._head(host, f"bench-dashboard-{i:04d}", len(body), stream=False,
                            scenario=None)
            err = bp.check_json(bp.exchange(s, head + body)[1])
            if err:
                raise RuntimeError(f"extra session {i}: {err}")
    finally:
        s.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="requests per round")
    ap.add_argument("--rounds", type=int, default=6, help="rounds (half of them with the page)")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between page fetches")
    ap.add_argument("--sessions", type=int, default=300, help="extra sessions for the page")
    ap.add_argument("--body-kb", type=float, default=50.0)
    ap.add_argument("--scrape", action="store_true",
                    help="also fetch /headroom/api/overview and /headroom/metrics each time")
    ap.add_argument("--quick", action="store_true", help="300 requests x 2 rounds")
    args = ap.parse_args(argv)
    if args.quick:
        args.requests, args.rounds, args.warmup, args.sessions = 300, 2, 40, 50
    args.stream_events = 0
    command = " ".join(shlex.quote(a) for a in getattr(sys, "orig_argv", sys.argv))
    print("Headroom dashboard benchmark:", datetime.datetime.now().isoformat(timespec="seconds"))
    print(f"Command:   {command}")
    for line in bp.machine_info():
        print(line)
    work = bp.Workload.build(args.body_kb, args.concurrency)
    paths = ["/headroom/"] + (["/headroom/api/overview", "/headroom/metrics"]
                              if args.scrape else [])
    rps: dict[str, list[float]] = {"closed": [], "open": []}
    cpu: dict[str, list[float]] = {"closed": [], "open": []}
    fetch: list[float] = []
    sizes: dict[str, int] = {}
    errors: list[str] = []
    with bp.Upstream() as up:
        proxy = Mitmdump(mode=f"reverse:http://127.0.0.1:{up.port}",
                         options={"headroom_compress": "off"})
        proxy.start()
        try:
            target = bp.Target("headroom", "headroom, compress=off", proxy.port, proxy.proc.pid,
                               proxy)
            bench = bp.Bench(args, work, up)
            extra_sessions(proxy.port, target.host, args.sessions)
            bench.load(target, args.warmup, args.concurrency, record=None)
            for r in range(args.rounds):
                variant = ("closed", "open")[r % 2] if r % 4 < 2 else ("open", "closed")[r % 2]
                before_n = len(target.rounds_rps)
                before_cpu = target.cpu_load.proxy
                if variant == "open":
                    with Poller(proxy.port, args.interval, paths) as poller:
                        bench.load(target, args.requests, args.concurrency, record="load")
                    fetch += poller.times
                    sizes.update(poller.sizes)
                    errors += poller.errors
                else:
                    bench.load(target, args.requests, args.concurrency, record="load")
                rps[variant].append(target.rounds_rps[before_n])
                cpu[variant].append((target.cpu_load.proxy - before_cpu) / args.requests * 1000)
                print(f"  round {r + 1}/{args.rounds} {variant:<6} "
                      f"{target.rounds_rps[before_n]:.0f} req/s", file=sys.stderr, flush=True)
            errors += target.errors
        finally:
            proxy.stop()
    med = {k: statistics.median(v) for k, v in rps.items() if v}
    print(f"\nPassthrough load: {args.requests} requests x {args.rounds} rounds, concurrency "
          f"{args.concurrency}, ~{args.body_kb:.0f} KB bodies; page rows: "
          f"{args.sessions + args.concurrency} sessions")
    print(f"{'variant':<40} {'req/s median (range)':>24} {'proxy CPU ms/req':>17}")
    what = "page + API + metrics" if args.scrape else "page"
    for k, label in (("closed", "no dashboard"),
                     ("open", f"{what} fetched every {args.interval:g} s")):
        if rps[k]:
            print(f"{label:<40} {med[k]:>10.0f} ({min(rps[k]):.0f}-{max(rps[k]):.0f})"
                  f"{'':>6} {statistics.median(cpu[k]):>17.3f}")
    if med.get("closed") and med.get("open"):
        print(f"open / closed req/s: {med['open'] / med['closed']:.3f}x")
    if fetch:
        print(f"{what} fetched {len(fetch)} times under load: p50 "
              f"{bp.pct(fetch, 50) * 1000:.1f} ms, max {max(fetch) * 1000:.1f} ms; sizes "
              + ", ".join(f"{p} {n / 1000:.0f} KB" for p, n in sizes.items()))
    for e in errors[:5]:
        print(f"ERROR: {e}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
