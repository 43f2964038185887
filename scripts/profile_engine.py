"""Where Headroom's own time goes, without mitmproxy: the engine's request and accounting work.

    .venv/bin/python scripts/profile_engine.py [--requests 6000] [--profile 25]

Runs `scripts/bench_proxy.py`'s workload (8 Claude-Code-shaped sessions whose history grows turn
by turn, a new session id every 16 turns, as bench_proxy plays them) through a `Runtime` in this
process: `Engine.handle_request`, then the accounting `Engine.finish` runs in the background
thread (usage, event record, dashboard figures, stats, event-log line). Prints process CPU per
request for `headroom_compress=off` and the defaults, and with `--profile N` the N functions with
the most own time (cProfile, which inflates small calls). Figures are from a warm, quiet process:
inside a real mitmdump the same work costs two to three times as much (its caches are shared
with mitmproxy's own work), so use `bench_proxy.py` for ratios.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import bench_proxy as bp  # noqa: E402

from headroom_core import options  # noqa: E402
from headroom_core.flow import RequestIn  # noqa: E402
from headroom_runtime.runtime import Runtime  # noqa: E402

RESPONSE = (b'{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text",'
            b'"text":"ok"}],"usage":{"input_tokens":10,"output_tokens":2,'
            b'"cache_read_input_tokens":5}}')
RESPONSE_FIELDS = [(b"content-type", b"application/json")]
STAGES = 16


@functools.lru_cache(maxsize=64)
def _fields(session: str) -> list[tuple[bytes, bytes]]:
    """The request's header fields (as bench_proxy sends them)."""
    head = bp._head("127.0.0.1:1", session, 0, stream=False, scenario=None)
    lines = head.decode("latin-1").split("\r\n")[1:]
    return [tuple(x.encode("latin-1") for x in line.split(": ", 1))  # type: ignore[misc]
            for line in lines if line and not line.lower().startswith("content-length")]


def measure(compress: str, n: int, profile: int) -> list[float]:
    work = bp.Workload.build(50.0, 8, STAGES)
    sessions = len(work.sessions)
    with tempfile.TemporaryDirectory() as d:
        rt = Runtime(options.make(dir=d, compress=compress))
        try:
            def one(i: int) -> None:
                s = i % sessions
                stage = (i // sessions) % STAGES
                cycle = i // (sessions * STAGES)  # a new conversation every 16 turns
                req = RequestIn(f"f{i}", "POST", "http", "127.0.0.1", 1, bp.PATH,
                                _fields(f"{work.sessions[s]}-{cycle}"),
                                work.templates[s][stage].body(i), True)
                plan = rt.engine.handle_request(req)
                rt.engine.mark_forwarded(plan.state)
                rt.finish_later(plan.state, status=200, fields=RESPONSE_FIELDS, body=RESPONSE)

            for i in range(500):  # warm up: memo, sticky betas, tenants
                one(i)
            rt.flush()
            runs = []
            per = n // 5
            for r in range(5):
                t = time.process_time()
                for i in range(500 + r * per, 500 + (r + 1) * per):
                    one(i)
                rt.flush()
                runs.append((time.process_time() - t) / per * 1e6)
            if profile:
                pr = cProfile.Profile()
                pr.enable()
                for i in range(500 + n, 500 + n + per):
                    one(i)
                rt.flush()  # (the background thread's work is not in this profile)
                pr.disable()
                print(f"\n-- cProfile, headroom_compress={compress} (event-loop side) --")
                pstats.Stats(pr).sort_stats("tottime").print_stats(profile)
            return runs
        finally:
            rt.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=6000)
    ap.add_argument("--profile", type=int, default=0, metavar="N")
    args = ap.parse_args()
    print(f"Command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print("Engine work per request, in process (CPU µs, median and range of 5 runs; background "
          "accounting included):")
    for compress, label in (("off", "headroom_compress=off"), ("auto", "defaults")):
        runs = measure(compress, args.requests, args.profile)
        print(f"  {label:24} {statistics.median(runs):6.1f} µs  "
              f"({min(runs):.1f}–{max(runs):.1f})")


if __name__ == "__main__":
    main()
