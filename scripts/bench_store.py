"""Response-store benchmark: serving a hit vs the miss path, through a real mitmdump, one run.

    .venv/bin/python scripts/bench_store.py              # 200 requests per case
    .venv/bin/python scripts/bench_store.py --requests 50 --markdown

A Headroom mitmdump in `headroom_store_mode=cache` runs in reverse mode in front of the local fake
upstream (tests/e2e/fake_upstream.py). For each case every request is first sent once with a
unique body (a miss: forwarded, answered by the fake, stored) and then again (a hit: answered from
the store, the upstream never sees it). Latency is request start -> last response byte at the
client, one request at a time on a keep-alive connection. Cases: a ~100 KB JSON answer and a ~1 MB
SSE stream (recorded chunks replayed as fast as possible). The fake upstream answers on loopback
with no model latency, so the miss column is the proxy + store-write path, not a real API's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.e2e.fake_upstream import FakeUpstream  # noqa: E402
from tests.e2e.proxy import Mitmdump  # noqa: E402

# Reference: the cheapest possible local answer in mitmproxy (a two-line addon that answers every
# request with the same bytes), measured the same way. hit - floor = what Headroom's lookup costs.
FLOOR_ADDON = """
from mitmproxy import http
BODY = open({path!r}, "rb").read()
class Floor:
    def request(self, flow):
        flow.response = http.Response.make(200, BODY, {{"content-type": "application/json"}})
addons = [Floor()]
"""

CASES = {
    "100 KB JSON": ({"stream": False}, "pad:100000"),
    "1 MB SSE stream": ({"stream": True}, "events:6800,batch:20"),
}


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def timed(client: httpx.Client, url: str, body: bytes, scenario: str) -> tuple[float, int, str]:
    t = time.perf_counter()
    with client.stream("POST", url, content=body, headers={
            "content-type": "application/json", "x-api-key": "sk-ant-api03-bench",
            "anthropic-version": "2023-06-01", "x-test-scenario": scenario}) as r:
        n = sum(len(c) for c in r.iter_raw())
        state = r.headers.get("x-headroom-cache", "-")
    return (time.perf_counter() - t) * 1000, n, state


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    up = FakeUpstream()
    rows = []
    with Mitmdump(mode=f"reverse:{up.url}", options={"headroom_store_mode": "cache",
                                                     "headroom_compress": "off"}) as p, \
            httpx.Client(timeout=60) as client:
        url = p.url + "/v1/messages"
        for name, (extra, scenario) in CASES.items():
            miss, hit, size = [], [], 0
            for i in range(args.requests):
                body = json.dumps({"model": "claude-bench", "max_tokens": 10,
                                   "messages": [{"role": "user", "content": f"question {i}"}],
                                   **extra}).encode()
                ms, n, state = timed(client, url, body, scenario)
                if state != "miss":
                    raise SystemExit(f"expected a miss, got {state!r}")
                miss.append(ms)
                ms, n2, state = timed(client, url, body, scenario)
                if state != "hit" or n2 != n:
                    raise SystemExit(f"expected an identical hit, got {state!r} ({n2} vs {n} B)")
                hit.append(ms)
                size = n
                up.clear()
            rows.append((name, size, miss, hit))
    print(f"Headroom response store, mitmdump reverse proxy on loopback, {os.cpu_count()} CPUs, "
          f"{args.requests} requests per case, one at a time")
    print(f"Command: {' '.join(sys.orig_argv)}")
    head = ["case", "bytes", "miss p50 ms", "miss p95 ms", "hit p50 ms", "hit p95 ms",
            "hit/miss p50"]
    lines = [[name, f"{size:,}", f"{pct(m, 50):.2f}", f"{pct(m, 95):.2f}", f"{pct(h, 50):.2f}",
              f"{pct(h, 95):.2f}", f"{statistics.median(h) / statistics.median(m):.2f}x"]
             for name, size, m, h in rows]
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join("---" for _ in head) + "|")
        for line in lines:
            print("| " + " | ".join(line) + " |")
    else:
        widths = [max(len(r[i]) for r in [head, *lines]) for i in range(len(head))]
        for r in [head, *lines]:
            print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    # the floor, for the 100 KB case: same client, same request, a trivial local answer
    work = Path(tempfile.mkdtemp(prefix="headroom-floor-"))
    body_path = work / "floor-body.json"
    body_path.write_bytes(b"x" * rows[0][1])
    addon = work / "floor_addon.py"
    addon.write_text(FLOOR_ADDON.format(path=str(body_path)))
    with Mitmdump(mode=f"reverse:{up.url}", headroom=False, extra_args=["-s", str(addon)]) as f, \
            httpx.Client(timeout=60) as client:
        floor = [timed(client, f.url + "/v1/messages", b"{}", "")[0]
                 for _ in range(args.requests)]
    print(f"Floor (mitmdump answering 100 KB locally with a trivial addon): p50 "
          f"{pct(floor, 50):.2f} ms, p95 {pct(floor, 95):.2f} ms; Headroom's 100 KB hit adds "
          f"{pct(rows[0][3], 50) - pct(floor, 50):+.2f} ms at p50.")
    up.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
