"""What an idle proxy costs: CPU time and wake-ups per second of plain mitmdump and of Headroom
(as installed: `bench_proxy.headroom_proxy`), with no traffic, per thread.

    .venv/bin/python scripts/bench_idle.py [--seconds 20]

A wake-up is a voluntary context switch (Linux /proc): a thread that slept and was woken by a
timer or an event. CPU comes in 1/100 s ticks, so use a long window.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import bench_proxy as bp  # noqa: E402

from tests.e2e.proxy import Mitmdump  # noqa: E402

UPSTREAM = "reverse:http://127.0.0.1:9"  # never contacted: no request is sent


def wakeups(pid: int) -> dict[str, int]:
    """Voluntary context switches so far, by thread (name and id)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        name, n = "?", 0
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("Name:"):
                        name = line.split(None, 1)[1].strip()
                    elif line.startswith("voluntary_ctxt_switches:"):
                        n = int(line.split()[1])
        except OSError:  # the thread ended meanwhile
            continue
        out[f"{name} ({tid})"] = n
    return out


def measure(proxy: Mitmdump, seconds: float, settle: float = 3.0) -> tuple[float, dict[str, float]]:
    """(CPU ms per second, wake-ups per second by thread) over `seconds` of no traffic."""
    proxy.start()
    try:
        time.sleep(settle)  # startup done
        pid = proxy.proc.pid
        c0, w0 = bp.proc_cpu(pid), wakeups(pid)
        time.sleep(seconds)
        c1, w1 = bp.proc_cpu(pid), wakeups(pid)
    finally:
        proxy.stop()
    rates = {k: (n - w0.get(k, 0)) / seconds for k, n in w1.items()}
    return 1000 * (c1 - c0) / seconds, {k: r for k, r in rates.items() if r}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--settle", type=float, default=3.0, help="seconds after start, not measured")
    args = ap.parse_args(argv)
    targets = [("plain mitmdump", Mitmdump(mode=UPSTREAM, headroom=False)),
               ("Headroom defaults", bp.headroom_proxy(UPSTREAM))]
    for label, proxy in targets:
        ms, rates = measure(proxy, args.seconds, args.settle)
        total = sum(rates.values())
        detail = ", ".join(f"{k} {r:.1f}/s" for k, r in sorted(rates.items())) or "none"
        print(f"{label}: {ms:.2f} ms CPU per second idle; {total:.1f} wake-ups/s ({detail})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
