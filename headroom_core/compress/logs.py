"""Build and test logs: keep what an agent acts on, collapse the noise, mark every elision.

Kept verbatim and in order: every error, failure and traceback line and every summary line (never
capped), warnings and diagnostic blocks with their context, head and tail. Runs of repeated lines
collapse to one line with a count; everything else becomes `… N lines omitted …`.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from itertools import accumulate, islice
from typing import TYPE_CHECKING

from . import marker
from .marker import Compressed

if TYPE_CHECKING:
    from . import CompressPolicy

ERR, WARN, SUM, TB, LINT = 1, 2, 4, 8, 16  # LINT: a linter's diagnostic and its location

# Needles located with str.find (C speed) before any regex runs: a 1 MB log must cost
# milliseconds. Lower-case needles are searched in the lower-cased text, the others as written
# (so pytest's thousands of "PASSED" lines are not candidates for the "N passed" summary).
# A needle starting with "\n" matches at a line start.
_LOW_NEEDLES = (
    "error", "fail", "warn", "panic", "fatal", "exception", "critical", "segmentation fault", "traceback",
    "killed", "aborted", "denied", "not found", "cannot", "could", "unable to",
    "undefined reference", "deprecat", "timed out", "exit",
)
# Line starts are found in one regex pass: its literal "\n" prefix lets the scan skip ahead.
_LOW_LINE_STARTS_RE = re.compile(
    r"\n(?:test result|tests:|test suites:|snapshots:|time:|ran |done|success|summary|ok"
    r"|--- fail|added |make|> |e |___|====|build |[ \t]*finished|[ \t]*traceback)"
)
# Summaries that usually sit in the tail anyway; only "N passed" is worth a pass of its own.
_RAW_NEEDLES = (" passed",)

# Verifiers start with literal alternatives (cheap to scan for); word boundaries are checked by
# hand. "Error"/"Exception"/"Warning" may end a CamelCase name (ValueError, DeprecationWarning).
_ERR_WORDS_RE = re.compile(
    r"(?:errors|Errors|ERRORS|failures|Failures|FAILURES|fails|traceback|TRACEBACK"
    r"|error|ERROR|Error|ERR!|FAIL|FAILED|FAILURE|Fail|Failed|failed|failure|Failure|fail"
    r"|panic|panicked|PANIC|fatal|Fatal|FATAL|CRITICAL|Critical|Exception|exception|Traceback"
    r"|Segmentation fault|core dumped|Killed|Aborted|denied|not found|cannot|Cannot|could not"
    r"|Could not|couldn't|unable to|Unable to|undefined reference|timed out|Timeout)(?![A-Za-z0-9_])"
)
_ERR_START_RE = re.compile(r"E\s|>\s|_{3,} .* _{3,}\s*$")
_WARN_WORDS_RE = re.compile(
    r"(?:warning|WARNING|Warning|WARN|warn|deprecated|DEPRECATED|Deprecated|deprecation)(?![A-Za-z0-9_])"
)
_CAMEL_OK = frozenset({"Error", "Exception", "Warning"})
_SUM_ANY_RE = re.compile(
    r"\d+ (?:passed|failed|errors?|skipped|warnings?|xfailed|xpassed|deselected|pending|todo"
    r"|tests?|suites?)(?![A-Za-z0-9_])"
    r"|BUILD (?:SUCCESS|SUCCESSFUL|FAILED|FAILURE)|(?:exit code|exit status|Exit code|exited with)\b"
    r"|found \d+ vulnerabilit|audited \d+"
)
_SUM_START_RE = re.compile(
    r"(?:Tests?|Test Suites|Snapshots|Time|Ran):?\s|test result:|(?:ok|FAIL|PASS)\s+\S+\s+[\d.]+m?s"
    r"|(?:ok|FAIL|PASS|OK)\s*$|OK \(|FAILED \(|make(?:\[\d+\])?: \*\*\*|\s*Finished "
    r"|added \d+ packages?|={3,}.*={3,}\s*$|(?:Done|Success|Summary|SUCCESS|FAILURE)\b"
    r"|--- (?:FAIL|PASS):"
)


def _has_word(regex: re.Pattern[str], line: str) -> bool:
    for m in regex.finditer(line):
        i = m.start()
        if i == 0 or not (line[i - 1].isalnum() or line[i - 1] == "_") or m.group() in _CAMEL_OK:
            return True
    return False


_TB_RE = re.compile(r"^\s*Traceback \(most recent call last\):")
# Lines that continue a diagnostic block: indented frames and source excerpts, rustc/gcc gutters.
_CONT_RE = re.compile(r"^(?:[ \t]+\S|\d+\s*\||\|[ \t]|=[ \t]|\^|~|-->|Caused by|\.\.\. \d+ more)")

_DIGITS = b"0123456789"
_NOT_1 = re.compile(b"[^\x01]")
_NOT_0 = re.compile(b"[^\x00]")


def _line_starts(lines: list[str]) -> list[int]:
    # starts[i] is the offset of line i in "\n".join(lines); C-level accumulate, no Python loop.
    return list(accumulate(map((1).__add__, map(len, lines)), initial=0))


def classify(body: str, lines: list[str]) -> dict[int, int]:
    """Line index -> ERR|WARN|SUM|TB flags, for the lines that carry any."""
    starts = _line_starts(lines)
    low_body = body.lower()
    # A few characters change length when lower-cased ("İ"): then offsets need their own table.
    low_starts = starts if len(low_body) == len(body) else _line_starts(low_body.split("\n"))
    low = "\n" + low_body
    candidates: set[int] = set()
    for m in _LOW_LINE_STARTS_RE.finditer(low):
        candidates.add(bisect_right(low_starts, m.start()) - 1)  # m.start() = offset of the line
    passes = ((low, _LOW_NEEDLES, low_starts), ("\n" + body, _RAW_NEEDLES, starts))
    for haystack, needles, offsets in passes:
        last = len(offsets) - 1
        for needle in needles:
            i = haystack.find(needle)
            while i >= 0:
                line = bisect_right(offsets, i - 1) - 1
                candidates.add(line)
                # Jump to the next line: one hit per line is enough.
                i = haystack.find(needle, offsets[line + 1] + 1) if line < last else -1
    flags: dict[int, int] = {}
    n = len(lines)
    for idx in sorted(candidates):
        if idx >= n:
            continue
        line = lines[idx]
        f = 0
        if _has_word(_ERR_WORDS_RE, line) or _ERR_START_RE.match(line):
            f |= ERR
        if _has_word(_WARN_WORDS_RE, line):
            f |= WARN
        if _SUM_ANY_RE.search(line) or _SUM_START_RE.match(line):
            f |= SUM
        if _TB_RE.match(line):
            f |= TB | ERR
        if f:
            flags[idx] = f
    for idx in _lint_lines(body, starts):
        flags[idx] = flags.get(idx, 0) | LINT
    return dict(sorted(flags.items()))


# A linter's diagnostic ("E501 line too long", "D205 1 blank line required") and, on the next
# line, its location ("  --> src/a.py:6:1"): each one is a fact, its code frame is not.
_LINT_HEAD_RE = re.compile(r"[A-Z]{1,5}\d{2,4}(?:\[\*\])? \S")
_LINT_LOC_RE = re.compile(r"[ \t]*--> \S+:\d+")


def _lint_lines(body: str, starts: list[int]) -> list[int]:
    # Anchored on the rare "--> " (found at C speed), then both lines are checked.
    out = []
    i = body.find("--> ")
    while i >= 0:
        idx = bisect_right(starts, i) - 1
        loc = body[starts[idx]:starts[idx + 1] - 1] if idx + 1 < len(starts) else body[starts[idx]:]
        if idx > 0 and _LINT_LOC_RE.match(loc) and _LINT_HEAD_RE.match(body, starts[idx - 1]):
            out += [idx - 1, idx]
        i = body.find("--> ", starts[idx + 1]) if idx + 1 < len(starts) else -1
    return out


def _block_end(lines: list[str], idx: int, is_tb: bool, limit: int) -> int:
    """Index of the last line of the diagnostic block that starts at idx."""
    n = len(lines)
    j = idx + 1
    while j < n and j - idx <= limit * 4 and _CONT_RE.match(lines[j]):
        j += 1
    # A Python traceback ends with the unindented exception line.
    if is_tb and j < n and lines[j].strip():
        j += 1
    return j - 1


def _repeat_runs(body: str, lines: list[str], min_repeat: int) -> list[tuple[int, int, bool]]:
    """(start, end, identical) for runs of lines equal once digits are ignored."""
    n = len(lines)
    # Deleting digits makes lines that differ only in numbers (counters, timings, percentages) equal.
    # On bytes: str.translate is a slow per-character loop as soon as the text is not ASCII.
    norm = body.encode("utf-8", "surrogatepass").translate(None, _DIGITS)
    nlines = norm.split(b"\n")
    if len(nlines) != n:
        return []
    breaks = [i for i, same in enumerate(map(bytes.__eq__, nlines, islice(nlines, 1, None))) if not same]
    runs = []
    prev = -1
    breaks.append(n - 1)
    for b in breaks:
        s, e = prev + 1, b + 1
        prev = b
        if e - s >= min_repeat and nlines[s].strip():
            runs.append((s, e, _all_equal(lines, s, e)))
    return runs


def _mark(keep: bytearray, lo: int, hi: int) -> None:
    """Keep lines [lo, hi), clamped (a slice assignment of the wrong length would resize)."""
    lo = max(0, lo)
    hi = min(len(keep), hi)
    if hi > lo:
        keep[lo:hi] = b"\x01" * (hi - lo)


def _all_equal(lines: list[str], s: int, e: int) -> bool:
    first = lines[s]
    return all(x == first for x in islice(lines, s + 1, e))


def _mark_block(keep: bytearray, lines: list[str], i: int, is_tb: bool, ctx: int, cap: int) -> None:
    """Keep a diagnostic block with its context; a block longer than `cap` keeps its two ends."""
    end = _block_end(lines, i, is_tb, cap)
    if end - i + 1 > cap:
        half = cap // 2  # the innermost frames matter most: keep the start and the end
        _mark(keep, i - ctx, i + half)
        _mark(keep, end - half + 1, end + ctx + 1)
    else:
        _mark(keep, i - ctx, end + ctx + 1)


def select(lines: list[str], flags: dict[int, int], policy: CompressPolicy) -> tuple[bytearray, list[int]]:
    """Lines to keep (1) and the warnings dropped by the cap. Every error and summary line is kept."""
    n = len(lines)
    keep = bytearray(n)
    _mark(keep, 0, policy.log_head_lines)
    _mark(keep, n - max(0, policy.log_tail_lines), n)
    ctx = max(0, policy.log_context_lines)
    cap = max(2, policy.log_max_block_lines)
    errs = [i for i, f in flags.items() if f & ERR]
    warns = [i for i, f in flags.items() if f & WARN and not f & ERR]
    # Errors are facts and never capped; warnings share what is left of the flagged-line budget.
    chosen_warns = warns[: max(0, policy.log_max_flagged_lines - len(errs))]
    for i in sorted(errs + chosen_warns):
        _mark_block(keep, lines, i, bool(flags[i] & TB), ctx, cap)
    for i, f in flags.items():
        if f & (ERR | SUM | LINT):
            keep[i] = 1  # whatever a block cut, the flagged line itself stays
    return keep, warns[len(chosen_warns):]


def collapse_runs(body: str, lines: list[str], keep: bytearray, flags: dict[int, int],
                  policy: CompressPolicy) -> dict[int, tuple[int, bool]]:
    """Mark runs of repeated lines (2 in `keep`); start -> (end, identical)."""
    runs_at: dict[int, tuple[int, bool]] = {}
    for s, e, identical in _repeat_runs(body, lines, max(2, policy.log_min_repeat)):
        if not identical:
            if e - s < max(4, policy.log_min_repeat):
                continue
            if any(i in flags for i in range(s, e)):
                continue  # near-duplicate diagnostics differ in what matters: keep each one
        if _NOT_0.search(keep, s, e) is None and e - s < policy.log_show_repeat_min:
            continue
        keep[s:e] = b"\x02" * (e - s)
        runs_at[s] = (e, identical)
    return runs_at


def render(lines: list[str], keep: bytearray, runs_at: dict[int, tuple[int, bool]],
           dropped_warns: list[int]) -> tuple[list[str], int, int, int]:
    """(output lines, shown, collapsed, elided)."""
    out: list[str] = []
    shown = collapsed = elided = 0
    n = len(lines)
    i = 0
    while i < n:
        v = keep[i]
        if v == 1:
            m = _NOT_1.search(keep, i)
            j = m.start() if m else n
            out.extend(lines[i:j])
            shown += j - i
        elif v == 0:
            m = _NOT_0.search(keep, i)
            j = m.start() if m else n
            if j - i == 1:  # a one-line note would cost as much as the line itself
                out.append(lines[i])
                shown += 1
            else:
                out.append(_elision(j - i, dropped_warns, i, j))
                elided += j - i
        else:
            j, identical = runs_at[i]
            count = j - i
            if identical:
                out.append(f"[×{count}] {lines[i]}")
                shown += 1
                collapsed += count - 1
            else:
                out.extend((lines[i], f"… {count - 2} similar lines …", lines[j - 1]))
                shown += 2
                collapsed += count - 2
        i = j
    return out, shown, collapsed, elided


def _reasons(flags: dict[int, int], keep: bytearray, policy: CompressPolicy) -> str:
    kept_flags = 0
    for idx, f in flags.items():
        if keep[idx]:
            kept_flags |= f
    reasons = [word for bit, word in ((ERR, "errors"), (LINT, "diagnostics"), (WARN, "warnings"), (SUM, "summary"))
               if kept_flags & bit]
    reasons += [word for size, word in ((policy.log_head_lines, "head"), (policy.log_tail_lines, "tail"))
                if size > 0]
    return ", ".join(reasons) or "repeats collapsed"


def compress_log(text: str, policy: CompressPolicy, ref: str) -> Compressed | None:
    """The rewritten log, or None when nothing would be omitted."""
    body = text[:-1] if text.endswith("\n") else text
    lines = body.split("\n")
    n = len(lines)
    if n < 3:
        return None
    flags = classify(body, lines)
    keep, dropped_warns = select(lines, flags, policy)
    runs_at = collapse_runs(body, lines, keep, flags, policy)
    out, shown, collapsed, _ = render(lines, keep, runs_at, dropped_warns)
    if shown >= n:
        return None
    omitted = n - shown
    detail = f" ({collapsed} collapsed as repeats)" if collapsed else ""  # the rest was elided
    mark = marker.make(
        f"kept {shown} of {marker.plural(n, 'line')} ({_reasons(flags, keep, policy)})",
        f"{omitted} omitted{detail}",
        ref,
    )
    facts = tuple(lines[i] for i, f in flags.items() if f & (ERR | SUM | LINT))
    return Compressed(marker.append("\n".join(out), mark), f"{omitted} of {marker.plural(n, 'line')}{detail}",
                      facts=facts)


def _elision(count: int, warns: list[int], i: int, j: int) -> str:
    nw = bisect_left(warns, j) - bisect_left(warns, i) if warns else 0
    incl = f" (incl. {marker.plural(nw, 'warning')})" if nw else ""
    return f"… {marker.plural(count, 'line')} omitted{incl} …"
