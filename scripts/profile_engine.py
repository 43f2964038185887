"""Where Headroom's own time goes, without mitmproxy: the engine's request and accounting work.

    .venv/bin/python scripts/profile_engine.py [--requests 6000] [--profile 25] [--steps]

Runs `scripts/bench_proxy.py`'s workload (8 Claude-Code-shaped sessions whose history grows turn
by turn, a new session id every 16 turns, as bench_proxy plays them) through a `Runtime` in this
process: `Engine.handle_request`, then the accounting `Engine.finish` runs in the background
thread (usage, event record, dashboard figures, stats, event-log line). Prints process CPU per
request for `headroom_compress=off` and the defaults, and with `--profile N` the N functions with
the most own time (cProfile, which inflates small calls), and with `--steps` the cost of each
step per request (each step's functions wrapped with a timer; the accounting then runs right
after each request, so that one thread is timed). Figures are from a warm, quiet process:
inside a real mitmdump the same work costs two to three times as much (its caches are shared
with mitmproxy's own work), so use `bench_proxy.py` for ratios.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
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

from headroom_core import (  # noqa: E402
    engine, figures, options, records, rewrite, session, stats, tenant)
from headroom_core.flow import RequestIn  # noqa: E402
from headroom_runtime import eventlog  # noqa: E402
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


# The steps of one request, in the order they run: (label, owner, attribute, depth). A step
# at depth 1 runs inside the depth-0 step above it; the depth-0 steps do not overlap.
STEPS = [
    ("headers (event loop): index, internal off", engine.Engine, "strip_headers", 0),
    ("request (event loop): all of it", engine.Engine, "handle_request", 0),
    ("flow state", engine.Engine, "_new_state", 1),
    ("tenant (a new header block only)", tenant.Tenants, "identify", 1),
    ("session id (inside the next two)", session, "identify_index", 1),
    ("body parse (no turn memo)", engine.Engine, "_read_body", 1),
    ("turn memo: this turn from the last", engine.Engine, "_turn", 1),
    ("live-zone rewrite, full pass", rewrite.Rewriter, "rewrite", 1),
    ("sticky betas", engine.Engine, "_merge_betas", 1),
    ("forwarded (event loop)", engine.Engine, "mark_forwarded", 0),
    ("response handed over (event loop)", Runtime, "finish_later", 0),
    ("accounting (background): all of it", Runtime, "_finish", 0),
    ("session name", Runtime, "_label", 1),
    ("response usage", engine, "_usage_of", 1),
    ("event record", records, "http_record", 1),
    ("dashboard figures", figures.Figures, "add", 1),
    ("stats", stats.Stats, "add", 1),
    ("event-log line (queued)", eventlog.EventLog, "record", 1),
]


@contextlib.contextmanager
def timed_steps():
    """Wrap each step with a wall-clock timer; yields {label: [ns, calls]}."""
    acc: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    clock = time.perf_counter_ns
    saved = []
    for label, owner, name, _ in STEPS:
        fn = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
        saved.append((owner, name, fn))

        def timed(*a, _fn=fn, _cell=acc[label], **k):
            t = clock()
            try:
                return _fn(*a, **k)
            finally:
                _cell[0] += clock() - t
                _cell[1] += 1
        setattr(owner, name, functools.wraps(fn)(timed))
    try:
        yield acc
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)


def measure(compress: str, n: int, profile: int, steps: bool = False) -> list[float]:
    work = bp.Workload.build(50.0, 8, STAGES)
    sessions = len(work.sessions)
    with tempfile.TemporaryDirectory() as d, contextlib.ExitStack() as stack:
        acc = stack.enter_context(timed_steps()) if steps else None
        rt = Runtime(options.make(dir=d, compress=compress))
        jobs: list = []
        if steps:  # the accounting right after each request, so that one thread is timed
            rt.background.submit = lambda fn, *a, **k: jobs.append((fn, a, k))
        try:
            def one(i: int) -> None:
                s = i % sessions
                stage = (i // sessions) % STAGES
                cycle = i // (sessions * STAGES)  # a new conversation every 16 turns
                body = work.templates[s][stage].body(i)
                # as the addon does: headers read first, with the connection (one per session
                # in bench_proxy), so that a repeated header block is recognised
                hp = rt.engine.strip_headers(
                    (*_fields(f"{work.sessions[s]}-{cycle}"),
                     (b"content-length", str(len(body)).encode())), s)
                req = RequestIn(f"f{i}", "POST", "http", "127.0.0.1", 1, bp.PATH, hp.kept, body,
                                True)
                plan = rt.engine.handle_request(req, hp)
                rt.engine.mark_forwarded(plan.state)
                rt.finish_later(plan.state, status=200, fields=RESPONSE_FIELDS, body=RESPONSE)
                while jobs:  # (a job may queue another)
                    fn, a, k = jobs.pop(0)
                    fn(*a, **k)

            for i in range(500):  # warm up: memo, sticky betas, tenants
                one(i)
            rt.flush()
            if acc is not None:
                for cell in acc.values():  # the warm-up does not count
                    cell[:] = [0, 0]
                t = time.process_time()
                for i in range(500, 500 + n):
                    one(i)
                rt.flush()
                print_steps(compress, acc, n, (time.process_time() - t) / n * 1e6)
                return []
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


def print_steps(compress: str, acc: dict[str, list[int]], n: int, total_us: float) -> None:
    print(f"\n-- steps, headroom_compress={compress}: wall µs per request (calls per request); "
          f"{total_us:.1f} µs CPU per request with the timers on --")
    for label, _, _, depth in STEPS:
        ns, calls = acc.get(label, (0, 0))
        if calls:
            print(f"  {'  ' * depth}{label:{40 - 2 * depth}} {ns / n / 1e3:6.1f}  ({calls / n:.2f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=6000)
    ap.add_argument("--profile", type=int, default=0, metavar="N")
    ap.add_argument("--steps", action="store_true",
                    help="print each step's cost per request instead of the totals")
    args = ap.parse_args()
    print(f"Command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    if args.steps:
        for compress in ("off", "auto"):
            measure(compress, args.requests, 0, steps=True)
        return
    print("Engine work per request, in process (CPU µs, median and range of 5 runs; background "
          "accounting included):")
    for compress, label in (("off", "headroom_compress=off"), ("auto", "defaults")):
        runs = measure(compress, args.requests, args.profile)
        print(f"  {label:24} {statistics.median(runs):6.1f} µs  "
              f"({min(runs):.1f}–{max(runs):.1f})")


if __name__ == "__main__":
    main()
