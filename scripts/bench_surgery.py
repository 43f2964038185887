"""Time live-zone detection, byte-range surgery and ledger replay on realistic request bodies.

Prints milliseconds (best and median of N runs) per stage and end to end. The compressor is a cheap
stand-in so the figures are Headroom's own overhead, not the compressor's.
Usage: .venv/bin/python scripts/bench_surgery.py [--runs N] [--real]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from headroom_core import jsonspan, livezone  # noqa: E402
from headroom_core.ledger import Entry  # noqa: E402
from headroom_runtime.diskledger import Ledger  # noqa: E402
from headroom_runtime.diskoriginals import Originals  # noqa: E402
from headroom_core.rewrite import Rewriter, RewritePolicy  # noqa: E402

rng = random.Random(7)
WORDS = ("alpha beta gamma delta error warning config module import return value request "
         "response header token cache build test passed failed src lib main util").split()


def words(n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def json_result(items: int) -> str:
    rows = [{"id": i, "name": f"item-{i}", "path": f"src/pkg/mod_{i}.py", "status": "ok",
             "size": rng.randint(10, 99999), "tags": [words(1), words(1)], "note": words(6)}
            for i in range(items)]
    return orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode()


def log_result(size: int) -> str:
    lines, total, i = [], 0, 0
    while total < size:
        line = f"2025-01-01T00:00:{i % 60:02d}Z INFO [worker-{i % 8}] {words(10)} é → ✓"
        lines.append(line)
        total += len(line.encode()) + 1
        i += 1
    return "\n".join(lines)


def tools_block() -> list[dict]:
    return [{"name": f"Tool{i}", "description": words(120),
             "input_schema": {"type": "object", "properties": {
                 f"p{j}": {"type": "string", "description": words(15)} for j in range(8)},
                 "required": ["p0"]}} for i in range(20)]


def claude_code_body(history: int, newest: str, *, hist_output: int = 1500) -> dict:
    messages: list[dict] = [{"role": "user", "content": [{"type": "text", "text": words(50)}]}]
    for t in range(history // 2):
        tid = f"toolu_{t:04d}"
        tool = ("Bash", "Grep", "Read", "Glob")[t % 4]
        messages.append({"role": "assistant", "content": [
            {"type": "thinking", "thinking": words(40), "signature": "sig" * 20},
            {"type": "text", "text": words(20)},
            {"type": "tool_use", "id": tid, "name": tool, "input": {"command": words(5)}}]})
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": tid,
             "content": [{"type": "text", "text": log_result(hist_output)}]}]})
    tid = "toolu_newest"
    messages.append({"role": "assistant", "content": [
        {"type": "tool_use", "id": tid, "name": "Bash", "input": {"command": "run"}}]})
    messages.append({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": tid, "content": [{"type": "text", "text": newest}],
         "cache_control": {"type": "ephemeral"}}]})
    return {"model": "claude-sonnet-4-5", "max_tokens": 32000, "stream": True,
            "system": [{"type": "text", "text": words(2000)}], "tools": tools_block(),
            "messages": messages}


def responses_body(history: int, newest: str) -> dict:
    items: list[dict] = [{"type": "message", "role": "user",
                          "content": [{"type": "input_text", "text": words(50)}]}]
    for t in range(history // 2):
        items.append({"type": "reasoning", "summary": [], "encrypted_content": "x" * 400})
        items.append({"type": "function_call", "call_id": f"call_{t}", "name": "shell",
                      "arguments": orjson.dumps({"command": ["ls"]}).decode()})
        items.append({"type": "function_call_output", "call_id": f"call_{t}",
                      "output": log_result(1500)})
    items.append({"type": "function_call", "call_id": "call_new", "name": "shell",
                  "arguments": "{}"})
    items.append({"type": "function_call_output", "call_id": "call_new", "output": newest})
    return {"model": "gpt-5-codex", "instructions": words(2000), "tools": [], "input": items,
            "stream": True, "store": False}


def cheap_compressor(text: str, *, policy, retrieval_ref: str):
    if len(text) < 512:
        return SimpleNamespace(action="below-threshold", kind="log", text=None,
                               tokens_before=None, tokens_after=None, omitted="")
    return SimpleNamespace(action="compressed", kind="log",
                           text=text[:400] + "\n[... see " + retrieval_ref + "]",
                           tokens_before=len(text) // 4, tokens_after=110, omitted="")


def timeit(fn, runs: int) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return min(times), statistics.median(times)


def bench(name: str, shape: str, raw: bytes, runs: int, workdir: Path,
          args_real: bool = False) -> None:
    doc = orjson.loads(raw)
    cands = livezone.candidates(shape, doc)
    expected = {c.path: c.text for c in cands}
    spans = jsonspan.locate_checked(raw, expected)
    assert spans is not None, name
    live = [c for c in cands if c.live]
    edits = [(*spans[c.path], b'"x"') for c in live]
    print(f"\n{name}: {len(raw) / 1024:.0f} KiB, {len(cands)} tool outputs ({len(live)} live)")
    rows = [
        ("orjson parse", lambda: orjson.loads(raw)),
        ("live zone", lambda: livezone.candidates(shape, doc)),
        ("locate live only", lambda: jsonspan.locate_checked(
            raw, {c.path: c.text for c in live})),
        ("locate all outputs", lambda: jsonspan.locate_checked(raw, expected)),
        ("splice", lambda: jsonspan.splice(raw, edits)),
    ]
    for label, fn in rows:
        best, med = timeit(fn, runs)
        print(f"  {label:<34} best {best:7.2f} ms   median {med:7.2f} ms")

    # End to end. A compressing turn: a new tenant each run, so nothing is in the ledger yet and
    # the (stand-in) compression, the originals store and the ledger record all happen.
    d = Path(tempfile.mkdtemp(dir=workdir))
    ledger, originals = Ledger(d / "ledger"), Originals(d / "originals")
    rw = Rewriter(RewritePolicy(), ledger, originals, b"bench-salt", cheap_compressor)
    first = rw.rewrite(shape, raw, tenant="t:warmup")
    counter = iter(range(10**9))
    cbest, cmed = timeit(lambda: rw.rewrite(shape, raw, tenant=f"t:{next(counter)}"), runs)
    # Record every historic output as if earlier turns had compressed them.
    for c in cands:
        if not c.live:
            lit = raw[spans[c.path][0]:spans[c.path][1]]
            ledger.record("t:bench", (c.call_id, lit), Entry(b'"compressed"', "log", 400, 3))
    best, med = timeit(lambda: rw.rewrite(shape, raw, tenant="t:bench"), runs)
    res = rw.rewrite(shape, raw, tenant="t:bench")
    replayed = sum(1 for e in res.manifest if e["action"] == "replayed")
    print(f"  {'rewrite, compressing turn':<34} best {cbest:7.2f} ms   median {cmed:7.2f} ms   "
          f"({first.bytes_saved} bytes saved)")
    print(f"  {'rewrite, warm ledger':<34} best {best:7.2f} ms   median {med:7.2f} ms   "
          f"({replayed} replayed)")
    ledger.close()
    originals.close()
    if args_real:
        _bench_real(shape, raw, runs, workdir)


def _bench_real(shape: str, raw: bytes, runs: int, workdir: Path) -> None:
    """The same compressing turn with headroom_core.compress (its time included)."""
    try:
        import headroom_core.compress  # noqa: F401
    except ImportError:
        print("  (headroom_core.compress not importable: real compressor skipped)")
        return
    d = Path(tempfile.mkdtemp(dir=workdir))
    rw = Rewriter(RewritePolicy(), Ledger(d / "ledger"), Originals(d / "originals"), b"salt")
    res = rw.rewrite(shape, raw, tenant="t:warmup")
    counter = iter(range(10**9))
    best, med = timeit(lambda: rw.rewrite(shape, raw, tenant=f"t:{next(counter)}"), runs)
    actions = ",".join(e["action"] for e in res.manifest if e["live"])
    print(f"  {'real compressor, compressing turn':<34} best {best:7.2f} ms   median {med:7.2f} ms"
          f"   ({actions}; {res.bytes_saved} bytes saved)")
    rw.ledger.close()
    rw.originals.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--real", action="store_true",
                    help="also time the real compressor (headroom_core.compress)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        body = claude_code_body(20, json_result(100))
        bench("Claude Code, 20 history msgs, newest = 100-item JSON result", "anthropic",
              orjson.dumps(body), args.runs, work, args.real)
        body = claude_code_body(20, log_result(1 << 20))
        bench("Claude Code, 20 history msgs, newest = 1 MB log result", "anthropic",
              orjson.dumps(body), args.runs, work, args.real)
        body = claude_code_body(150, json_result(30), hist_output=2500)
        bench("Claude Code, 150 history msgs (~300 KB)", "anthropic",
              orjson.dumps(body), args.runs, work, args.real)
        body = claude_code_body(150, json_result(30), hist_output=2500)
        bench("Claude Code, 150 history msgs, pretty-printed", "anthropic",
              orjson.dumps(body, option=orjson.OPT_INDENT_2), args.runs, work, args.real)
        body = responses_body(100, log_result(1 << 20))
        bench("Codex Responses, 100 history items, newest = 1 MB log", "responses",
              orjson.dumps(body), args.runs, work, args.real)


if __name__ == "__main__":
    main()
