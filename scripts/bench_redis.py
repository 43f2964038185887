"""Headroom on Redis (`headroom_redis`) against the default diskcache, through real mitmdump.

    .venv/bin/python scripts/bench_redis.py               # full run (a few minutes)
    .venv/bin/python scripts/bench_redis.py --quick       # smoke run
    .venv/bin/python scripts/bench_redis.py --markdown    # Markdown tables for the README

Every figure is measured in the run; nothing is hard-coded. A `redis-server` on a free loopback
port (tests/redis_server.py: no persistence), the fake upstream in a child process
(scripts/bench_proxy.py --serve-upstream), mitmdump instances in reverse mode
(tests.e2e.proxy.Mitmdump), the load generator in this process. Parts:

1. Store hit latency, one request at a time on a keep-alive connection (as scripts/bench_store.py:
   a small request answered with ~100 KB of JSON, `headroom_store_mode=cache`, compression off):
   diskcache vs Redis, p50 / p95; plus the store lookup alone, in process (`get` of the same
   entries).
2. The offload rule's cost: with Redis, `Engine.handle_request` runs in a worker thread
   (`asyncio.to_thread`). The same store hit handled inline and through the hand-off, in process.
3. Throughput: ~50 KB Claude-Code-shaped requests (scripts/bench_proxy.py's workload; Headroom
   defaults: API-key traffic, so sticky betas, live-zone scan and ledger lookups on every
   request), `--concurrency` keep-alive connections: one instance on diskcache, one on Redis,
   and two instances sharing Redis (connections split between them).
4. The session simulator (scripts/simulate_session.py: a Claude Code session against a fake
   upstream that simulates prompt caching) through one instance on diskcache and through two
   instances sharing Redis, turn by turn alternating: Headroom-caused busts and the bill.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
for p in (ROOT / "scripts", ROOT / "tests" / "data" / "tool_outputs"):
    if str(p) not in sys.path:
        sys.path.append(str(p))

import bench_proxy as bp  # noqa: E402
import simulate_session as ss  # noqa: E402
from caching_upstream import CachingUpstream  # noqa: E402

from headroom_core import options  # noqa: E402
from headroom_core.flow import RequestIn  # noqa: E402
from headroom_runtime.runtime import Runtime  # noqa: E402
from tests.e2e.proxy import Mitmdump  # noqa: E402
from tests.redis_server import RedisServer, binary  # noqa: E402

QUICK = dict(hits=100, inproc=300, requests=300, runs=1, warmup=40, turns=12)
FULL = dict(hits=400, inproc=2000, requests=2000, runs=3, warmup=200, turns=24)
CCR = "headroom.bench:8080"  # one marker host for every instance, as behind a load balancer


def pct(xs: list[float], q: float) -> float:
    return bp.pct(xs, q)


def table(head: list[str], rows: list[list[str]], md: bool) -> str:
    return bp.table(head, rows, md)


# -- part 1: store hit latency ------------------------------------------------------------------


def hit_request(port: int, i: int) -> bytes:
    body = json.dumps({"model": "claude-bench", "max_tokens": 10,
                       "messages": [{"role": "user", "content": f"question {i}"}]}).encode()
    head = (f"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
            "content-type: application/json\r\nx-api-key: sk-ant-api03-bench\r\n"
            "anthropic-version: 2023-06-01\r\nx-test-scenario: pad:100000\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode()
    return head + body


def store_hits(p: Mitmdump, n: int) -> tuple[list[float], int]:
    """Record `n` answers (misses), wait for the writes, then time one hit of each."""
    s = bp.connect(p.port)
    try:
        for i in range(n):
            resp = bp.exchange(s, hit_request(p.port, i))[1]
            assert resp.headers.get("x-headroom-cache") == "miss", resp.headers
        p.events(wait_for=n, timeout=60, settle=0.3)
        lat, size = [], 0
        for i in range(n):
            t0, resp = bp.exchange(s, hit_request(p.port, i))
            assert resp.headers.get("x-headroom-cache") == "hit", resp.headers
            lat.append(resp.t_end - t0)
            size = len(resp.body)
        return lat, size
    finally:
        s.close()


def inproc_lookups(redis_url: str, n: int) -> dict[str, list[float]]:
    """`Store.get` of a ~100 KB entry, disk vs Redis, in this process (what a hit reads)."""
    out: dict[str, list[float]] = {}
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}]}).encode()
    resp = json.dumps({"type": "message", "content": [{"type": "text", "text": "y" * 100000}],
                       "usage": {"input_tokens": 1, "output_tokens": 1}}).encode()
    fields = [(b"x-api-key", b"sk-ant-api03-bench"), (b"content-type", b"application/json")]
    for name, extra in (("diskcache", {}), ("redis", {"redis": redis_url})):
        with tempfile.TemporaryDirectory() as d:
            rt = Runtime(options.make(dir=d, store_mode="cache", compress="off", events="off",
                                      **extra))
            req = RequestIn("f", "POST", "https", "api.anthropic.com", 443, "/v1/messages",
                            fields, body, False)
            plan = rt.engine.handle_request(req)
            rt.engine.mark_forwarded(plan.state)
            rt.finish_later(plan.state, status=200, fields=[(b"content-type",
                                                             b"application/json")], body=resp)
            rt.flush()
            key, tenant = plan.state.store_key, plan.state.tenant
            store = rt.state.store
            lat = []
            for _ in range(n):
                t = time.perf_counter()
                assert store.get(key, with_request=False, tenant=tenant) is not None
                lat.append(time.perf_counter() - t)
            out[name] = lat
            # part 2 reuses this runtime: the same hit, inline vs through a worker thread
            if name == "redis":
                out["inline"], out["offloaded"] = offload_cost(rt, req, n)
            rt.close()
    return out


def offload_cost(rt: Runtime, req: RequestIn, n: int) -> tuple[list[float], list[float]]:
    assert rt.offload_request(req)

    async def run() -> tuple[list[float], list[float]]:
        inline, off = [], []
        for _ in range(n):
            t = time.perf_counter()
            plan = rt.engine.handle_request(req)
            inline.append(time.perf_counter() - t)
            assert plan.response is not None
            t = time.perf_counter()
            plan = await asyncio.to_thread(rt.in_worker, rt.engine.handle_request, req)
            off.append(time.perf_counter() - t)
            assert plan.response is not None
        return inline, off

    return asyncio.run(run())


# -- part 3: throughput -------------------------------------------------------------------------


def throughput(ports: list[int], work: bp.Workload, n: int, concurrency: int, warmup: int
               ) -> tuple[float, list[float]]:
    """`n` requests over `concurrency` connections spread over `ports`: (req/s, latencies)."""
    seq = itertools.count()
    heads: dict[tuple, bytes] = {}
    stages = len(work.turns)

    def request(port: int, sess: int, stage: int) -> bytes:
        tp = work.templates[sess][stage]
        key = (port, sess, stage)
        if key not in heads:
            heads[key] = bp._head(f"127.0.0.1:{port}", work.sessions[sess], tp.size,
                                  stream=False, scenario=None)
        return heads[key] + tp.body(next(seq))

    socks = [bp.connect(ports[c % len(ports)]) for c in range(concurrency)]
    try:
        for c, s in enumerate(socks):  # prime (lazy upstream connect), then warm up
            for i in range(max(1, warmup // concurrency)):
                port = ports[c % len(ports)]
                err = bp.check_json(bp.exchange(s, request(port, c % len(work.sessions),
                                                           i % stages))[1])
                if err:
                    raise RuntimeError(f"warm-up request failed: {err}")
        counter = itertools.count()
        lat: list[list[float]] = [[] for _ in socks]
        errors: list[str] = []
        start = threading.Barrier(concurrency + 1)

        def worker(c: int) -> None:
            s, port = socks[c], ports[c % len(ports)]
            start.wait()
            while (i := next(counter)) < n:
                t0, resp = bp.exchange(s, request(port, c % len(work.sessions), i % stages))
                err = bp.check_json(resp)
                if err:
                    errors.append(err)
                    return
                lat[c].append(resp.t_end - t0)

        threads = [threading.Thread(target=worker, args=(c,)) for c in range(concurrency)]
        for t in threads:
            t.start()
        start.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        if errors:
            raise RuntimeError(f"request failed: {errors[0]}")
        flat = [x for xs in lat for x in xs]
        return len(flat) / elapsed, flat
    finally:
        for s in socks:
            s.close()


# -- part 4: the session across two instances -----------------------------------------------------


def sim_salt(seed: int) -> bytes:
    return hashlib.sha256(f"headroom-sim-salt-{seed}".encode()).digest()  # as simulate_session


def session_run(name: str, title: str, session: ss.Session, proxies: list[Mitmdump],
                log) -> ss.Run:
    """The session's turns through `proxies`, turn t through proxies[t % len], against a fresh
    caching upstream (simulate_session.run_variant, several instances)."""
    run = ss.Run(name, title)
    upstream = CachingUpstream(billing="ignore-cch")
    for p in proxies:
        p.mode = f"reverse:{upstream.url}"
    t0 = time.perf_counter()
    started = []
    try:
        for p in proxies:
            started.append(p.start())
        with ss.httpx.Client(timeout=120) as client:
            for turn in range(1, session.turns + 1):
                p = proxies[turn % len(proxies)]
                fields, body = ss.build_request(session, turn)
                upstream.reply = session.reply(turn)
                n = len(upstream.records)
                with client.stream("POST", f"{p.url}/v1/messages?beta=true", headers=fields,
                                   content=body) as resp:
                    raw = resp.read()
                if resp.status_code != 200 or len(upstream.records) != n + 1:
                    raise RuntimeError(f"{name} turn {turn}: HTTP {resp.status_code}\n"
                                       f"{raw[:300]!r}\n{p.log()[-2000:]}")
                usage, _ = ss._parse_sse_usage(raw)
                rec = upstream.records[-1]
                live = [c.kind for c in session.steps[turn - 2].calls] if turn >= 2 else []
                run.turns.append(ss.Turn(turn, rec, usage, len(body), len(rec.body), live))
                log(f"  {name:10s} turn {turn:2d}/{session.turns} via :{p.port}: "
                    f"{len(body):8d} B -> {len(rec.body):8d} B; read {rec.sim.cache_read:6d} "
                    f"write {rec.sim.cache_write:6d}")
    finally:
        for p in started:
            p.stop()
        upstream.close()
    run.seconds = time.perf_counter() - t0
    ss.detect_busts(run)
    return run


def simulate(turns: int, seed: int, redis: RedisServer, log) -> dict[str, ss.Run]:
    session = ss.generate_session(turns, seed)
    work = Path(tempfile.mkdtemp(prefix="headroom-bench-redis-"))
    salt = sim_salt(seed)
    opts = {"headroom_ccr_host": CCR}

    def instance(name: str, **extra) -> Mitmdump:
        return Mitmdump(mode="reverse:http://127.0.0.1:1", options={**opts, **extra},
                        workdir=work / name)

    runs = {"plain": session_run("plain", "plain mitmdump", session,
                                 [Mitmdump(mode="reverse:http://127.0.0.1:1", headroom=False,
                                           workdir=work / "plain")], log)}
    one = instance("disk")
    one.headroom_dir.mkdir(parents=True)
    (one.headroom_dir / "salt").write_bytes(salt)
    (one.headroom_dir / "salt").chmod(0o600)
    runs["disk"] = session_run("disk", "Headroom, one instance, diskcache", session, [one], log)
    redis.flush()
    redis_client(redis).set("headroom:salt", salt)
    runs["redis2"] = session_run(
        "redis2", "Headroom, two instances alternating, Redis", session,
        [instance("a", headroom_redis=redis.url), instance("b", headroom_redis=redis.url)], log)
    return runs


def redis_client(server: RedisServer):
    import redis

    return redis.Redis(host="127.0.0.1", port=server.port)


# -- output -----------------------------------------------------------------------------------


def ms(x: float) -> str:
    return f"{x * 1000:.2f}"


def redis_version() -> str:
    try:
        out = subprocess.run([binary() or "redis-server", "--version"], capture_output=True,
                             text=True, timeout=10).stdout
        return out.split("v=")[1].split()[0] if "v=" in out else out.strip()
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    ap.add_argument("--markdown", action="store_true", help="Markdown tables")
    ap.add_argument("--concurrency", type=int, default=8, help="connections in part 3")
    ap.add_argument("--seed", type=int, default=1, help="the simulated session's seed")
    ap.add_argument("--parts", default="1,2,3,4", help="which parts to run (default all)")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    args = ap.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    parts = {p.strip() for p in args.parts.split(",")}
    md = args.markdown
    log = (lambda *_: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    if binary() is None:
        print("redis-server not found: apt-get install redis-server (Debian/Ubuntu) or "
              "brew install redis (macOS)", file=sys.stderr)
        return 2
    out = [f"Command:   {shlex.join([Path(sys.executable).name, *sys.argv])}",
           *bp.machine_info(),
           f"Redis:     redis-server {redis_version()} on loopback TCP, no persistence; "
           "Headroom's client: redis-py, one pool per process, 0.25 s timeouts"]
    work = Path(tempfile.mkdtemp(prefix="headroom-bench-redis-"))
    redis = RedisServer(work / "redis").start()
    try:
        with bp.Upstream() as up:
            upstream_url = f"http://127.0.0.1:{up.port}"
            if "1" in parts or "2" in parts:
                log("part 1/2: store hits")
                rows = []
                for name, extra in (("diskcache", {}), ("Redis", {"headroom_redis": redis.url})):
                    redis.flush()
                    with Mitmdump(mode=f"reverse:{upstream_url}", options={
                            "headroom_store_mode": "cache", "headroom_compress": "off",
                            **extra}) as p:
                        lat, size = store_hits(p, cfg["hits"])
                    rows.append([name, f"{size:,}", ms(pct(lat, 50)), ms(pct(lat, 95))])
                redis.flush()
                inproc = inproc_lookups(redis.url, cfg["inproc"])
                for row, key in zip(rows, ("diskcache", "redis"), strict=True):
                    row += [ms(pct(inproc[key], 50)), ms(pct(inproc[key], 95))]
                out += ["", f"1. Store hit, {cfg['hits']} hits one at a time through mitmdump "
                        f"(~100 KB JSON answer); lookup alone: Store.get x {cfg['inproc']} in "
                        "process",
                        table(["backend", "bytes", "hit p50 ms", "hit p95 ms",
                               "lookup p50 ms", "lookup p95 ms"], rows, md)]
                inline, off = inproc["inline"], inproc["offloaded"]
                out += ["", f"2. Offload rule: the same Redis-backed store hit, "
                        f"Engine.handle_request x {cfg['inproc']} in process",
                        table(["how", "p50 ms", "p95 ms"],
                              [["inline (on the event loop)", ms(pct(inline, 50)),
                                ms(pct(inline, 95))],
                               ["asyncio.to_thread (what the adapter does)", ms(pct(off, 50)),
                                ms(pct(off, 95))],
                               ["hand-off cost", ms(pct(off, 50) - pct(inline, 50)),
                                ms(pct(off, 95) - pct(inline, 95))]], md)]
            if "3" in parts:
                log("part 3: throughput")
                work_load = bp.Workload.build(50, args.concurrency)
                targets = [("one instance, diskcache", 1, {}),
                           ("one instance, Redis", 1, {"headroom_redis": redis.url}),
                           ("two instances sharing Redis", 2, {"headroom_redis": redis.url})]
                rps: dict[str, list[float]] = {t[0]: [] for t in targets}
                lats: dict[str, list[float]] = {t[0]: [] for t in targets}
                for r in range(cfg["runs"]):  # alternating order: noise lands on every target
                    for name, n_inst, extra in bp.alternate(targets, r):
                        redis.flush()
                        procs = [Mitmdump(mode=f"reverse:{upstream_url}",
                                          options={"headroom_events": "off", **extra}).start()
                                 for _ in range(n_inst)]
                        try:
                            got, lat = throughput([p.port for p in procs], work_load,
                                                  cfg["requests"], args.concurrency,
                                                  cfg["warmup"])
                        finally:
                            for p in procs:
                                p.stop()
                        rps[name].append(got)
                        lats[name] += lat
                        log(f"  run {r + 1}: {name}: {got:.0f} req/s")
                rows = [[name, f"{statistics.median(rps[name]):.0f}",
                         " / ".join(f"{x:.0f}" for x in rps[name]),
                         ms(pct(lats[name], 50)), ms(pct(lats[name], 95))]
                        for name, _, _ in targets]
                base = float(rows[0][1])
                for r in rows:
                    r.append(f"{float(r[1]) / base:.2f}x")
                sizes = work_load.sizes()
                out += ["", f"3. Throughput: {cfg['requests']} Claude-Code-shaped requests "
                        f"({min(sizes) // 1000}-{max(sizes) // 1000} KB, Headroom defaults, "
                        f"API key) over {args.concurrency} keep-alive connections, "
                        f"{cfg['runs']} run(s) in alternating order (median req/s)",
                        table(["target", "req/s", "runs", "p50 ms", "p95 ms",
                               "vs diskcache"], rows, md)]
        if "4" in parts:
            log("part 4: the session across two instances")
            runs = simulate(cfg["turns"], args.seed, redis, log)
            plain, disk, two = runs["plain"], runs["disk"], runs["redis2"]
            same = all(a.record.body == b.record.body
                       for a, b in zip(disk.turns, two.turns, strict=True))
            rows = []
            spec = [("cache write tokens", "write"), ("cache read tokens", "read"),
                    ("uncached input tokens", "input"),
                    ("billed equivalents (input side)", "billed_input_side"),
                    ("USD at Sonnet prices", "usd"), ("prefix busts (turns >= 2)", "busts")]
            tots = {k: r.totals() for k, r in runs.items()}
            same_bill = tots["disk"]["billed_all"] == tots["redis2"]["billed_all"]
            for label, key in spec:
                rows.append([label, *[f"${tots[k][key]:.4f}" if key == "usd"
                                      else f"{tots[k][key]:,.0f}" for k in runs]])
            rows.append(["Headroom-caused busts", "", str(len(ss.attribute(plain, disk))),
                         str(len(ss.attribute(plain, two)))])
            out += ["", f"4. The session simulator ({cfg['turns']} turns, seed {args.seed}, "
                    "no restart): one instance on diskcache vs two instances on one Redis, "
                    "alternating turn by turn",
                    table(["", plain.title, disk.title, two.title], rows, md),
                    "Two instances forward the same bytes as one, every turn: "
                    + ("yes" if same else "NO") + "; same bill: "
                    + ("yes" if same_bill else "NO")]
    finally:
        redis.close()
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
