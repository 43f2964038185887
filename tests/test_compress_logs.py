import re
import sys
from pathlib import Path

from headroom_core.compress import CompressPolicy
from headroom_core.compress.logs import ERR, SUM, TB, WARN, classify, compress_log
from headroom_core.compress.marker import is_marked

sys.path.insert(0, str(Path(__file__).parent / "data" / "tool_outputs"))
import tool_output_corpus as corpus  # noqa: E402

REF = "http://headroom.local/ccr/log1"
POLICY = CompressPolicy()

ELIDED = re.compile(r"^… ([\d,]+) lines? omitted(?: \(incl\. [^)]*\))? …$")
SIMILAR = re.compile(r"^… ([\d,]+) similar lines …$")
REPEAT = re.compile(r"^\[×(\d+)\] (.*)$", re.S)
MARK = re.compile(
    r"^\[headroom: kept (\d+) of (\d+) lines? \(([^)]*)\); (\d+) omitted"
    r"(?: \((\d+) collapsed as repeats\))?; full output: curl -s '(.*)' \(slices: [^)]*\)\]$"
)


def _int(s):
    return int(s.replace(",", "")) if s else 0


def check(inp: str, out: str) -> dict:
    """Structural check of a compressed log; returns the marker's numbers."""
    in_lines = inp[:-1].split("\n") if inp.endswith("\n") else inp.split("\n")
    body, _, mark = out.rpartition("\n")
    m = MARK.match(mark)
    assert m, mark
    kept, total, reasons, omitted = _int(m[1]), _int(m[2]), m[3], _int(m[4])
    collapsed = _int(m[5])
    elided = omitted - collapsed
    assert m[6] == REF
    assert total == len(in_lines)
    assert kept + omitted == total and collapsed + elided == omitted

    # Every line is an input line, or an elision/collapse note; input lines keep their order.
    pos = 0
    seen_kept = seen_elided = seen_collapsed = 0
    for line in body.split("\n"):
        if e := ELIDED.match(line):
            k = _int(e[1])
            assert k >= 2, "a one-line gap is shown, not elided"
            seen_elided += k
            pos += k
            continue
        if s := SIMILAR.match(line):
            seen_collapsed += _int(s[1])
            pos += _int(s[1])
            continue
        if (r := REPEAT.match(line)) and r[2] in in_lines[pos:pos + 1]:
            count = int(r[1])
            assert in_lines[pos:pos + count] == [r[2]] * count
            seen_kept += 1
            seen_collapsed += count - 1
            pos += count
            continue
        assert in_lines[pos] == line, (pos, line)
        seen_kept += 1
        pos += 1
    assert pos == total
    assert (seen_kept, seen_collapsed, seen_elided) == (kept, collapsed, elided)
    return {"kept": kept, "total": total, "reasons": reasons, "collapsed": collapsed, "elided": elided}


def run(sample_text: str, policy: CompressPolicy = POLICY):
    rw = compress_log(sample_text, policy, REF)
    assert rw is not None
    assert is_marked(rw.text)
    return rw, check(sample_text, rw.text)


def test_pytest_run_keeps_failures_tracebacks_warnings_and_summary():
    s = corpus.pytest_log(passes=800, failures=3)
    rw, stats = run(s.text)
    out_lines = set(rw.text.split("\n"))
    missing = [ln for ln in s.must_keep if ln not in out_lines]
    assert missing == []
    assert "errors" in stats["reasons"] and "summary" in stats["reasons"]
    assert stats["kept"] < 0.2 * stats["total"]
    # the whole captured traceback block survives
    tb = rw.text.index("Traceback (most recent call last):")
    assert "ConnectionResetError: [Errno 104] Connection reset by peer" in rw.text[tb:tb + 400]


def test_cargo_build_keeps_every_warning_and_the_error_block():
    s = corpus.cargo_build()
    rw, _ = run(s.text)
    out_lines = rw.text.split("\n")
    assert [ln for ln in s.must_keep if ln not in out_lines] == []
    assert sum(1 for ln in out_lines if ln.startswith("warning: unused variable")) == 6
    assert "   Compiling app v0.1.0 (/home/dev/app)" in out_lines  # context before a warning


def test_npm_install_collapses_repeats_with_counts():
    s = corpus.npm_install()
    rw, stats = run(s.text)
    out_lines = rw.text.split("\n")
    assert [ln for ln in s.must_keep if ln not in out_lines] == []
    assert "[×150] [##################] \\ reify:fsevents: sill reify mark deleted" in out_lines
    # near-duplicates differing only in numbers: first and last kept, the middle counted
    i = out_lines.index("Downloading binaries... 0% (0/3700 KB)")
    assert out_lines[i + 1:i + 3] == ["… 99 similar lines …", "Downloading binaries... 100% (3700/3700 KB)"]
    assert stats["collapsed"] == 149 + 99


def test_service_log_keeps_stack_traces_and_warnings():
    s = corpus.service_log(3000)
    rw, _ = run(s.text)
    out_lines = set(rw.text.split("\n"))
    assert [ln for ln in s.must_keep if ln not in out_lines] == []


def test_near_duplicate_errors_are_all_kept_identical_ones_collapse():
    lines = [f"step {i}: ok" for i in range(200)]
    lines[50:50] = [f"error: test_case_{i} failed with code {i}" for i in range(20)]
    lines[120:120] = ["ERROR: disk quota exceeded"] * 12
    text = "\n".join(lines)
    rw, _ = run(text)
    out_lines = rw.text.split("\n")
    for i in range(20):
        assert f"error: test_case_{i} failed with code {i}" in out_lines
    assert "[×12] ERROR: disk quota exceeded" in out_lines


def test_long_traceback_keeps_its_ends_and_the_exception():
    frames = []
    for i in range(200):
        frames += [f'  File "/app/mod{i}.py", line {i}, in f{i}', f"    f{i + 1}()"]
    lines = ["starting"] * 5 + [f"info {i}" for i in range(100)]
    lines += ["Traceback (most recent call last):", *frames, "RecursionError: maximum recursion depth exceeded"]
    lines += [f"info {i}" for i in range(100, 200)]
    text = "\n".join(lines)
    policy = CompressPolicy(log_max_block_lines=20)
    rw, _ = run(text, policy)
    out = rw.text.split("\n")
    assert "Traceback (most recent call last):" in out
    assert frames[0] in out and frames[-1] in out
    assert frames[200] not in out  # the middle of the block is elided
    assert "RecursionError: maximum recursion depth exceeded" in out


def test_head_and_tail_sizes_follow_the_policy():
    words = corpus.WORDS
    text = "\n".join(f"building {words[i % 25]}/{words[i // 25]}.o" for i in range(500)) + "\nBUILD SUCCESS"
    policy = CompressPolicy(log_head_lines=5, log_tail_lines=3, log_show_repeat_min=10**9)
    rw, stats = run(text, policy)
    out = rw.text.split("\n")
    lines = text.split("\n")
    assert out[:5] == lines[:5]
    assert out[-4:-1] == lines[-3:]
    assert stats["kept"] == 8


def test_more_than_400_error_lines_are_all_kept():
    errors = [f"error: lint violation in file_{i}.py: line too long ({80 + i} > 79)" for i in range(450)]
    lines = [f"checked module_{i}.py in {i % 9}ms" for i in range(6000)]
    for k, e in enumerate(errors):
        lines.insert(k * 13 + 5, e)
    text = "\n".join(["lint started", *lines, "450 errors"])
    rw, _ = run(text, CompressPolicy(log_max_flagged_lines=100))
    out = set(rw.text.split("\n"))
    assert [e for e in errors if e not in out] == [] and "450 errors" in out


def test_capped_warnings_are_counted_in_the_elision():
    warns = [f"warning: unused import in file_{i}.py" for i in range(300)]
    text = "\n".join(["lint started", *(w for i, w in enumerate(warns) for w in (w, *[f"ok {i}.{j}" for j in range(9)]))])
    rw, _ = run(text, CompressPolicy(log_max_flagged_lines=20))
    assert re.search(r"… \d+ lines omitted \(incl\. \d+ warnings\) …", rw.text)


def test_nothing_to_omit_returns_none():
    assert compress_log("error: a\nerror: b\nerror: c\n", POLICY, REF) is None
    assert compress_log("one line", POLICY, REF) is None


def test_trailing_newline_and_crlf_lines_are_handled():
    text = "".join(f"line {i} of the build output here\r\n" for i in range(300))
    rw, _ = run(text)
    assert rw.text.split("\n")[0] == "line 0 of the build output here\r"


def test_classify_flags():
    lines = [
        "ValueError: bad value",  # 0 ERR (CamelCase exception)
        "loading error_handler.py",  # 1 none: part of an identifier
        "================== 3 failed, 10 passed in 1.2s ==================",  # 2 ERR+SUM
        "tests/test_a.py::test_x PASSED",  # 3 none
        "  /app/x.py:1: DeprecationWarning: old",  # 4 WARN
        "Traceback (most recent call last):",  # 5 TB
        "E       assert 1 == 2",  # 6 ERR (pytest)
        "    Finished `dev` profile [unoptimized] target(s) in 3.2s",  # 7 SUM
        "make: *** [Makefile:12: all] Error 2",  # 8 ERR+SUM
        "npm WARN deprecated x@1.0.0",  # 9 WARN
        "Tests:       1 failed, 41 passed, 42 total",  # 10 ERR+SUM
    ]
    flags = classify("\n".join(lines), lines)
    assert flags.get(0, 0) & ERR
    assert 1 not in flags
    assert flags[2] & ERR and flags[2] & SUM
    assert 3 not in flags
    assert flags[4] & WARN and not flags[4] & ERR
    assert flags[5] & TB
    assert flags[6] & ERR
    assert flags[7] & SUM
    assert flags[8] & ERR and flags[8] & SUM
    assert flags[9] & WARN
    assert flags[10] & SUM


TOOL_LOGS = corpus.tool_logs()


def test_other_tools_keep_their_failures_and_summaries():
    for name, s in TOOL_LOGS.items():
        rw, _ = run(s.text)
        out_lines = rw.text.split("\n")
        assert [ln for ln in s.must_keep if ln not in out_lines] == [], name


def test_characters_that_grow_when_lowercased_do_not_shift_lines():
    lines = [f"İstanbul node {i} İİİİ ready" for i in range(300)]
    lines[150] = "error: replica İzmir lost quorum"
    rw, _ = run("\n".join(lines))
    assert "error: replica İzmir lost quorum" in rw.text.split("\n")
    assert classify("\n".join(lines), lines) == {150: ERR}
