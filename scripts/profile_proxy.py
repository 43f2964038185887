"""Where a proxy's time goes inside a real mitmdump under the benchmark load: py-spy samples it.

    .venv/bin/python scripts/profile_proxy.py [--target off] [--seconds 20] [--rate 200] [--top 30]

`profile_engine.py` times Headroom's engine in a quiet process of its own; inside mitmdump the
same code runs two to three times slower (its caches are shared with mitmproxy's own work), and
that is where the benchmark's ratios come from. This script starts one proxy (`plain` mitmdump,
Headroom with `headroom_compress=off`, or Headroom's `defaults`) in front of bench_proxy's fake
upstream, plays bench_proxy's Claude-Code-shaped conversations through it (concurrency 8) and
meanwhile lets py-spy sample the proxy process (`py-spy record --format raw`, every thread).
It prints wall time per request on mitmproxy's event loop (the main thread) and in each other
thread, the event loop's time under Headroom's hooks, and the functions with the most time
inclusive (each sample is one 1/rate-second slice of a thread that was running).

Needs py-spy (`.venv/bin/pip install -e '.[profile]'`) and the right to ptrace the proxy (root,
or `kernel.yama.ptrace_scope=0`). `--raw FILE` keeps the collapsed stacks (flame-graph tools
read them).
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import bench_proxy as bp  # noqa: E402

from tests.e2e.proxy import Mitmdump  # noqa: E402

_LINE = re.compile(r":\d+\)$")
# Headroom's own frames (py-spy names a frame "function (file:line)"; file is shortened)
_OURS = re.compile(r"\((?:addons/)?(?:headroom[^/]*\.py|headroom_core/|headroom_runtime/)")
_WAITS = ("wait (threading", "Condition.wait", "Event.wait")
HOOKS = ("requestheaders", "request", "responseheaders", "response")


def frame(name: str) -> str:
    """A frame without its line number: samples of one function add up."""
    return _LINE.sub(")", name)


def ours(name: str) -> bool:
    return bool(_OURS.search(name)) and "mitmproxy/" not in name


def read_raw(text: str) -> list[tuple[str, list[str], int]]:
    """py-spy's collapsed stacks: `thread (tid): name;frame;frame... count` per line, outermost
    frame first. Returns (thread, frames, samples)."""
    out = []
    for line in text.splitlines():
        stack, _, n = line.rstrip().rpartition(" ")
        if not stack or not n.isdigit():
            continue
        parts = stack.split(";")
        out.append((parts[0], [frame(f) for f in parts[1:]], int(n)))
    return out


def _idle(frames: list[str]) -> bool:
    """A thread asleep in a wait (py-spy sometimes reports one): not work."""
    return bool(frames) and frames[-1].startswith(_WAITS)


def analyse(stacks: list[tuple[str, list[str], int]], requests: int, rate: float,
            top: int = 30) -> dict:
    """µs per request: per thread, under each of Headroom's hooks (event loop), and the `top`
    functions with the most inclusive time (Headroom's and all)."""
    us = 1e6 / rate / max(1, requests)  # one sample, per request
    threads: collections.Counter = collections.Counter()
    hooks: collections.Counter = collections.Counter()
    inclusive: collections.Counter = collections.Counter()
    headroom_inclusive: collections.Counter = collections.Counter()
    loop_ours = 0
    for thread, frames, n in stacks:
        if _idle(frames):
            continue
        main = "MainThread" in thread
        threads["event loop (main thread)" if main else re.sub(r" \(\d+\)", "", thread)] += n
        seen: set[str] = set()
        inside = False
        for f in frames:
            if f not in seen:
                inclusive[f] += n
                seen.add(f)
            if main and not inside and ours(f):
                inside = True
                loop_ours += n
                name = f.split(" ", 1)[0].rpartition(".")[2]
                hooks[name if name in HOOKS else "other"] += n
            if inside:
                headroom_inclusive[f] += n
    return {
        "threads": {k: v * us for k, v in threads.most_common()},
        "loop_headroom": loop_ours * us,
        "hooks": {k: v * us for k, v in hooks.most_common()},
        "top": [(k, v * us) for k, v in inclusive.most_common(top)],
        "top_headroom": [(k, v * us) for k, v in headroom_inclusive.most_common(top)],
    }


def report(result: dict, target: str, rps: float, requests: int) -> str:
    lines = [f"Target: {target}; {requests} requests measured at {rps:.0f} req/s "
             "(µs of wall time per request, from samples of running threads)"]
    for name, v in result["threads"].items():
        lines.append(f"  {name:40s} {v:8.1f} µs")
    lines.append(f"  {'of the event loop, under Headroom':40s} {result['loop_headroom']:8.1f} µs")
    for name, v in result["hooks"].items():
        lines.append(f"    {name:38s} {v:8.1f} µs")
    if result["top_headroom"]:
        lines.append("Headroom's functions on the event loop (inclusive):")
        lines += [f"  {v:8.1f} µs  {k}" for k, v in result["top_headroom"]]
    lines.append("All functions (inclusive):")
    lines += [f"  {v:8.1f} µs  {k}" for k, v in result["top"]]
    return "\n".join(lines)


def proxy_for(target: str, mode: str) -> Mitmdump:
    if target == "plain":
        return Mitmdump(mode=mode, headroom=False)
    return bp.headroom_proxy(mode, {"headroom_compress": "off"} if target == "off" else {})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", choices=("plain", "off", "defaults"), default="off")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rate", type=int, default=200, help="samples per second (py-spy)")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--raw", help="keep py-spy's collapsed stacks in this file")
    args = ap.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("py-spy is not installed: .venv/bin/pip install -e '.[profile]'", file=sys.stderr)
        return 2
    print("Command:", " ".join([Path(sys.executable).name, *sys.argv]))
    for line in bp.machine_info():
        print(line)
    work = bp.Workload.build(50, 8, 16)
    with bp.Upstream() as up, tempfile.TemporaryDirectory() as d:
        bench = bp.Bench(bp.parse_args(["--quick"]), work, up)
        proxy = proxy_for(args.target, f"reverse:http://127.0.0.1:{up.port}")
        proxy.start()
        try:
            t = bp.Target(args.target, args.target, proxy.port, proxy.proc.pid, proxy)
            bench.load(t, 500, 8, record=None)  # warm-up
            raw = Path(args.raw) if args.raw else Path(d) / "stacks.txt"
            sampler = subprocess.Popen(
                [spy, "record", "--pid", str(proxy.proc.pid), "--rate", str(args.rate),
                 "--duration", str(max(1, round(args.seconds))), "--format", "raw",
                 "--threads", "--output", str(raw)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(0.5)  # attached
            start, requests = time.perf_counter(), 0
            while sampler.poll() is None:
                bench.load(t, 200, 8, record="load")
                requests += 200
            elapsed = time.perf_counter() - start
            err = sampler.stderr.read().decode(errors="replace") if sampler.stderr else ""
            if sampler.returncode != 0 or not raw.exists():
                print(f"py-spy failed ({sampler.returncode}): {err.strip()[-400:]}",
                      file=sys.stderr)
                return 1
            # requests that ran while sampling (the last batch may outlast it)
            sampled = requests * min(1.0, max(1, round(args.seconds)) / elapsed)
            result = analyse(read_raw(raw.read_text()), int(sampled), args.rate, args.top)
            print(report(result, args.target, requests / elapsed, int(sampled)))
        finally:
            proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
