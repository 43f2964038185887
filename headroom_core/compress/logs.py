"""Build and test logs: keep what an agent acts on, collapse the noise, mark every elision.

Kept verbatim and in order: errors, failures, warnings and tracebacks with their context, summary
lines, head and tail. Runs of repeated lines (also ones differing only in numbers) collapse to one
line with a count; everything else becomes `… N lines omitted …`.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from itertools import accumulate, islice
from typing import TYPE_CHECKING

from . import marker
from .marker import Rewrite

if TYPE_CHECKING:
    from . import CompressPolicy

ERR, WARN, SUM, TB = 1, 2, 4, 8

# Needles located with str.find (C speed) before any regex runs: a 1 MB log must cost
# milliseconds. Lower-case needles are searched in the lower-cased text, the others as written
# (so pytest's thousands of "PASSED" lines are not candidates for the "N passed" summary).
# A needle starting with "\n" matches at a line start.
_LOW_NEEDLES = (
    "error", "fail", "warn", "panic", "fatal", "exception", "critical", "segmentation fault",
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
    r"(?:error|ERROR|Error|ERR!|FAIL|FAILED|FAILURE|Fail|Failed|failed|failure|Failure|fail"
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

_NO_DIGITS = str.maketrans("", "", "0123456789")
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
    return flags


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
    norm = body.translate(_NO_DIGITS)
    nlines = norm.split("\n")
    if len(nlines) != n:
        return []
    breaks = [i for i, same in enumerate(map(str.__eq__, nlines, islice(nlines, 1, None))) if not same]
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


def compress_log(text: str, policy: CompressPolicy, ref: str) -> Rewrite | None:
    """The rewritten log, or None when nothing would be omitted."""
    body = text[:-1] if text.endswith("\n") else text
    lines = body.split("\n")
    n = len(lines)
    if n < 3:
        return None
    flags = classify(body, lines)
    ctx = max(0, policy.log_context_lines)
    block_cap = max(2, policy.log_max_block_lines)

    keep = bytearray(n)
    _mark(keep, 0, policy.log_head_lines)
    _mark(keep, n - max(0, policy.log_tail_lines), n)
    head = min(n, max(0, policy.log_head_lines))
    tail = min(n, max(0, policy.log_tail_lines))

    errs = [i for i, f in flags.items() if f & ERR]
    warns = [i for i, f in flags.items() if f & WARN and not f & ERR]
    sums = [i for i, f in flags.items() if f & SUM and not f & (ERR | WARN)]
    # Cap diagnostics: errors before warnings; of too many errors keep the first and last ones.
    cap = max(1, policy.log_max_flagged_lines)
    if len(errs) > cap:
        chosen_errs = errs[: cap - cap // 2] + errs[len(errs) - cap // 2:]
        chosen_warns: list[int] = []
    else:
        chosen_errs = errs
        chosen_warns = warns[: cap - len(errs)]
    for i in sums:
        keep[i] = 1
    for i in sorted(chosen_errs + chosen_warns):
        end = _block_end(lines, i, bool(flags[i] & TB), block_cap)
        if end - i + 1 > block_cap:
            # Keep the start and the end of a long block (the innermost frames matter most).
            half = block_cap // 2
            _mark(keep, i - ctx, i + half)
            _mark(keep, end - half + 1, end + ctx + 1)
        else:
            _mark(keep, i - ctx, end + ctx + 1)

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

    dropped_errs = sorted(set(errs) - set(chosen_errs))
    dropped_warns = sorted(set(warns) - set(chosen_warns))

    out: list[str] = []
    shown = collapsed = elided = 0
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
                out.append(_elision(j - i, dropped_errs, dropped_warns, i, j))
                elided += j - i
        else:
            j, identical = runs_at[i]
            count = j - i
            if identical:
                out.append(f"[×{count}] {lines[i]}")
                shown += 1
                collapsed += count - 1
            else:
                out.append(lines[i])
                out.append(f"… {count - 2} similar lines …")
                out.append(lines[j - 1])
                shown += 2
                collapsed += count - 2
        i = j
    if shown >= n:
        return None

    reasons = []
    kept_flags = 0
    for idx, f in flags.items():
        if keep[idx]:
            kept_flags |= f
    if kept_flags & ERR:
        reasons.append("errors")
    if kept_flags & WARN:
        reasons.append("warnings")
    if kept_flags & SUM:
        reasons.append("summary")
    if head:
        reasons.append("head")
    if tail:
        reasons.append("tail")
    omitted = n - shown
    parts = []
    if collapsed:
        parts.append(f"{marker.n(collapsed)} collapsed as repeats")
    if elided:
        parts.append(f"{marker.n(elided)} elided")
    detail = f" ({', '.join(parts)})" if parts else ""
    mark = marker.make(
        f"kept {marker.n(shown)} of {marker.plural(n, 'line')} ({', '.join(reasons) or 'repeats collapsed'})",
        f"{marker.n(omitted)} omitted{detail}",
        ref,
    )
    return Rewrite(
        marker.append("\n".join(out), mark),
        f"{marker.n(omitted)} of {marker.plural(n, 'line')}{detail}",
    )


def _elision(count: int, errs: list[int], warns: list[int], i: int, j: int) -> str:
    extra = []
    ne = bisect_left(errs, j) - bisect_left(errs, i) if errs else 0
    nw = bisect_left(warns, j) - bisect_left(warns, i) if warns else 0
    if ne:
        extra.append(marker.plural(ne, "error"))
    if nw:
        extra.append(marker.plural(nw, "warning"))
    incl = f" (incl. {', '.join(extra)})" if extra else ""
    return f"… {marker.plural(count, 'line')} omitted{incl} …"
