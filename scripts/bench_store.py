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

The same is measured with a cassette (`headroom_cassette`) instead of diskcache (the two proxies
take turns in blocks of 10 requests, so a drift in machine load hits both alike); then a fresh
mitmdump in `replay` mode opens the cassette (the first `--cassette-entries` recordings per case:
a cassette is held in memory once read) from disk and serves those recordings again, round robin,
`--requests` times: the CI path.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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


def measure(targets: dict[str, str], client: httpx.Client, n: int, up: FakeUpstream,
            block: int = 10, settle: float = 0.5
            ) -> dict[str, list[tuple[str, int, list[float], list[float], list[bytes]]]]:
    """Per target and case: (name, bytes, miss ms, hit ms, request bodies). The targets take
    turns in blocks of `block` requests (a drift in machine load hits them alike), with a pause
    between blocks so one proxy's background writes never land during another's requests; within
    a block, a proxy's own writes compete with its next requests, as in real use."""
    out: dict[str, list] = {t: [] for t in targets}
    for name, (extra, scenario) in CASES.items():
        runs = {t: ([], [], [0], []) for t in targets}
        for first in range(0, n, block):
            for tag, url in targets.items():
                time.sleep(settle)
                miss, hit, size, bodies = runs[tag]
                for i in range(first, min(n, first + block)):
                    body = json.dumps({"model": "claude-bench", "max_tokens": 10, "messages": [
                        {"role": "user", "content": f"{tag} question {i}"}], **extra}).encode()
                    ms, size[0], state = timed(client, url, body, scenario)
                    if state != "miss":
                        raise SystemExit(f"{tag}: expected a miss, got {state!r}")
                    miss.append(ms)
                    ms, n2, state = timed(client, url, body, scenario)
                    if state != "hit" or n2 != size[0]:
                        raise SystemExit(f"{tag}: expected an identical hit, got {state!r} "
                                         f"({n2} vs {size[0]} B)")
                    hit.append(ms)
                    bodies.append(body)
                    up.clear()
        for tag, (miss, hit, size, bodies) in runs.items():
            out[tag].append((name, size[0], miss, hit, bodies))
    return out


def table(head: list[str], lines: list[list[str]], markdown: bool) -> None:
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join("---" for _ in head) + "|")
        for line in lines:
            print("| " + " | ".join(line) + " |")
    else:
        widths = [max(len(r[i]) for r in [head, *lines]) for i in range(len(head))]
        for r in [head, *lines]:
            print("  ".join(c.rjust(w) for c, w in zip(r, widths)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--cassette-entries", type=int, default=50,
                    help="recordings per case the replay column reads back (default 50)")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    up = FakeUpstream()
    work = Path(tempfile.mkdtemp(prefix="headroom-bench-store-"))
    cassette = work / "cassette"
    common = {"headroom_compress": "off", "headroom_store_mode": "cache"}
    with Mitmdump(mode=f"reverse:{up.url}", options=common) as disk, \
            Mitmdump(mode=f"reverse:{up.url}", options={
                **common, "headroom_cassette": str(cassette)}) as cas, \
            httpx.Client(timeout=60) as client:
        both = measure({"diskcache": disk.url + "/v1/messages",
                        "cassette": cas.url + "/v1/messages"}, client, args.requests, up)
    rows, crows = both["diskcache"], both["cassette"]
    # the cassette holds --cassette-entries recordings per case: fewer to read at open
    keep = {b for _, _, _, _, bodies in crows for b in bodies[:args.cassette_entries]}
    k = min(args.requests, args.cassette_entries)
    for f in cassette.iterdir():  # keep the first k recordings of each case
        if json.loads(f.read_bytes())["request"]["body"]["messages"][0]["content"] not in {
                json.loads(b)["messages"][0]["content"] for b in keep}:
            f.unlink()
    files = list(cassette.iterdir())
    replay = []
    with Mitmdump(mode=f"reverse:http://127.0.0.1:{up.port}", options={
            "headroom_store_mode": "replay", "headroom_cassette": str(cassette), **common}
            ) as p, httpx.Client(timeout=60) as client:
        for name, size, _, _, bodies in crows:
            scenario = CASES[name][1]
            ms = []
            for i in range(args.requests):
                t, n, state = timed(client, p.url + "/v1/messages", bodies[i % k], scenario)
                if state != "hit" or n != size:
                    raise SystemExit(f"cassette replay: expected a hit, got {state!r}")
                ms.append(t)
            replay.append(ms)
    if up.received:
        raise SystemExit("the replay reached the upstream")
    print(f"Headroom response store, mitmdump reverse proxy on loopback, {os.cpu_count()} CPUs, "
          f"{args.requests} requests per case, one at a time ({k} recordings per case replayed)")
    print(f"Command: {' '.join(sys.orig_argv)}")
    head = ["case", "bytes", "diskcache miss p50 / p95", "diskcache hit p50 / p95",
            "cassette miss (recording) p50 / p95", "cassette replay p50 / p95",
            "recording - diskcache miss p50"]
    lines = []
    for (name, size, m, h, _), (_, _, cm, _, _), r in zip(rows, crows, replay):
        lines.append([name, f"{size:,}", f"{pct(m, 50):.2f} / {pct(m, 95):.2f}",
                      f"{pct(h, 50):.2f} / {pct(h, 95):.2f}",
                      f"{pct(cm, 50):.2f} / {pct(cm, 95):.2f}",
                      f"{pct(r, 50):.2f} / {pct(r, 95):.2f}",
                      f"{pct(cm, 50) - pct(m, 50):+.2f}"])
    table(head, lines, args.markdown)
    print(f"Cassette: {len(files)} files, {sum(f.stat().st_size for f in files):,} bytes.")
    # the floor, for the 100 KB case: same client, same request, a trivial local answer
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
    shutil.rmtree(work, ignore_errors=True)
    up.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
