"""Measure the tool-output compressors: tokens saved, facts kept, CPU per MB, marker size.

Usage: .venv/bin/python scripts/bench_compress.py [--repeat N] [--markdown] [--samples]
Runs `compress()` over the generated corpus and the real tool outputs in tests/data/tool_outputs/real,
checks each result with the independent fact extractor (tests/data/tool_outputs/facts.py), and prints
per-kind rows, an overall row over the real outputs (a mixed corpus), mean marker tokens per rewrite
and the per-call budget cases. Every figure is measured on this run; none is written in.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "data" / "tool_outputs"))

import facts as fact_rules  # noqa: E402
import tool_output_corpus as corpus  # noqa: E402

from headroom_core.compress import CompressPolicy, compress, count_tokens, tokenizer_name  # noqa: E402
from headroom_core.compress.marker import last_line  # noqa: E402

REF = "http://127.0.0.1:8080/ccr/0123456789abcdef0123456789abcdef"


@dataclass
class Row:
    kind: str
    name: str
    real: bool
    size: int
    tin: int
    tout: int
    facts: int
    kept: int
    cpu_ms: float
    action: str
    marker_tokens: int | None


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


def measure(kind: str, name: str, text: str, real: bool, policy: CompressPolicy, repeat: int) -> Row:
    ms, _, out = timed(lambda: compress(text, policy=policy, retrieval_ref=REF), repeat)
    tin = out.tokens_before if out.tokens_before is not None else count_tokens(text)
    tout = out.tokens_after if out.action == "compressed" else tin
    fs = fact_rules.facts(kind, text)
    total = fact_rules.count(fs)
    lost = fact_rules.lost(fs, out.text)
    mtok = count_tokens(last_line(out.text)) if out.action == "compressed" else None
    return Row(kind, name, real, len(text.encode()), tin, tout, total, total - len(lost), ms, out.action, mtok)


def collect(policy: CompressPolicy, repeat: int) -> list[Row]:
    rows = []
    for kind, samples in corpus.corpus().items():
        rows += [measure(kind, name, s.text, False, policy, repeat) for name, s in samples]
    for kind, samples in corpus.real_samples().items():
        rows += [measure(kind, name, s.text, True, policy, repeat) for name, s in samples]
    return rows


def summarize(label: str, rows: list[Row]) -> list[str]:
    tin = sum(r.tin for r in rows)
    tout = sum(r.tout for r in rows)
    mb = sum(r.size for r in rows) / 1e6
    ms = sum(r.cpu_ms for r in rows)
    return [label, str(len(rows)), str(tin), str(tout), f"{100 * (tin - tout) / tin:.1f}%",
            f"{sum(r.kept for r in rows)}/{sum(r.facts for r in rows)}", f"{ms / mb:.1f}"]


def kind_label(kind: str) -> str:
    return "text (left alone)" if kind == "text" else kind


def table(header: list[str], body: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])
    widths = [max(len(x) for x in col) for col in zip(header, *body, strict=True)]
    fmt = "  ".join(f"{{:{'<' if i < 1 else '>'}{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in body])


def per_sample(rows: list[Row], markdown: bool) -> str:
    header = ["kind", "sample", "real", "bytes", "tok in", "tok out", "saved", "facts kept", "cpu ms", "action"]
    body = [[r.kind, r.name, "yes" if r.real else "", str(r.size), str(r.tin), str(r.tout),
             f"{100 * (r.tin - r.tout) / r.tin:.1f}%", f"{r.kept}/{r.facts}", f"{r.cpu_ms:.1f}", r.action]
            for r in rows]
    return table(header, body, markdown)


def budget_cases(policy: CompressPolicy, repeat: int) -> list[str]:
    cases = [
        ("100-item JSON (flat)", corpus.flat_records(100).text, 5.0),
        ("100-item JSON (GitHub runs)", corpus.github_runs(100, 2, seed=11).text, 5.0),
        ("1 MB log (service)", corpus.service_log(10900, seed=9).text, 50.0),
        ("1 MB log (pytest -v)", corpus.pytest_log(passes=13000, failures=5, seed=10).text, 50.0),
        ("1 MB listing (find)", corpus.find_listing(20000, seed=3).text, 50.0),
    ]
    out = []
    for name, text, budget in cases:
        ms, wall, res = timed(lambda t=text: compress(t, policy=policy, retrieval_ref=REF), repeat)
        tok_ms, _, _ = timed(lambda t=text: count_tokens(t), repeat)
        verdict = "OK" if ms <= budget else "OVER"
        out.append(f"  {name:28} {len(text.encode()) / 1e6:5.2f} MB  {ms:6.1f} ms cpu ({wall:6.1f} wall), "
                   f"of which tokenizing the input {tok_ms:5.1f}; budget {budget:.0f} ms {verdict} [{res.action}]")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--markdown", action="store_true", help="print the summary as a markdown table")
    ap.add_argument("--samples", action="store_true", help="also print one row per sample")
    args = ap.parse_args()
    policy = CompressPolicy()
    count_tokens("warm up")
    rows = collect(policy, args.repeat)

    kinds = sorted({r.kind for r in rows}, key=["json", "log", "search", "diff", "listing", "text"].index)
    header = ["kind", "samples", "tokens in", "tokens out", "saved", "facts kept", "CPU ms/MB"]
    body = [summarize(kind_label(k), [r for r in rows if r.kind == k]) for k in kinds]
    body.append(summarize("**overall, real outputs**" if args.markdown else "overall, real outputs",
                          [r for r in rows if r.real]))
    body.append(summarize("overall, all samples", rows))
    marker_tokens = [r.marker_tokens for r in rows if r.marker_tokens is not None]
    per_call = sorted(r.cpu_ms for r in rows)
    print(f"tokenizer: {tokenizer_name()}; samples: {len(rows)} ({sum(r.real for r in rows)} real); "
          f"median CPU of {args.repeat} runs each\n")
    if args.samples:
        print(per_sample(rows, args.markdown) + "\n")
    print(table(header, body, args.markdown))
    print(f"\nmean marker tokens per rewrite: {statistics.mean(marker_tokens):.1f} "
          f"(max {max(marker_tokens)}, {len(marker_tokens)} rewrites)")
    print(f"CPU ms per compress() call over the corpus: p50 {statistics.median(per_call):.1f}, "
          f"max {per_call[-1]:.1f}")
    print(f"\nBudget cases (median CPU ms of {args.repeat} runs, tokenization included):")
    print("\n".join(budget_cases(policy, args.repeat)))


if __name__ == "__main__":
    main()
