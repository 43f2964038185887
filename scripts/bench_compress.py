"""Measure the tool-output compressors on generated outputs: tokens saved and time per MB.

Usage: .venv/bin/python scripts/bench_compress.py [--repeat N]
Prints one row per sample (kind, input/output tokens, % saved, ms, ms per MB), then the two budget
cases: a 100-item JSON array (target <= 5 ms) and a 1 MB log (target <= 50 ms), tokenization included.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "data" / "tool_outputs"))

import tool_output_corpus as corpus  # noqa: E402

from headroom_core.compress import CompressPolicy, compress, count_tokens, tokenizer_name  # noqa: E402

REF = "http://headroom.local/ccr/3f9a0c1d2e"


def timed(fn, repeat: int) -> tuple[float, float, object]:
    """(median CPU ms of this thread, median wall ms, result). CPU time is the figure to read on a
    shared machine: wall time also counts other processes' turns on the cores."""
    cpu, wall = [], []
    result = None
    for _ in range(repeat):
        c0, w0 = time.thread_time(), time.perf_counter()
        result = fn()
        cpu.append((time.thread_time() - c0) * 1000)
        wall.append((time.perf_counter() - w0) * 1000)
    return statistics.median(cpu), statistics.median(wall), result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    policy = CompressPolicy()

    t0 = time.perf_counter()
    count_tokens("warm up")
    load_ms = (time.perf_counter() - t0) * 1000
    print(f"tokenizer: {tokenizer_name()} (first load {load_ms:.0f} ms)\n")

    header = (f"{'kind':7} {'sample':20} {'bytes':>9} {'tok in':>8} {'tok out':>8} {'saved':>6} "
              f"{'cpu ms':>7} {'wall ms':>7} {'ms/MB':>7}  action")
    print(header)
    print("-" * len(header))
    totals: dict[str, list[float]] = {}
    for kind, samples in corpus.corpus().items():
        for name, sample in samples:
            text = sample.text
            ms, wall, out = timed(lambda t=text: compress(t, policy=policy, retrieval_ref=REF), args.repeat)
            size = len(text.encode())
            tin = out.tokens_before if out.tokens_before is not None else count_tokens(text)
            tout = out.tokens_after if out.action == "compressed" else tin
            saved = 100 * (tin - tout) / tin if tin else 0.0
            per_mb = ms / (size / 1e6)
            totals.setdefault(kind, [0, 0, 0, 0])
            t = totals[kind]
            t[0] += tin
            t[1] += tout
            t[2] += ms
            t[3] += size
            print(f"{kind:7} {name:20} {size:9,} {tin:8,} {tout:8,} {saved:5.1f}% {ms:7.1f} {wall:7.1f} "
                  f"{per_mb:7.1f}  {out.action}")
    print()
    print(f"{'kind':7} {'tok in':>9} {'tok out':>9} {'saved':>6} {'cpu ms/MB':>9}")
    for kind, (tin, tout, ms, size) in totals.items():
        print(f"{kind:7} {tin:9,} {tout:9,} {100 * (tin - tout) / tin:5.1f}% {ms / (size / 1e6):9.1f}")

    print(f"\nBudget cases (median CPU ms of {args.repeat} runs, tokenization included):")
    cases = [
        ("100-item JSON (flat)", corpus.flat_records(100).text, 5.0),
        ("100-item JSON (GitHub runs)", corpus.github_runs(100, 2, seed=11).text, 5.0),
        ("1 MB log (service)", corpus.service_log(10900, seed=9).text, 50.0),
        ("1 MB log (pytest -v)", corpus.pytest_log(passes=13000, failures=5, seed=10).text, 50.0),
    ]
    for name, text, budget in cases:
        size = len(text.encode())
        ms, wall, out = timed(lambda t=text: compress(t, policy=policy, retrieval_ref=REF), args.repeat)
        tok_ms, _, _ = timed(lambda t=text: count_tokens(t), args.repeat)
        verdict = "OK" if ms <= budget else "OVER"
        print(f"  {name:28} {size / 1e6:5.2f} MB  {ms:6.1f} ms cpu ({wall:6.1f} wall), of which tokenizing "
              f"the input {tok_ms:5.1f}  budget {budget:.0f} ms {verdict}  [{out.action}]")


if __name__ == "__main__":
    main()
