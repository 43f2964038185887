"""Distinct Python functions Headroom's hooks run per request on mitmproxy's event loop.

    .venv/bin/python scripts/count_functions.py [--requests 200] [--targets off] [--list 40]

Inside mitmdump what a hook touches is cold again: mitmproxy's Python between two of Headroom's
hooks evicts Headroom's code and data from the CPU caches (docs/decisions.md, "A ratio target is
a time budget"). This count is the call side of that, a figure that does not move between runs;
measured, a call is worth ~0.1-0.5 µs of event-loop CPU there (cutting 61 to 42 saved ~2 µs per
request), far less than the data a request reads that earlier ones left behind.
Each target is mitmdump with `scripts/function_probe.py` loaded before Headroom, fed
bench_proxy's Claude-Code-shaped conversations (~50 KB, concurrency 8, a new session every 16
turns); after 300 requests the probe records, for `--requests` flows, every Python function
called while one of Headroom's four per-request hooks runs (mitmproxy's own properties that
Headroom reads included, mitmproxy's hook dispatch not). Background accounting runs in batches
with its code warm and is not counted. The figure does not move between runs of one build.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import bench_proxy as bp  # noqa: E402

from headroom_core import options as hoptions  # noqa: E402
from tests.e2e.proxy import ADDON, Mitmdump  # noqa: E402

TARGETS = {"off": ("Headroom, headroom_compress=off", {"headroom_compress": "off"}),
           "defaults": ("Headroom defaults", {})}
SKIP = 300


def probed_proxy(mode: str, options: dict, out: Path, flows: int) -> Mitmdump:
    """mitmdump with the probe first, then Headroom as installed (bench_proxy.headroom_proxy's
    options), counting `flows` flows after SKIP into `out`."""
    proxy = Mitmdump(mode=mode, headroom=False)
    opts = {**proxy.options, "headroom_flush_interval":
            hoptions.BY_NAME["headroom_flush_interval"].default, **options}
    args = ["-s", str(ROOT / "scripts" / "function_probe.py"), "-s", str(ADDON),
            "--set", f"probe_out={out}", "--set", f"probe_skip={SKIP}",
            "--set", f"probe_flows={flows}"]
    for k, v in opts.items():
        args += ["--set", f"{k}={v}"]
    proxy.extra_args = args
    return proxy


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=200, help="flows counted per target")
    ap.add_argument("--targets", default="off,defaults",
                    help=f"comma-separated, of {', '.join(TARGETS)}")
    ap.add_argument("--list", type=int, default=0, metavar="N",
                    help="also list the N functions run most often per request")
    args = ap.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        ap.error(f"unknown target(s): {', '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print("Command: " + " ".join(getattr(sys, "orig_argv", [sys.executable, *sys.argv])))
    for line in bp.machine_info():
        print(line)
    work = bp.Workload.build(50.0, 8, 16)
    results: dict[str, dict] = {}
    status = 0
    with tempfile.TemporaryDirectory(prefix="headroom-functions-") as d, bp.Upstream() as up:
        mode = f"reverse:http://127.0.0.1:{up.port}"
        bench = bp.Bench(argparse.Namespace(stream_events=0), work, up)
        for key in args.targets:
            label, options = TARGETS[key]
            out = Path(d) / f"{key}.json"
            proxy = probed_proxy(mode, options, out, args.requests)
            proxy.start()
            try:
                t = bp.Target(key, label, proxy.port, proxy.proc.pid, proxy)
                bench.load(t, SKIP + args.requests + 50, 8, record=None)
                if t.errors:
                    print(f"{key}: {len(t.errors)} failed requests, e.g. {t.errors[0]}",
                          file=sys.stderr)
                    status = 1
            finally:
                proxy.stop()
            if not out.exists():
                print(f"{key}: the probe wrote nothing (see {proxy.log_path})", file=sys.stderr)
                return 1
            results[key] = json.loads(out.read_text())
    print(f"\nDistinct Python functions per request in Headroom's four hooks on the event loop "
          f"({args.requests} flows per target after {SKIP}):\n")
    rows = [[TARGETS[k][0], str(r["median"]), f"{r['mean']:.1f}", str(r["flows"])]
            for k, r in results.items()]
    print(bp.table(["target", "median", "mean", "flows"], rows, False))
    for key, r in results.items() if args.list else ():
        print(f"\n{TARGETS[key][0]}: the {args.list} functions run by the most requests "
              "(per request; above 1: several functions of that name)")
        for name, share in list(r["functions"].items())[:args.list]:
            print(f"  {share:5.2f}  {name}")
    return status


if __name__ == "__main__":
    sys.exit(main())
