"""Instructions per request, counted by valgrind's callgrind: a figure that does not move between runs.

    .venv/bin/python scripts/count_instructions.py [--requests 400] [--targets plain,off,defaults]

`bench_proxy.py`'s req/s and CPU figures spread by ±10 % between runs on a shared 2-core machine,
and `profile_engine.py`'s by ~15 % from one day to the next; an instruction count changes only when
the code does, so two builds can be compared to a fraction of a percent, on any day. Each target
is a mitmdump run under `valgrind --tool=callgrind` in front of the fake upstream, fed
bench_proxy's Claude-Code-shaped conversations (~50 KB, concurrency 8, a new session every 16
turns): after a warm-up of the same traffic the counters are zeroed, `--requests` requests run,
and the user-space instructions the whole process executed meanwhile (every thread: Headroom's
background accounting and event log included, once its last batch has run) are divided by the
number of requests. Targets: `plain` mitmdump, `hooks` (`scripts/null_addon.py`: four empty
hooks), `off` (Headroom with `headroom_compress=off`) and `defaults` (Headroom as installed),
Headroom with the flush interval users get (`bench_proxy.headroom_proxy`).

What it does not count: the kernel's work (sockets), and what an instruction costs (cache
misses, the other core's load): a share of instructions is not a share of CPU time (inside
mitmdump Headroom's instructions take more time each than mitmproxy's; README). Under valgrind
everything runs ~50 times slower, ~2-3 minutes per target; work that runs per second rather than
per request (Headroom's background threads drain their batches 8 times a second while
traffic flows) is counted in over the longer
wall time, which the output shows. Needs valgrind (Debian/Ubuntu: `apt-get install valgrind`).
"""

from __future__ import annotations

import argparse
import glob
import os
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

TARGETS = {
    "plain": "mitmdump",
    "hooks": "mitmdump + 4 empty hooks",
    "off": "Headroom, headroom_compress=off",
    "defaults": "Headroom defaults",
}


def summary_of(path: str | os.PathLike[str]) -> int:
    """The instruction total of one callgrind dump (its `summary:` or `totals:` line)."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise ValueError(f"{path}: no summary line (not a callgrind dump?)")


def per_request(total: int, requests: int) -> float:
    if requests < 1:
        raise ValueError("at least one request is needed")
    return total / requests


def rows(counts: dict[str, float], base: str = "plain") -> list[list[str]]:
    """Table rows: target, k instructions per request, and the difference from `base`."""
    out = []
    ref = counts.get(base)
    for key, n in counts.items():
        if ref is None or key == base:
            diff = "-"
        else:
            diff = f"{(n - ref) / 1000:+,.0f} k ({(n - ref) / ref * 100:+.1f} %)"
        out.append([TARGETS.get(key, key), f"{n / 1000:,.0f}", diff])
    return out


class Callgrind:
    """One mitmdump under callgrind; `zero()` and `count()` drive callgrind_control."""

    def __init__(self, proxy: Mitmdump, outdir: Path) -> None:
        self.proxy = proxy
        self.outdir = outdir
        self.pid: int | None = None

    def start(self, timeout: float = 600.0) -> None:
        self.proxy.launcher = ["valgrind", "--tool=callgrind", "--dump-instr=no",
                               f"--callgrind-out-file={self.outdir / 'callgrind.out.%p'}"]
        self.proxy.start(timeout)
        self.pid = self.proxy.proc.pid

    def _control(self, flag: str) -> None:
        subprocess.run(["callgrind_control", flag, str(self.pid)], check=True,
                       capture_output=True, timeout=120)

    def zero(self) -> None:
        self._control("-z")

    def count(self) -> int:
        """Instructions since the last `zero()` (a dump is requested and read)."""
        before = set(self._dumps())
        self._control("-d")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            new = [d for d in self._dumps() if d not in before]
            if new:
                time.sleep(0.2)  # written in one go, but let it land
                return summary_of(new[0])
            time.sleep(0.2)
        raise RuntimeError("callgrind wrote no dump")

    def _dumps(self) -> list[str]:
        return glob.glob(str(self.outdir / f"callgrind.out.{self.pid}.*"))

    def stop(self) -> None:
        self.proxy.stop()


def make_proxy(key: str, mode: str, **kw) -> Mitmdump:
    if key == "plain":
        return Mitmdump(mode=mode, headroom=False, **kw)
    if key == "hooks":
        return Mitmdump(mode=mode, headroom=False,
                        extra_args=["-s", str(ROOT / "scripts" / "null_addon.py")], **kw)
    if key == "off":
        return bp.headroom_proxy(mode, {"headroom_compress": "off"}, **kw)
    if key == "defaults":
        return bp.headroom_proxy(mode, **kw)
    raise ValueError(f"unknown target {key!r} (choose from {', '.join(TARGETS)})")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=400,
                    help="measured requests per target (default 400)")
    ap.add_argument("--warmup", type=int, default=200,
                    help="requests per target before counting (default 200)")
    ap.add_argument("--targets", default=",".join(TARGETS),
                    help=f"comma-separated, from {', '.join(TARGETS)} (default: all)")
    args = ap.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown or not args.targets:
        ap.error(f"--targets takes {', '.join(TARGETS)}")
    if args.requests < 1 or args.warmup < 0:
        ap.error("--requests must be at least 1 and --warmup at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            print(f"count_instructions: {tool} not found; install valgrind "
                  "(Debian/Ubuntu: apt-get install valgrind)", file=sys.stderr)
            return 2
    command = " ".join(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    print(f"Command: {command}")
    for line in bp.machine_info():
        print(line)
    bp.TIMEOUT = 600.0  # everything is ~50x slower under valgrind
    work = bp.Workload.build(50.0, 8, 16)
    counts: dict[str, float] = {}
    walls: dict[str, float] = {}
    status = 0
    with tempfile.TemporaryDirectory(prefix="headroom-callgrind-") as d, bp.Upstream() as up:
        mode = f"reverse:http://127.0.0.1:{up.port}"
        bench = bp.Bench(argparse.Namespace(stream_events=0), work, up)
        for key in args.targets:
            proxy = make_proxy(key, mode)
            cg = Callgrind(proxy, Path(d))
            try:
                print(f"  {key}: starting under valgrind", file=sys.stderr, flush=True)
                cg.start()
                t = bp.Target(key, TARGETS[key], proxy.port, cg.pid, proxy)
                if args.warmup:
                    bench.load(t, args.warmup, 8, record=None)
                time.sleep(1)  # the warm-up's background batches run before counting starts
                cg.zero()
                t0 = time.monotonic()
                bench.load(t, args.requests, 8, record=None)
                # the last accounting batch and event-log write (flush interval 0.25 s, slowed)
                time.sleep(1.5)
                walls[key] = time.monotonic() - t0
                counts[key] = per_request(cg.count(), args.requests)
                if t.errors:
                    print(f"{key}: {len(t.errors)} failed requests, e.g. {t.errors[0]}",
                          file=sys.stderr)
                    status = 1
            finally:
                cg.stop()
                shutil.rmtree(proxy.workdir, ignore_errors=True)
    print(f"\nInstructions per request (user space, all threads), {args.requests} requests "
          f"per target after {args.warmup} to warm up:\n")
    print(bp.table(["target", "k instructions / request", "vs plain mitmdump"], rows(counts),
                   False))
    print("\nCounting wall time (under valgrind): " + ", ".join(
        f"{k} {w:.0f} s" for k, w in walls.items()))
    return status


if __name__ == "__main__":
    sys.exit(main())
