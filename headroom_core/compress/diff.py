"""Unified diffs: every file header, every hunk and every added/removed line, less context.

Context is trimmed to k lines around each change. A hunk whose middle context is dropped splits in
two, and every rewritten `@@` header is recomputed so the result is still a valid, appliable diff.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import marker
from .detect import HUNK_RE
from .marker import Rewrite

if TYPE_CHECKING:
    from . import CompressPolicy


def _range(start: int, count: int) -> str:
    return str(start) if count == 1 else f"{start},{count}"


def trim_hunk(
    a: int, b: int, c: int, d: int, section: str, body: list[str], k: int
) -> tuple[list[str], int, int]:
    """(lines, context dropped, hunks emitted) for one hunk `@@ -a,b +c,d @@section` + body."""
    n = len(body)
    tags = [(t[:1] or " ") for t in body]  # an empty line is context whose space was stripped
    far = n + k + 1
    # Distance, in context lines, to the nearest change before and after each line.
    before = [far] * n
    dist = far
    for i, t in enumerate(tags):
        if t in "+-":
            dist = 0
        elif t == " ":
            dist += 1
        before[i] = dist
    after = [far] * n
    dist = far
    for i in range(n - 1, -1, -1):
        t = tags[i]
        if t in "+-":
            dist = 0
        elif t == " ":
            dist += 1
        after[i] = dist
    keep = [False] * n
    for i, t in enumerate(tags):
        if t in "+-":
            keep[i] = True
        elif t == " ":
            keep[i] = min(before[i], after[i]) <= k
        else:  # "\ No newline at end of file" belongs to the line above it
            keep[i] = i > 0 and keep[i - 1]
    dropped = sum(1 for i, t in enumerate(tags) if t == " " and not keep[i])
    if not dropped:
        return [f"@@ -{_range(a, b)} +{_range(c, d)} @@{section}", *body], 0, 1

    base_old = a if b > 0 else a + 1
    base_new = c if d > 0 else c + 1
    out: list[str] = []
    old_seen = new_seen = 0
    hunks = 0
    i = 0
    while i < n:
        if not keep[i]:
            if tags[i] in " -":
                old_seen += 1
            if tags[i] in " +":
                new_seen += 1
            i += 1
            continue
        j = i
        old_cnt = new_cnt = 0
        while j < n and keep[j]:
            if tags[j] in " -":
                old_cnt += 1
            if tags[j] in " +":
                new_cnt += 1
            j += 1
        old_first = base_old + old_seen
        new_first = base_new + new_seen
        # An empty side is numbered by the line before it (unified diff convention).
        old_start = old_first if old_cnt else old_first - 1
        new_start = new_first if new_cnt else new_first - 1
        out.append(
            f"@@ -{_range(old_start, old_cnt)} +{_range(new_start, new_cnt)} @@"
            + (section if hunks == 0 else "")
        )
        out.extend(body[i:j])
        hunks += 1
        old_seen += old_cnt
        new_seen += new_cnt
        i = j
    return out, dropped, hunks


def compress_diff(text: str, policy: CompressPolicy, ref: str) -> Rewrite | None:
    trailing = text.endswith("\n")
    lines = (text[:-1] if trailing else text).split("\n")
    n = len(lines)
    k = max(0, policy.diff_context_lines)
    out: list[str] = []
    files = hunks_in = hunks_out = changes = ctx_total = ctx_dropped = 0
    plus_headers = 0
    i = 0
    while i < n:
        ln = lines[i]
        m = HUNK_RE.match(ln) if ln.startswith("@@ -") else None
        if m is None:
            if ln.startswith("diff "):
                files += 1
            elif ln.startswith("+++ "):
                plus_headers += 1
            out.append(ln)
            i += 1
            continue
        a = int(m.group(1))
        b = 1 if m.group(2) is None else int(m.group(2))
        c = int(m.group(3))
        d = 1 if m.group(4) is None else int(m.group(4))
        old_left, new_left = b, d
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
        body = lines[i + 1:j]
        hunks_in += 1
        if old_left != 0 or new_left != 0:
            # Counts disagree with the body: keep the hunk exactly as it came.
            out.append(ln)
            out.extend(body)
            hunks_out += 1
        else:
            trimmed, dropped, emitted = trim_hunk(a, b, c, d, m.group(5), body, k)
            if dropped:
                out.extend(trimmed)
            else:
                out.append(ln)
                out.extend(body)
            hunks_out += emitted
            ctx_dropped += dropped
        for t in body:
            if t[:1] in ("+", "-"):
                changes += 1
            elif t[:1] in (" ", ""):
                ctx_total += 1
        i = j
    if ctx_dropped == 0:
        return None
    files = files or plus_headers
    lines_word = "line" if k == 1 else "lines"
    mark = marker.make(
        f"kept the headers of all {marker.plural(files, 'file')}, every hunk "
        f"({marker.n(hunks_in)} as {marker.n(hunks_out)}, @@ headers recomputed) and all "
        f"{marker.n(changes)} +/- lines; context trimmed to {k} {lines_word}",
        f"{marker.n(ctx_dropped)} of {marker.plural(ctx_total, 'context line')} omitted",
        ref,
    )
    return Rewrite(
        marker.append("\n".join(out), mark),
        f"{marker.n(ctx_dropped)} of {marker.plural(ctx_total, 'context line')}",
    )
