"""Unified diffs: every file header, every hunk and every added/removed line, less context.

Context is trimmed to k lines around each change. A hunk whose middle context is dropped splits in
two, and every rewritten `@@` header is recomputed so the result is still a valid, appliable diff.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from . import marker
from .detect import HUNK_RE
from .marker import Compressed

if TYPE_CHECKING:
    from . import CompressPolicy


def _range(start: int, count: int) -> str:
    return str(start) if count == 1 else f"{start},{count}"


def _distances(tags: list[str], far: int, order: range) -> list[int]:
    """Distance, in context lines, from each line to the nearest change in the given direction."""
    out = [far] * len(tags)
    dist = far
    for i in order:
        t = tags[i]
        if t in "+-":
            dist = 0
        elif t == " ":
            dist += 1
        out[i] = dist
    return out


def keep_mask(tags: list[str], k: int) -> list[bool]:
    """Changes, and context within k lines of one; a "\\ No newline" note goes with its line."""
    n = len(tags)
    before = _distances(tags, n + k + 1, range(n))
    after = _distances(tags, n + k + 1, range(n - 1, -1, -1))
    keep = [False] * n
    for i, t in enumerate(tags):
        if t in "+-":
            keep[i] = True
        elif t == " ":
            keep[i] = min(before[i], after[i]) <= k
        else:
            keep[i] = i > 0 and keep[i - 1]
    return keep


def _sides(tags: list[str], i: int, j: int) -> tuple[int, int]:
    """How many old-side and new-side lines tags[i:j] cover."""
    part = tags[i:j]
    return sum(1 for t in part if t in " -"), sum(1 for t in part if t in " +")


def trim_hunk(
    a: int, b: int, c: int, d: int, section: str, body: list[str], k: int
) -> tuple[list[str], int, int]:
    """(lines, context dropped, hunks emitted) for one hunk `@@ -a,b +c,d @@section` + body."""
    n = len(body)
    tags = [(t[:1] or " ") for t in body]  # an empty line is context whose space was stripped
    keep = keep_mask(tags, k)
    dropped = sum(1 for i, t in enumerate(tags) if t == " " and not keep[i])
    if not dropped:
        return [f"@@ -{_range(a, b)} +{_range(c, d)} @@{section}", *body], 0, 1
    old_seen = a if b > 0 else a + 1  # the number of the next old-side line
    new_seen = c if d > 0 else c + 1
    out: list[str] = []
    hunks = i = 0
    while i < n:
        j = i
        while j < n and keep[j] == keep[i]:
            j += 1
        old_cnt, new_cnt = _sides(tags, i, j)
        if keep[i]:
            # An empty side is numbered by the line before it (unified diff convention).
            old_start = old_seen if old_cnt else old_seen - 1
            new_start = new_seen if new_cnt else new_seen - 1
            out.append(f"@@ -{_range(old_start, old_cnt)} +{_range(new_start, new_cnt)} @@"
                       + (section if hunks == 0 else ""))
            out.extend(body[i:j])
            hunks += 1
        old_seen += old_cnt
        new_seen += new_cnt
        i = j
    return out, dropped, hunks


def _hunk_body_end(lines: list[str], i: int, old_left: int, new_left: int) -> tuple[int, bool]:
    """(index after the body of the hunk whose header is lines[i], whether its counts add up)."""
    n = len(lines)
    j = i + 1
    while j < n and (old_left > 0 or new_left > 0):
        t = lines[j][:1]
        if t == " " or t == "":
            old_left -= 1
            new_left -= 1
        elif t == "-":
            old_left -= 1
        elif t == "+":
            new_left -= 1
        elif t != "\\":
            break
        j += 1
    while j < n and lines[j].startswith("\\"):
        j += 1
    return j, old_left == 0 and new_left == 0


class _Tally:
    __slots__ = ("files", "plus_headers", "hunks_in", "hunks_out", "changes", "ctx_total", "ctx_dropped")

    def __init__(self) -> None:
        self.files = self.plus_headers = self.hunks_in = self.hunks_out = 0
        self.changes = self.ctx_total = self.ctx_dropped = 0


def _hunk(lines: list[str], i: int, m: re.Match[str], k: int, out: list[str], tally: _Tally) -> int:
    """Append the (trimmed) hunk whose header is lines[i] to `out`; return the index after it."""
    a, c = int(m.group(1)), int(m.group(3))
    b = 1 if m.group(2) is None else int(m.group(2))
    d = 1 if m.group(4) is None else int(m.group(4))
    j, counts_ok = _hunk_body_end(lines, i, b, d)
    body = lines[i + 1:j]
    tally.hunks_in += 1
    trimmed, dropped, emitted = trim_hunk(a, b, c, d, m.group(5), body, k) if counts_ok else ([], 0, 1)
    if dropped:
        out.extend(trimmed)
    else:  # nothing to trim, or counts that disagree with the body: the hunk exactly as it came
        out.append(lines[i])
        out.extend(body)
    tally.hunks_out += emitted
    tally.ctx_dropped += dropped
    for t in body:
        if t[:1] in ("+", "-"):
            tally.changes += 1
        elif t[:1] in (" ", ""):
            tally.ctx_total += 1
    return j


def compress_diff(text: str, policy: CompressPolicy, ref: str) -> Compressed | None:
    lines = (text[:-1] if text.endswith("\n") else text).split("\n")
    k = max(0, policy.diff_context_lines)
    out: list[str] = []
    tally = _Tally()
    facts: list[str] = []
    i, n = 0, len(lines)
    while i < n:
        ln = lines[i]
        m = HUNK_RE.match(ln) if ln.startswith("@@ -") else None
        if m is not None:
            start = i
            i = _hunk(lines, i, m, k, out, tally)
            facts.extend(t for t in lines[start + 1:i] if t[:1] in ("+", "-"))
            continue
        if ln.startswith("diff "):
            tally.files += 1
        elif ln.startswith("+++ "):
            tally.plus_headers += 1
        facts.append(ln)  # headers, commit lines and messages are kept as they are
        out.append(ln)
        i += 1
    if tally.ctx_dropped == 0:
        return None
    return Compressed(marker.append("\n".join(out), _marker(tally, k, ref)),
                      f"{tally.ctx_dropped} of {marker.plural(tally.ctx_total, 'context line')}",
                      facts=tuple(facts))


def _marker(t: _Tally, k: int, ref: str) -> str:
    files = t.files or t.plus_headers
    return marker.make(
        f"kept every header and all {t.changes} +/- lines of {marker.plural(files, 'file')} (@@ recomputed)",
        f"{t.ctx_dropped} of {marker.plural(t.ctx_total, 'context line')} omitted ({k} kept per side)",
        ref,
    )
