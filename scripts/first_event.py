"""Where a streamed response's first event spends its time, Headroom against two references.

    .venv/bin/python scripts/first_event.py [--streams 24] [--events 60000] [--batch 110]

Runs three mitmdumps against the local fake upstream (`mitmdump --set stream_large_bodies=1`;
mitmdump with `scripts/stream_addon.py`, which reads the request and streams the response through
a callable; `mitmdump -s addons/headroom.py` with its defaults) and sends each the same
Claude-Code-shaped streaming requests through `bench_proxy.py`'s own streaming exchange, one at a
time, the targets in turn.
This file is also loaded into each mitmdump as a probe addon (after Headroom), which times every
stream's path: the request's arrival, the hooks, the upstream (which stamps the moment it sent
its response head into `request-id`, on the same monotonic clock), the response head and the
first chunk handed on. Prints quantiles (p10, p25, p50, p75, p90, ms) of each part. With
`stream_large_bodies=1` the request body goes upstream as it arrives, so the upstream may answer
before the request hooks have run: that part can be below 0.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROBE_OUT = "HEADROOM_FIRST_EVENT_OUT"


class Probe:
    """The mitmproxy side (loaded with `-s`): one JSON line per stream to $HEADROOM_FIRST_EVENT_OUT."""

    def request(self, flow) -> None:
        flow.metadata["probe_req"] = time.monotonic()

    def responseheaders(self, flow) -> None:
        m = flow.metadata
        m["probe_rh"] = time.monotonic()
        inner = flow.response.stream
        if not inner:
            return

        def first(chunk: bytes) -> bytes:
            if "probe_in" not in m and chunk:
                m["probe_in"] = time.monotonic()
            return inner(chunk) if callable(inner) else chunk
        flow.response.stream = first

    def response(self, flow) -> None:
        m, r = flow.metadata, flow.request
        if "probe_in" not in m or "probe_req" not in m:
            return
        # mitmproxy's own timestamps are wall-clock: turned into monotonic ones via "now".
        offset = time.monotonic() - time.time()
        sent = flow.response.headers.get("request-id", "")
        up = int(sent[4:]) / 1e9 if sent.startswith("req_") and sent[4:].isdigit() else None
        rec = {
            "request in (first byte to last)": r.timestamp_end - r.timestamp_start,
            "hooks (last request byte to the end of the request hooks)":
                m["probe_req"] - (r.timestamp_end + offset),
            "to the upstream and its answer (hooks to the upstream sending its head)":
                None if up is None else up - m["probe_req"],
            "back from the upstream (its head sent to the responseheaders hooks done)":
                None if up is None else m["probe_rh"] - up,
            "first chunk reaches the stream callable": m["probe_in"] - m["probe_rh"],
            "total (first request byte to the first chunk)":
                m["probe_in"] - (r.timestamp_start + offset),
        }
        with open(os.environ[PROBE_OUT], "a") as f:
            f.write(json.dumps(rec) + "\n")


addons = [Probe()] if PROBE_OUT in os.environ else []


def main() -> None:
    root = Path(__file__).resolve().parent.parent
    sys.path[:0] = [str(root), str(root / "scripts")]
    import bench_proxy as bp
    from tests.e2e.proxy import Mitmdump

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=24, help="streams per target (default 24)")
    ap.add_argument("--events", type=int, default=60000, help="SSE text deltas per stream")
    ap.add_argument("--batch", type=int, default=110, help="events per upstream write")
    args = ap.parse_args()
    print(f"Command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    work = bp.Workload.build(50.0, 8, 16)
    me = str(Path(__file__).resolve())
    with tempfile.TemporaryDirectory() as d, bp.Upstream() as up:
        mode = f"reverse:http://127.0.0.1:{up.port}"
        specs = {
            "mitmdump stream_large_bodies=1": functools.partial(
                Mitmdump, mode=mode, headroom=False,
                extra_args=["--set", "stream_large_bodies=1", "-s", me]),
            "mitmdump, request read, SSE via a callable": functools.partial(
                Mitmdump, mode=mode, headroom=False,
                extra_args=["-s", str(root / "scripts" / "stream_addon.py"), "-s", me]),
            "mitmdump -s headroom.py": functools.partial(
                bp.headroom_proxy, mode, extra_args=["-s", me]),
        }
        proxies, outs = {}, {}
        for i, (label, make) in enumerate(specs.items()):
            outs[label] = Path(d) / f"{i}.jsonl"
            proxies[label] = make(env={PROBE_OUT: str(outs[label])})
        # bench_proxy's own streaming exchange: a priming request, then the stream, checked
        bench = bp.Bench(argparse.Namespace(stream_events=args.events), work, up)
        targets = {}
        try:
            for label, p in proxies.items():
                p.start()
                targets[label] = bp.Target(label, label, p.port, p.proc.pid, p)
            for i in range(args.streams + 3):  # the first 3 rounds warm up
                for t in targets.values():
                    bench.stream(t, i, record=i >= 3, batch=args.batch)
        finally:
            for p in proxies.values():
                p.stop()
        for t in targets.values():
            if t.errors:
                sys.exit(f"{t.label}: {len(t.errors)} failed streams, e.g. {t.errors[0]}")
        print(f"{args.streams} streams per target of {args.events} events, {args.batch} per "
              "upstream write; ms, p10 / p25 / p50 / p75 / p90")
        for label in specs:
            recs = [json.loads(line) for line in outs[label].read_text().splitlines()][3:]
            print(f"\n{label}: first event at the client, p50 "
                  f"{statistics.median(targets[label].first_event) * 1e3:.2f} ms")
            for part in (recs[0] if recs else {}):
                v = sorted(r[part] * 1e3 for r in recs if r[part] is not None)
                if v:
                    qs = " / ".join(f"{v[int(q * (len(v) - 1))]:.2f}"
                                    for q in (0.1, 0.25, 0.5, 0.75, 0.9))
                    print(f"  {part:76} {qs}")


if __name__ == "__main__":
    main()
