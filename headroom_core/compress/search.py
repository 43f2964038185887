"""Search results (grep -n / ripgrep, flat `path:line:text` or `--heading` groups).

Every file that matched stays named; kept lines stay verbatim (never fused or paraphrased); each
file keeps its first few matches (a fair share of a total budget) and says how many it lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import marker
from .detect import SEARCH_FLAT_RE, SEARCH_NUM_RE, looks_like_path
from .marker import Rewrite

if TYPE_CHECKING:
    from . import CompressPolicy

MATCH, CTX, SEP, HEADING, BLANK, OTHER = range(6)


@dataclass(slots=True)
class _Entry:
    kind: int
    path: str
    line: str
    block: int  # entries of one file between separators share a block number


def parse(text: str) -> list[_Entry]:
    """One entry per line: a match, a context line, a `--` separator, a heading, blank or other."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    entries: list[_Entry] = []
    flat_path = ""
    heading = ""
    block = 0
    prev_key: tuple[int, str] | None = None
    for i, ln in enumerate(lines):
        kind, path = OTHER, ""
        if not ln.strip():
            kind, heading = BLANK, ""
        elif ln == "--":
            kind = SEP
        else:
            m = SEARCH_FLAT_RE.match(ln)
            if m and looks_like_path(m.group(1)) and not heading:
                kind, path = MATCH, m.group(1)
                flat_path = path
            elif flat_path and not heading and _is_flat_context(ln, flat_path):
                kind, path = CTX, flat_path
            else:
                num = SEARCH_NUM_RE.match(ln)
                if num and heading:
                    kind, path = (MATCH if num.group(2) == ":" else CTX), heading
                elif (
                    looks_like_path(ln) and " " not in ln
                    and i + 1 < len(lines) and SEARCH_NUM_RE.match(lines[i + 1])
                ):
                    kind, path, heading = HEADING, ln, ln
        if kind in (MATCH, CTX):
            if prev_key is not None and prev_key[1] != path:
                block += 1
            prev_key = (block, path)
        elif kind in (SEP, BLANK, HEADING):
            block += 1
            prev_key = None
        entries.append(_Entry(kind, path, ln, block))
    return entries


def _is_flat_context(line: str, path: str) -> bool:
    # `path-12-text`: rg/grep -C context lines, recognised only for the file just seen.
    if not line.startswith(path + "-"):
        return False
    rest = line[len(path) + 1:]
    digits = len(rest) - len(rest.lstrip("0123456789"))
    return digits > 0 and rest[digits:digits + 1] == "-"


def _budgets(order: list[str], counts: dict[str, int], total: int, per_file: int) -> dict[str, int]:
    """Fair share: every file gets one match before any gets two, up to per_file each."""
    budget = dict.fromkeys(order, 0)
    remaining = max(0, total)
    for level in range(1, max(1, per_file) + 1):
        progressed = False
        for f in order:
            if remaining <= 0:
                break
            if counts[f] >= level:
                budget[f] = level
                remaining -= 1
                progressed = True
        if not progressed or remaining <= 0:
            break
    return budget


def compress_search(text: str, policy: CompressPolicy, ref: str) -> Rewrite | None:
    entries = parse(text)
    counts: dict[str, int] = {}
    for e in entries:
        if e.kind == MATCH:
            counts[e.path] = counts.get(e.path, 0) + 1
    if not counts:
        return None
    order = list(counts)
    budget = _budgets(order, counts, policy.search_max_total, policy.search_max_per_file)

    # Decide: a file's first `budget` matches stay; a context line stays with a kept match of
    # its block, up to the block's first dropped match.
    keep = [False] * len(entries)
    used = dict.fromkeys(order, 0)
    has_kept: dict[int, bool] = {}
    first_drop: dict[int, int] = {}
    for idx, e in enumerate(entries):
        if e.kind == MATCH:
            if used[e.path] < budget[e.path]:
                used[e.path] += 1
                keep[idx] = True
                has_kept[e.block] = True
            else:
                first_drop.setdefault(e.block, idx)
    for idx, e in enumerate(entries):
        if e.kind == CTX:
            keep[idx] = has_kept.get(e.block, False) and idx < first_drop.get(e.block, len(entries))

    out: list[str] = []
    shown = ctx_dropped = 0
    seg_path = ""
    seg_dropped = 0
    pending_sep = False
    shown_in: dict[str, int] = {}

    def close_segment() -> None:
        nonlocal seg_dropped
        if seg_path and seg_dropped:
            if shown_in.get(seg_path):
                what = marker.plural(seg_dropped, "more match", "more matches")
            else:
                what = marker.plural(seg_dropped, "match", "matches")
            out.append(f"… {what} in {seg_path} omitted")
        seg_dropped = 0

    for idx, e in enumerate(entries):
        if e.kind in (MATCH, CTX):
            if e.path != seg_path:
                close_segment()
                seg_path = e.path
            if not keep[idx]:
                if e.kind == MATCH:
                    seg_dropped += 1
                else:
                    ctx_dropped += 1
                continue
            if e.kind == MATCH:
                shown += 1
                shown_in[e.path] = shown_in.get(e.path, 0) + 1
            if pending_sep and out and out[-1] != "":
                out.append("--")
            pending_sep = False
            out.append(e.line)
        elif e.kind == SEP:
            pending_sep = True
        else:
            close_segment()
            pending_sep = False
            if e.kind == HEADING:
                seg_path = e.path
                out.append(e.line)
            elif e.kind == BLANK:
                seg_path = ""
                if out and out[-1] != "":
                    out.append("")
            else:
                seg_path = ""
                out.append(e.line)
    close_segment()

    total = sum(counts.values())
    dropped = total - shown
    if dropped == 0 and ctx_dropped == 0:
        return None
    omitted = marker.plural(dropped, "match", "matches")
    if ctx_dropped:
        omitted += f" and {marker.plural(ctx_dropped, 'context line')}"
    mark = marker.make(
        f"kept {marker.n(shown)} of {marker.plural(total, 'match', 'matches')} "
        f"(up to {max(budget.values())} per file), all {marker.plural(len(order), 'file')} named",
        f"{omitted} omitted",
        ref,
    )
    while out and out[-1] == "":
        out.pop()
    return Rewrite(marker.append("\n".join(out), mark), f"{omitted} of {marker.n(total)} matches")
